"""Frames from many cameras into one detector: a bounded queue per camera and a fair round-robin batcher.

Each camera's reader thread puts its sampled frames into a :class:`FrameQueue`. A file camera waits
when its queue is full (back-pressure: a file can wait, and every frame of it gets processed). A live
camera cannot wait, the picture moves on: when its queue is full the *oldest* frame is dropped and
counted, so the detector always sees the newest picture (latest-frame semantics) and a slow box
degrades to a lower detection rate per camera instead of a growing delay.

:class:`RoundRobin` builds each detector batch by taking one frame per camera per round, starting
with the camera after the one served last, until the batch is full or every queue is empty. Every
camera with a frame waiting is served before any camera gets a second slot, so a camera producing ten
times the frames of another cannot starve it: under overload each camera gets an equal share of the
detector (or all it asks for, if that is less), and no camera is ever detected faster than the fps
its source samples at.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class FrameQueue(Generic[T]):
    """A bounded FIFO between one camera's reader and the detector loop; thread-safe.

    ``drop_oldest``: when full, :meth:`put` removes the oldest item (counted in :attr:`dropped`, and
    passed to ``on_drop``) instead of waiting."""

    def __init__(self, maxsize: int, *, drop_oldest: bool, on_drop: Callable[[T], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self._on_drop = on_drop
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T, stop: threading.Event | None = None) -> bool:
        """Add ``item``. Waiting queues block while full until there is room or ``stop`` is set (then the
        item is not added and False is returned); a closed queue adds nothing and returns False."""
        dropped: list[T] = []
        with self._cond:
            if self._closed:
                return False
            if self.drop_oldest:
                while len(self._items) >= self.maxsize:
                    dropped.append(self._items.popleft())
                    self.dropped += 1
            else:
                while len(self._items) >= self.maxsize:
                    if (stop is not None and stop.is_set()) or self._closed:
                        return False
                    self._cond.wait(0.1)
                if self._closed:  # closed while waiting: the close emptied the queue
                    return False
            self._items.append(item)
            self._cond.notify_all()
        if self._on_drop is not None:
            for d in dropped:
                self._on_drop(d)
        return True

    def put_final(self, item: T) -> None:
        """Append without waiting or dropping, even past ``maxsize`` (the end-of-stream marker); not once closed."""
        with self._cond:
            if self._closed:
                return
            self._items.append(item)
            self._cond.notify_all()

    def peek(self) -> T | None:
        """The oldest item without removing it, or None when empty."""
        with self._cond:
            return self._items[0] if self._items else None

    def get_nowait(self) -> T | None:
        """The oldest item, or None when empty."""
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def resize(self, maxsize: int) -> None:
        """A new bound: items already past it stay (a waiting :meth:`put` waits until there is room); a
        dropping queue drops down to it at its next put."""
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        with self._cond:
            self.maxsize = maxsize
            self._cond.notify_all()

    def clear(self) -> int:
        """Drop everything waiting (not counted as dropped); returns how many items there were."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return n

    def close(self) -> int:
        """Drop everything waiting and refuse what a reader still puts afterwards (its camera was retired: a frame
        read after that would stay in memory for nothing); returns how many items there were."""
        with self._cond:
            self._closed = True
            n = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class RoundRobin(Generic[K, T]):
    """Fair batches across cameras: one item per camera per round, rounds rotate their first camera.

    ``group``: items only share a batch when this function gives them the same value (the runner groups
    frames by size, so a batch needs no padding to a common size). The first camera in turn sets the
    batch's group; a camera skipped because its frame is of another group starts the next batch, so
    it sets that batch's group and is served: no camera waits more than ``number of cameras`` batches.
    Without skips the next batch starts after the last camera served. Items whose group is None
    (end-of-stream markers) join any batch without taking a place in it.
    """

    def __init__(self, max_batch: int, group: Callable[[T], Hashable | None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.group = group
        self._start: K | None = None
        """Camera the next batch starts with (if it still exists)."""
        self._after: K | None = None
        """Else: the next batch starts after this camera."""

    def next_batch(self, lanes: Sequence[tuple[K, FrameQueue[T]]]) -> list[tuple[K, T]]:
        """Take up to ``max_batch`` items from ``lanes`` (camera key, queue), in the order they are
        served: round one is one item from each non-empty queue starting after the last camera served
        by the previous batch, round two a second item from each, and so on."""
        if not lanes:
            return []
        keys = [k for k, _ in lanes]
        if self._start in keys:
            start = keys.index(self._start)
        else:
            start = keys.index(self._after) + 1 if self._after in keys else 0
        order = [*lanes[start:], *lanes[:start]]
        batch: list[tuple[K, T]] = []
        size = 0
        want: Hashable | None = None
        skipped: K | None = None
        last: K | None = None
        while size < self.max_batch:
            served = False
            for key, q in order:
                if size >= self.max_batch:
                    break
                head = q.peek()
                if head is None:
                    continue
                g = self.group(head) if self.group is not None else 0
                if g is not None and want is not None and g != want:
                    if skipped is None:
                        skipped = key
                    continue
                item = q.get_nowait()
                if item is None:
                    continue
                batch.append((key, item))
                last = key
                served = True
                if g is not None:
                    want = g
                    size += 1
            if not served:
                break
        if batch:
            self._start, self._after = skipped, last
        return batch

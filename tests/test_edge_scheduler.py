"""The per-camera queues and the round-robin batcher on their own: files wait, live cameras drop the oldest
frame (counted), and a camera producing ten times the frames of another cannot starve it."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from nonsite.pipeline.scheduler import FrameQueue, RoundRobin


def test_live_queue_keeps_the_newest_and_counts_what_it_drops() -> None:
    dropped: list[int] = []
    q: FrameQueue[int] = FrameQueue(2, drop_oldest=True, on_drop=dropped.append)
    for i in range(10):
        assert q.put(i)
    assert len(q) == 2 and q.dropped == 8 and dropped == list(range(8))
    assert [q.get_nowait(), q.get_nowait(), q.get_nowait()] == [8, 9, None]


def test_file_queue_waits_for_room_and_gives_up_on_stop() -> None:
    q: FrameQueue[int] = FrameQueue(1, drop_oldest=False)
    assert q.put(0)
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(q.put(1)))
    t.start()
    time.sleep(0.3)
    assert done == [] and len(q) == 1  # still waiting: a file can wait
    assert q.get_nowait() == 0
    t.join(2)
    assert done == [True] and q.get_nowait() == 1 and q.dropped == 0
    stop = threading.Event()
    q.put(2)
    t = threading.Thread(target=lambda: done.append(q.put(3, stop)))
    t.start()
    stop.set()
    t.join(2)
    assert done == [True, False] and len(q) == 1  # stopped while waiting: not added
    q.put_final(99)  # the end marker never waits, even on a full queue
    assert [q.get_nowait(), q.get_nowait()] == [2, 99]
    with pytest.raises(ValueError):
        FrameQueue(0, drop_oldest=True)


def test_a_closed_queue_keeps_nothing_a_late_reader_puts() -> None:
    """A retired camera's queue is closed: its reader, still finishing a decode, cannot leave a frame behind."""
    q: FrameQueue[int] = FrameQueue(2, drop_oldest=False)
    q.put(1)
    q.put(2)
    waiting: list[bool] = []
    t = threading.Thread(target=lambda: waiting.append(q.put(3)))  # a file reader waits for room
    t.start()
    assert q.close() == 2
    t.join(5)
    assert not t.is_alive() and waiting == [False] and len(q) == 0  # the waiting put gave up, added nothing
    live: FrameQueue[int] = FrameQueue(2, drop_oldest=True)
    live.put(1)
    assert live.close() == 1
    for queue in (q, live):
        assert queue.put(4) is False
        queue.put_final(99)
        assert len(queue) == 0 and queue.get_nowait() is None


def test_a_camera_with_ten_times_the_frames_does_not_starve_the_other() -> None:
    busy: FrameQueue[str] = FrameQueue(1000, drop_oldest=False)
    quiet: FrameQueue[str] = FrameQueue(1000, drop_oldest=False)
    for i in range(200):
        busy.put(f"busy-{i}")
    for i in range(20):
        quiet.put(f"quiet-{i}")
    rr: RoundRobin[str, str] = RoundRobin(max_batch=4)
    served: list[str] = []
    while True:
        batch = rr.next_batch([("busy", busy), ("quiet", quiet)])
        if not batch:
            break
        assert len(batch) <= 4
        served += [k for k, _ in batch]
    # Strict alternation while both have frames: the quiet camera's 20 frames are all done within the
    # first 40 served, the busy one's order is kept.
    assert served[:40].count("quiet") == 20 and served[40:] == ["busy"] * 180


def test_more_cameras_than_batch_slots_take_turns() -> None:
    lanes = [(f"cam{i}", FrameQueue[int](1000, drop_oldest=False)) for i in range(16)]
    for _, q in lanes:
        for j in range(50):
            q.put(j)
    rr: RoundRobin[str, int] = RoundRobin(max_batch=3)
    counts: Counter[str] = Counter()
    for _ in range(160):  # 480 frames: 30 per camera if the turns are fair
        for key, _item in rr.next_batch(lanes):
            counts[key] += 1
    assert set(counts.values()) == {30}


def test_batches_fill_from_one_camera_when_it_is_the_only_one_with_frames() -> None:
    a: FrameQueue[int] = FrameQueue(10, drop_oldest=False)
    b: FrameQueue[int] = FrameQueue(10, drop_oldest=False)
    for i in range(6):
        a.put(i)
    rr: RoundRobin[str, int] = RoundRobin(max_batch=4)
    assert rr.next_batch([("a", a), ("b", b)]) == [("a", 0), ("a", 1), ("a", 2), ("a", 3)]  # in order
    b.put(100)
    assert rr.next_batch([("a", a), ("b", b)]) == [("b", 100), ("a", 4), ("a", 5)]
    assert rr.next_batch([]) == []


def test_batches_hold_one_frame_size_and_every_size_gets_its_turn() -> None:
    sizes = {"a": (360, 640), "b": (480, 640), "c": (360, 640), "d": (480, 640), "e": (1080, 1920)}
    lanes = [(k, FrameQueue[tuple[str, object]](1000, drop_oldest=False)) for k in sizes]
    for k, q in lanes:
        for _ in range(40):
            q.put((k, sizes[k]))
    lanes[0][1].put_final(("a", None))  # an end marker behind a's frames
    rr: RoundRobin[str, tuple[str, object]] = RoundRobin(max_batch=4, group=lambda item: item[1])
    counts: Counter[str] = Counter()
    batches = []
    while batch := rr.next_batch(lanes):
        batches.append(batch)
        frames = [item for _, item in batch if item[1] is not None]
        assert len(frames) <= 4 and len({size for _, size in frames}) == 1  # never mixed sizes
        for key, item in batch:
            counts[key] += item[1] is not None
        if len(batches) == 25:  # part way: each camera had its share so far
            assert max(counts.values()) - min(counts.values()) <= 8, counts
    assert all(n == 40 for n in counts.values())
    assert ("a", None) in [item for b in batches for _, item in b]
    # Same-size cameras share batches: far fewer calls than frames.
    assert len(batches) <= 40 + 2 * 40 // 2 + 5


def test_a_camera_of_a_size_nobody_shares_is_not_starved_under_overload() -> None:
    # Two cameras share a frame size, two have sizes of their own; every queue always has frames.
    sizes = {"junction": (360, 640), "carpark": (480, 640), "market": (360, 640), "fence": (360, 360)}
    lanes = [(k, FrameQueue[tuple[str, object]](2, drop_oldest=True)) for k in sizes]
    rr: RoundRobin[str, tuple[str, object]] = RoundRobin(max_batch=4, group=lambda item: item[1])
    counts: Counter[str] = Counter()
    for _ in range(40):
        for k, q in lanes:  # the cameras keep delivering
            q.put((k, sizes[k]))
            q.put((k, sizes[k]))
        batch = rr.next_batch(lanes)
        assert len({item[1] for _, item in batch}) == 1
        counts.update(k for k, _ in batch)
    assert set(counts) == set(sizes), counts
    # Each camera leads a batch in turn; the two that share a size also ride along in each other's.
    assert min(counts.values()) >= 10 * 2 - 2, counts

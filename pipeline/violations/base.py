"""What a violation type module declares (:class:`ViolationType`) and what its detection function gets.

A type's detection function is pure: ``detect(scene, state) -> hits``. :class:`Scene` is one frame of one
camera as the type sees it: the tracked detections, the time, the zones it watches that are active now
(each with its effective thresholds), its camera-level thresholds and its exempt areas. ``state`` is the
type's own memory across frames (created by ``ViolationType.new_state``, one per camera); the episode
machinery (:mod:`nonsite.pipeline.rules`) turns hits into onsets, confirmations and ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import supervision as sv

from nonsite.config.rules import RuleCommon
from nonsite.pipeline.detections import names_of
from nonsite.pipeline.geometry import riders
from nonsite.pipeline.stationarity import Stationarity

if TYPE_CHECKING:
    from nonsite.pipeline.zones import Zone

RIDER_MIN_CONFIDENCE = 0.25  # riders are half hidden by what they ride: take weaker person boxes too
FORGET_S = 600.0  # per-track memories older than this are dropped


@dataclass(frozen=True)
class Hit:
    """The condition of ``rule`` holds this frame for the object at ``index`` in ``zone_id``."""

    rule: str
    zone_id: str
    track_id: int
    index: int
    since: float = float("-inf")
    """Earliest onset the rule's own state allows (e.g. when the vehicle stopped); -inf: no limit."""
    related: tuple[int, ...] = ()
    """Indices of other detections that make the case (stall objects)."""
    xyxy: tuple[float, float, float, float] | None = None
    """The object's box (pixels) when no detection stands for it (``index`` -1): a left object found by
    comparing the frame with the empty scene (:mod:`nonsite.pipeline.leftobject`)."""
    label: str = ""
    """Class name shown on that box."""


C = TypeVar("C", bound=RuleCommon)


@dataclass
class Scene(Generic[C]):
    """One frame of one camera as a violation type sees it."""

    d: sv.Detections
    ts: float
    zones: list[tuple[Zone, C]]
    """The zones this type watches that are enforced now, with their effective thresholds."""
    base: C
    """The camera's thresholds of this type (``rules:`` with the camera's overrides)."""
    exempt_zones: list[Zone] = field(default_factory=list)
    """This type's exempt areas that apply now."""
    image: np.ndarray | None = None
    """The frame itself (BGR), for types that look at pixels rather than detections (left objects)."""

    @property
    def tracked(self) -> np.ndarray:
        """Track id per detection (-1: untracked)."""
        d = self.d
        return d.tracker_id if d.tracker_id is not None else np.full(len(d), -1, dtype=int)

    @property
    def configs(self) -> list[C]:
        """The camera's thresholds and every active zone's (to prepare what any of them needs)."""
        return [self.base, *(c for _, c in self.zones)]

    def select(self, classes: Iterable[str], min_conf: float) -> np.ndarray:
        """Mask of detections of ``classes`` with at least ``min_conf`` confidence."""
        mask = np.isin(names_of(self.d), list(classes))
        if self.d.confidence is not None:
            mask &= self.d.confidence >= min_conf
        return mask

    def exempt(self) -> np.ndarray:
        """Mask of detections inside one of this type's exempt areas."""
        mask = np.zeros(len(self.d), dtype=bool)
        for z in self.exempt_zones:
            mask |= z.contains(self.d)
        return mask


class TypeState:
    """Memory of one violation type on one camera; per-track memories are forgotten after ``FORGET_S``."""

    def forget(self, ts: float) -> None:
        """Drop what is too old to matter at time ``ts``."""


class Standing:
    """When each tracked object stopped, per (max_shift, min_overlap) setting in use."""

    def __init__(self) -> None:
        self._by: dict[tuple[float, float], Stationarity] = {}

    def update(self, scene: Scene[Any], max_shift: float, min_overlap: float, mask: np.ndarray) -> dict[int, float]:
        st = self._by.get((max_shift, min_overlap))
        if st is None:
            st = self._by[(max_shift, min_overlap)] = Stationarity(max_shift, min_overlap)
        return st.update(scene.tracked[mask], scene.d.xyxy[mask], scene.ts)


class Ridden:
    """Which vehicles carry a rider now or did within a memory (per track)."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def update(self, scene: Scene[Any], vehicles: np.ndarray, person_class: str, memory_s: float) -> np.ndarray:
        """Mask of ``vehicles`` ridden now or within ``memory_s``."""
        tid = scene.tracked
        people = scene.d.xyxy[scene.select([person_class], RIDER_MIN_CONFIDENCE)]
        idx = np.flatnonzero(vehicles)
        now = riders(scene.d.xyxy[idx], people)
        out = np.zeros(len(scene.d), dtype=bool)
        for i, r in zip(idx, now, strict=True):
            t = int(tid[i])
            if r:
                if t >= 0:
                    self.at[t] = scene.ts
                out[i] = True
            elif t >= 0 and scene.ts - self.at.get(t, float("-inf")) <= memory_s:
                out[i] = True
        return out

    def forget(self, ts: float) -> None:
        for t in [t for t, at in self.at.items() if ts - at > FORGET_S]:
            del self.at[t]


@dataclass
class StandingState(TypeState):
    """Memory of a type about objects that stand still: when each stopped, which vehicles carry a rider."""

    standing: Standing = field(default_factory=Standing)
    ridden: Ridden = field(default_factory=Ridden)

    def forget(self, ts: float) -> None:
        self.ridden.forget(ts)


Detect = Callable[[Scene[Any], Any], list[Hit]]


@dataclass(frozen=True)
class ViolationType:
    """Everything about one violation type, declared in its module as ``TYPE = ViolationType(...)``.

    Labels (zh/en) are not here: the central roles show them and never import a type module, so they live
    in the locale strings (``type.<name>``, ``zone_kind.<kind>``), and the legal name and basis in the
    legal-basis catalogue (see docs/architecture.md, "Violation types").
    """

    name: str
    """The type's id: the event's ``type``, the key under ``rules:`` and in the legal-basis catalogue."""
    config: type[RuleCommon]
    """Its thresholds (pydantic, ``extra="forbid"``, every field described): ``rules.<name>`` and overrides."""
    description: str
    """One line for the config schema: what the rule looks for."""
    watches: tuple[str, ...]
    """Zone kinds this type watches (it raises violations inside them)."""
    detect: Detect
    """``detect(scene, state) -> hits``: the pure detection function."""
    new_state: Callable[[], TypeState] = TypeState
    """A fresh state for one camera."""
    exempts: tuple[str, ...] = ()
    """Zone kinds that exempt an area from this type (allow zones)."""
    merge_classes: Callable[[Any], Sequence[str]] | None = None
    """Detector classes to merge into one box per object before tracking (look-alike classes, e.g. car/truck),
    from the type's camera-level thresholds."""
    reads_plate: Callable[[Any], bool] | None = None
    """Evidence hook: whether a confirmed episode's main object gets its licence plate read (crop in the
    evidence, reading in the offender hint), from the zone's thresholds; None: never."""
    reference: Callable[[Any, str], tuple[float, bytes] | None] | None = None
    """Evidence hook: ``reference(state, zone_id)`` -> (time, JPEG) of the zone's clean reference still (the zone
    as it looked before the object came), added to the evidence as role ``reference`` beside the onset and
    confirmation stills; None: the type has none."""
    order: int = 100
    """Position in listings (run summary, evaluation), then the name."""

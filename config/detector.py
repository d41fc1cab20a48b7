"""The detector backend, its weights and thresholds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, create_model, field_validator, model_validator

from nonsite.config.base import Section
from nonsite.config.detectors import DETECTOR_BACKENDS, DetectorBackend
from nonsite.config.manifest import zone_kinds

DEFAULT_BACKEND = "openvino"
STREET_MODEL = "street-yolo11n"
S = TypeVar("S", bound=Section)


class _DetectorSettings(Section):
    """What every backend shares; :data:`DetectorConfig` adds ``backend`` (one of the declared backends) and
    each backend's own section (:mod:`nonsite.config.detectors`)."""

    backend: str = Field(DEFAULT_BACKEND, description="The detector backend.")
    model: str = Field(
        "yolo11n-coco",
        description="A weights-registry name (see `nonsite models list`) or a path to a .pt / .onnx file.",
    )
    zone_models: dict[str, str] = Field(
        default_factory=lambda: {"no_vending": STREET_MODEL, "no_hawking": STREET_MODEL},
        description="Weights for the cameras that have a zone of one of these kinds (zone kind -> registry name or "
        "path), instead of `model`: by default the street model (COCO 80 + vendor_cart, "
        "models/zoo/street-yolo11n.md, its sha256 checked on load) where vendor carts matter, the base model "
        "everywhere else. A camera with zones of several listed kinds takes the first kind listed here that it "
        "has. Each camera still gets one detector pass per frame. {} = every camera uses `model`.",
    )
    imgsz: int = Field(640, ge=128, le=1920, multiple_of=32, description="Network input size in pixels.")
    confidence: float = Field(0.3, gt=0, lt=1, description="Minimum detection confidence kept.")
    iou: float = Field(0.45, gt=0, lt=1, description="IoU threshold of non-maximum suppression.")
    threads: int = Field(0, ge=0, description="Inference threads; 0 lets the runtime choose.")
    device: str = Field(
        "cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
        description="'cpu' or a CUDA device like 'cuda:0' (which backends run there: see `backend`).",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        """Settings older configs wrote directly under ``detector:`` (``precision``) move into their backend's
        section."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for spec in DETECTOR_BACKENDS.values():
            for key in spec.legacy_keys:
                if key in data and isinstance(data.get(spec.name, {}), dict):
                    section = dict(data.get(spec.name) or {})
                    section.setdefault(key, data.pop(key))
                    data[spec.name] = section
        return data

    @field_validator("zone_models")
    @classmethod
    def _known_kinds(cls, v: dict[str, str]) -> dict[str, str]:
        known = zone_kinds()
        for kind, model in v.items():
            if kind not in known:
                raise ValueError(f"unknown zone kind '{kind}'; use one of {', '.join(known)}")
            if not model.strip():
                raise ValueError(f"zone kind '{kind}' has an empty model; name a registry model or a path")
        return v

    def model_for(self, kinds: Iterable[str]) -> str:
        """The weights for a camera whose zones have these kinds: the first of ``zone_models`` it has, else
        ``model``."""
        have = set(kinds)
        return next((m for k, m in self.zone_models.items() if k in have), self.model)

    def for_model(self, model: str) -> _DetectorSettings:
        """These settings with ``model`` as the weights (and no zone models: one detector, one model)."""
        return self.model_copy(update={"model": model, "zone_models": {}})

    def settings(self, kind: type[S]) -> S:
        """This config's section of the backend whose settings model is ``kind`` (e.g. ``OpenVinoSettings``)."""
        for spec in DETECTOR_BACKENDS.values():
            if spec.settings is kind:
                value = getattr(self, spec.name)
                assert isinstance(value, kind)
                return value
        raise KeyError(f"no detector backend has the settings {kind.__name__}")

    @property
    def spec(self) -> DetectorBackend:
        """The declaration of ``backend``."""
        return DETECTOR_BACKENDS[self.backend]


def _detector_config() -> type[_DetectorSettings]:
    names = tuple(DETECTOR_BACKENDS)
    backend_doc = "; ".join(f"{n}: {b.summary.rstrip('.')}" for n, b in DETECTOR_BACKENDS.items()) + "."
    fields: dict[str, Any] = {
        "backend": (Literal[names], Field(DEFAULT_BACKEND, description=backend_doc)),
    }
    for n, b in DETECTOR_BACKENDS.items():
        if b.settings is not None:
            fields[n] = (b.settings, Field(default_factory=b.settings,
                                          description=f"Settings of the {n} backend only (ignored by the others)."))
    model: type[_DetectorSettings] = create_model(
        "DetectorConfig", __base__=_DetectorSettings, __module__=__name__, __doc__="The detector backend, its "
        "weights and thresholds.", **fields)
    return model


if TYPE_CHECKING:
    DetectorConfig = _DetectorSettings
else:
    DetectorConfig = _detector_config()
"""The ``detector:`` section, built from the declared backends (:mod:`nonsite.config.detectors`)."""


class SplitBoxesConfig(Section):
    """Boxes of one object that the detector split in two (at night, motorcycles) merged before tracking."""

    enabled: bool = Field(True, description="Merge same-class boxes that one contains or mostly overlaps into one "
                          "box (their union) before tracking, so one object gets one track and one alert.")
    classes: list[str] = Field(
        default_factory=lambda: ["car", "truck", "bus", "motorcycle", "bicycle", "dog"],
        description="Classes whose split boxes are merged (the same class only). People are left out by default: "
        "in a crowd one person often stands mostly in front of another.",
    )
    min_overlap: float = Field(
        0.6, gt=0, le=1,
        description="Merge two boxes when their intersection covers at least this fraction of the smaller box "
        "(1.0 = only when one contains the other). Lower merges more; too low merges neighbours parked close.",
    )


class TrackerConfig(Section):
    track_activation_threshold: float = Field(
        0.4, gt=0, lt=1, description="ByteTrack: confidence a detection needs to start a new track."
    )
    high_confidence: float = Field(
        0.4, gt=0, lt=1,
        description="ByteTrack: detections at or above this are matched first (and may start tracks); "
        "weaker ones only extend existing tracks.",
    )
    minimum_consecutive_frames: int = Field(
        2, ge=1, le=10, description="Frames a new track must be seen in a row before it gets an id."
    )
    lost_track_s: float = Field(
        3.0, gt=0, description="Seconds a lost track is kept so it can resume with the same id after occlusion."
    )
    minimum_iou: float = Field(
        0.1, gt=0, lt=1, description="ByteTrack: least IoU between a track's prediction and a detection to match."
    )
    split_boxes: SplitBoxesConfig = Field(
        default_factory=SplitBoxesConfig,
        description="One object, one box: same-class partial boxes of one object merged before tracking.",
    )

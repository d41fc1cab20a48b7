"""Detector backends declare themselves (nonsite/config/detectors/): the config's ``backend`` values, each
backend's own settings section, the CLI's choices, the edge's batch size and :func:`create_detector` all come
from the declarations, and older configs (``detector.precision``) still load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from pydantic import Field, ValidationError

from nonsite.cli import build_parser
from nonsite.config import ConfigError, DetectorConfig, load_config
from nonsite.config.base import Section
from nonsite.config.detector import _detector_config
from nonsite.config.detectors import DETECTOR_BACKENDS, DetectorBackend
from nonsite.config.detectors.openvino import OpenVinoSettings
from nonsite.models import create_detector
from nonsite.models.base import WeightsInfo
from nonsite.pipeline.edge import preferred_batch

ROOT = Path(__file__).resolve().parents[1]


class ToySettings(Section):
    colour: str = Field("red", description="What the toy paints its boxes.")


class ToyDetector:
    """A backend in a module of its own (this one), created through the declaration only."""

    backend = "toy"

    def __init__(self, cfg: DetectorConfig, *, download: bool = True) -> None:
        self.config = cfg
        self.colour = cfg.settings(ToySettings).colour
        self.weights = WeightsInfo(name=cfg.model, version="0", sha256="0" * 64, path="")
        self.class_names = ["toy"]

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        return [sv.Detections.empty() for _ in images]


TOY = DetectorBackend(name="toy", summary="a toy for the test.", implementation=f"{__name__}:ToyDetector",
                      cpu_batch=3, gpu_batch=5, settings=ToySettings, legacy_keys=("colour",))


def test_the_declared_backends_are_what_config_cli_and_edge_offer() -> None:
    modules = sorted(p.stem for p in (ROOT / "config" / "detectors").glob("*.py") if p.stem != "__init__")
    assert list(DETECTOR_BACKENDS) == modules == ["onnx", "openvino", "ultralytics"]
    schema = DetectorConfig.model_json_schema()
    assert schema["properties"]["backend"]["enum"] == modules
    assert schema["properties"]["backend"]["default"] == "openvino"
    assert "openvino" in schema["properties"] and "precision" not in schema["properties"]  # its own section
    detect = build_parser().parse_args(["detect", "x.jpg", "--backend", "ultralytics"])
    assert detect.backend == "ultralytics"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["detect", "x.jpg", "--backend", "tensorflow"])
    with pytest.raises(ValidationError, match="'onnx', 'openvino' or 'ultralytics'"):
        DetectorConfig(backend="tensorflow")


def test_openvino_precision_lives_in_its_section_and_the_old_key_still_loads(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text("detector:\n  backend: openvino\n  openvino:\n    precision: bf16\n")
    old = tmp_path / "old.yaml"
    old.write_text("detector:\n  backend: openvino\n  precision: bf16\n")
    for path in (new, old):
        assert load_config(path).detector.settings(OpenVinoSettings).precision == "bf16"
    assert DetectorConfig().settings(OpenVinoSettings).precision == "auto"  # the fastest that matches fp32 (issue 16)
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  openvino:\n    precision: fp8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: detector.openvino.precision"):
        load_config(bad)


def test_preferred_batch_comes_from_the_declaration() -> None:
    class Fake:
        def __init__(self, backend: str, device: str = "cpu") -> None:
            self.backend = backend
            self.config = DetectorConfig(backend=backend if backend in DETECTOR_BACKENDS else "onnx", device=device)

    assert [preferred_batch(Fake(b)) for b in ("onnx", "openvino", "ultralytics")] == [4, 4, 1]  # type: ignore[arg-type]
    assert preferred_batch(Fake("onnx", "cuda:0")) == 8  # type: ignore[arg-type]
    assert preferred_batch(Fake("a test double")) == 1  # type: ignore[arg-type]


def test_a_new_backend_is_one_declaration_and_one_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DETECTOR_BACKENDS, "toy", TOY)
    config = _detector_config()  # what importing the config builds, now with the toy declared
    schema = config.model_json_schema()
    assert "toy" in schema["properties"]["backend"]["enum"] and "toy" in schema["properties"]
    cfg = config.model_validate({"backend": "toy", "colour": "blue"})  # its legacy key, moved into its section
    detector = create_detector(cfg)
    assert isinstance(detector, ToyDetector) and detector.colour == "blue"
    assert preferred_batch(detector) == 3
    assert build_parser().parse_args(["detect", "x.jpg", "--backend", "toy"]).backend == "toy"
    with pytest.raises(ValidationError, match="toy.size"):  # its section forbids unknown keys too
        config.model_validate({"backend": "toy", "toy": {"colour": "blue", "size": 3}})

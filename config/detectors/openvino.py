"""The OpenVINO backend (implementation: :mod:`nonsite.models.openvino_backend`) and its settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nonsite.config.base import Section
from nonsite.config.detectors import DetectorBackend


class OpenVinoSettings(Section):
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="Inference precision. bf16 is about twice as fast on CPUs with AMX or AVX512-BF16, with "
        "slightly different boxes and scores; fp32 matches the other backends.",
    )


BACKEND = DetectorBackend(
    name="openvino",
    summary="OpenVINO on an OpenVINO IR (.xml), an ONNX, or a .pt exported to ONNX once, on the CPU only (the "
    "fastest on CPU here, see bench/).",
    implementation="nonsite.models.openvino_backend:OpenVinoDetector",
    cpu_batch=4,  # faster per frame than single frames on this project's CPUs (bench/results)
    settings=OpenVinoSettings,
    legacy_keys=("precision",),  # configs before the openvino: section wrote detector.precision
)

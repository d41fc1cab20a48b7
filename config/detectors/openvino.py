"""The OpenVINO backend (implementation: :mod:`nonsite.models.openvino_backend`) and its settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nonsite.config.base import Section
from nonsite.config.detectors import DetectorBackend


class OpenVinoSettings(Section):
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="Inference precision. auto: the fastest this CPU runs natively among those whose eval scores "
        "match fp32, as `nonsite models qualify --model MODEL` measured on this CPU; without that qualification, "
        "bf16 on AMX / AVX512-BF16, else fp32 (int8 only once qualified); the choice and its reason are logged at "
        "start. fp32 matches the other backends exactly; bf16 and int8 give slightly different boxes and scores; "
        "int8 needs `nonsite models quantize --model MODEL` first.",
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

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
    streams: int = Field(
        0, ge=0, le=64,
        description="How a batch of frames (one frame of each of several cameras) runs. 0 (auto): as single-frame "
        "requests in parallel on OpenVINO's throughput streams (2 on a 2-core box, each on its share of the cores), "
        "each frame letterboxed while the one before runs: 7-22 % more frames/s at bf16 than one request of the "
        "whole batch on every core, the same detections, half the compiled models' memory (YOLO11n on 2 cores, "
        "bench/README.md); a lone frame still runs on every core, the fastest for one frame. 1: the whole batch "
        "as one request on every core (as before). N > 1: N streams.",
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

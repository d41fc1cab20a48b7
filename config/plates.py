"""Licence-plate reading: the plate formats a reading must match, and the OCR thresholds."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nonsite.config.base import Section

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
"""Province abbreviations that open a mainland plate (省、自治区、直辖市简称)."""
_P = f"[{PROVINCES}]"
_LETTER = "[A-HJ-NP-Z]"  # the issuing-office letter: A-Z without I and O
_ALNUM = "[A-HJ-NP-Z0-9]"  # serial characters: digits and letters without I and O (GA 36)


class PlateFormat(Section):
    name: str = Field(pattern=r"^[a-z0-9_]+$", description="Short name recorded with each reading (e.g. standard).")
    pattern: str = Field(
        description="Regular expression the whole normalised plate text must match (uppercase, no separators "
        "such as the middle dot, no spaces); matched with re.fullmatch."
    )
    description: str = Field("", description="What plates this format covers, for people reading the config.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression ({e}); fix the pattern") from None
        return v


def mainland_formats() -> list[PlateFormat]:
    """Mainland China plate formats (GA 36-2018 and its 2021 new-energy extension)."""
    return [
        PlateFormat(
            name="standard",
            pattern=f"{_P}{_LETTER}{_ALNUM}{{5}}",
            description="普通号牌 (blue small cars, yellow large vehicles): province + letter + 5 digits/letters "
            "(no I or O), e.g. 京A12345.",
        ),
        PlateFormat(
            name="new_energy_small",
            pattern=f"{_P}{_LETTER}[A-HJK]{_ALNUM}[0-9]{{4}}",
            description="小型新能源 (green gradient): province + letter + D/A/B/C/E (battery) or F/G/H/J/K "
            "(hybrid) + a digit or letter + 4 digits, e.g. 粤BD12345.",
        ),
        PlateFormat(
            name="new_energy_large",
            pattern=f"{_P}{_LETTER}[0-9]{{5}}[DF]",
            description="大型新能源 (yellow-green): province + letter + 5 digits + D (battery) or F (hybrid), "
            "e.g. 沪A12345D.",
        ),
        PlateFormat(
            name="coach",
            pattern=f"{_P}{_LETTER}{_ALNUM}{{4}}学",
            description="教练车 (yellow, 学 suffix): province + letter + 4 + 学, e.g. 京A1234学.",
        ),
        PlateFormat(
            name="police",
            pattern=f"{_P}{_LETTER}{_ALNUM}{{4}}警",
            description="警用 (white, red 警 suffix): province + letter + 4 + 警, e.g. 京A1234警.",
        ),
        PlateFormat(
            name="trailer",
            pattern=f"{_P}{_LETTER}{_ALNUM}{{4}}挂",
            description="挂车 (yellow, 挂 suffix): province + letter + 4 + 挂, e.g. 冀B1234挂.",
        ),
        PlateFormat(
            name="hong_kong_macau",
            pattern=f"粤Z{_ALNUM}{{4}}[港澳]",
            description="港澳入出境车 (black, 粤Z + 4 + 港 or 澳), e.g. 粤Z1234港.",
        ),
        PlateFormat(
            name="consulate",
            pattern=f"{_P}{_LETTER}[0-9]{{4}}领",
            description="领馆 (black, 领 suffix): province + letter + 4 digits + 领, e.g. 沪A1234领.",
        ),
        PlateFormat(
            name="embassy",
            pattern="使[0-9]{6}",
            description="使馆 (black, 使 prefix): 使 + 3-digit country code + 3 digits, e.g. 使014578.",
        ),
    ]


class PlatesConfig(Section):
    enabled: bool = Field(
        True, description="Read the plate of vehicles in parking violations (the reading goes into the evidence)."
    )
    formats: list[PlateFormat] = Field(
        default_factory=mainland_formats,
        description="Plate formats a reading must match to be kept (mainland China by default); a text that "
        "matches none is dropped, never guessed. Setting this list replaces the defaults.",
    )
    min_confidence: float = Field(
        0.8, gt=0, lt=1, description="Least OCR confidence (0..1) of a reading to keep it; below it, no plate."
    )
    search_top: float = Field(
        0.3, ge=0, lt=1,
        description="The plate is searched below this fraction of the vehicle box's height (0 = the whole box); "
        "plates sit on the lower part of a vehicle.",
    )
    min_search_width: int = Field(
        640, ge=64, le=4096,
        description="The search region is upscaled to at least this width in pixels before OCR (small, far "
        "vehicles); larger regions are used as they are.",
    )
    max_upscale: float = Field(4.0, ge=1, le=16, description="Upscaling of the search region stops at this factor.")
    max_corrections: int = Field(
        2, ge=0, le=3,
        description="At most this many characters are corrected for common OCR confusions (O/0, I/1, ...), and "
        "only where the format demands a digit or a letter and exactly one correction fits.",
    )
    crop_padding: float = Field(
        0.15, ge=0, le=1, description="The plate crop kept in the evidence is padded by this fraction of its height."
    )
    runtime: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime",
        description="What runs the OCR's models (the same ONNX files, from the rapidocr wheel). onnxruntime "
        "(rapidocr's own) frees its working memory after each reading. openvino reads the same plates with the "
        "same confidences, 2.4x faster on a Xeon with AMX but no faster on an AMD EPYC (one thread each: 224 -> "
        "95 and 117 -> 114 CPU ms per vehicle), and keeps working memory for the sizes of search region it has "
        "seen: about 300 MiB more per box once many sizes were read (bench/README.md, plate reading). Measure it "
        "on the box (make bench, plates) before choosing it.",
    )
    threads: int = Field(
        1, ge=0, le=256,
        description="CPU threads of one plate reading (0: all cores). Plates are read on the evidence writer's "
        "threads, beside the detector: one thread spends about a quarter less CPU per reading than two that wait "
        "for each other (bench/README.md, plate reading), and leaves the other cores to the detector; a reading "
        "alone then takes longer.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="Arithmetic of the OCR with runtime: openvino. fp32 reads exactly as onnxruntime does; bf16 is "
        "about 1.6x faster again where the CPU computes bf16 natively (AMX, AVX-512 BF16), and its confidences "
        "may differ in the third decimal, which can move a reading across min_confidence.",
    )

    @model_validator(mode="after")
    def _formats(self) -> PlatesConfig:
        names = [f.name for f in self.formats]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"plate format name '{dup[0]}' appears twice; give every format its own name")
        if self.precision == "bf16" and self.runtime != "openvino":
            raise ValueError("plates.precision bf16 needs plates.runtime: openvino (onnxruntime runs the OCR in fp32); "
                             "set runtime: openvino or precision: fp32")
        if self.enabled and not self.formats:
            raise ValueError("plates.formats is empty, so no plate could ever be kept; list formats or set "
                             "enabled: false")
        return self

"""The shared manifest of violation types: what every role may know of them without loading detection code.

The violation types themselves are modules of :mod:`nonsite.pipeline.violations` (thresholds, zone kinds,
detection function, evidence hooks). The central roles (sealer, drafter, console) never import them: what
they need of a type is its name, its labels and the zone kinds an operator may draw, and those come from
data every role can read:

- the **locale strings**: ``type.<name>`` labels (the violation types the console and the case
  documents show) and ``zone_kind.<kind>`` labels (the zone kinds the zone editor offers) in
  ``console/locales/<lang>.json``;
- the **legal-basis catalogue** (``cases/legal_basis.yaml`` or ``cases.legal_basis``) for the legal
  name and basis of each type (read by the drafter and the case documents, :mod:`nonsite.cases`).

Extra locale strings (a type added outside the repository) are overlaid from the directories named in
``NONSITE_LOCALES`` (``os.pathsep``-separated), each holding ``zh.json`` / ``en.json``; their keys are
added to (and override) both the console's and the case documents' strings.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

LOCALES_ENV = "NONSITE_LOCALES"
LANGUAGES: tuple[str, ...] = ("zh", "en")
CONSOLE_LOCALES = Path(__file__).resolve().parent.parent / "console" / "locales"


def overlay_dirs() -> list[Path]:
    """The directories of extra locale strings named in ``NONSITE_LOCALES`` (in order; later ones win)."""
    return [Path(p) for p in os.environ.get(LOCALES_ENV, "").split(os.pathsep) if p.strip()]


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


@lru_cache(maxsize=64)
def _read(path: Path, stamp: int) -> dict[str, str]:
    if stamp < 0:
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path} must be a JSON object of strings")
    return {str(k): v for k, v in data.items()}


def locale_strings(base: Path, lang: str) -> dict[str, str]:
    """``base/<lang>.json`` with the ``NONSITE_LOCALES`` overlays of ``lang`` applied (re-read when a file
    changes)."""
    out: dict[str, str] = {}
    for d in (base, *overlay_dirs()):
        p = d / f"{lang}.json"
        out.update(_read(p, _stamp(p)))
    return out


def _keys(prefix: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for lang in LANGUAGES:
        for key in locale_strings(CONSOLE_LOCALES, lang):
            if key.startswith(prefix):
                seen.setdefault(key[len(prefix):], None)
    return tuple(seen)


def type_names() -> tuple[str, ...]:
    """Violation types known to every role: those with a ``type.<name>`` label, in catalogue order."""
    return _keys("type.")


def zone_kinds() -> tuple[str, ...]:
    """Zone kinds an operator may draw: those with a ``zone_kind.<kind>`` label, in catalogue order."""
    return _keys("zone_kind.")

"""The legal-basis catalogue the city edits (``cases/legal_basis.yaml``): provisions, penalties, discretion.

Per violation type: the provisions a case rests on, the penalty range, what links a repeat (the same
plate, the same zone) within how many days, and an ordered discretion table whose first matching rule
suggests the disposition of a draft (a warning for a first offence, a penalty case for repeats, a
dispatch task for a stray dog). Loaded and validated with pydantic; a bad entry is reported as
``file:line: key: fix`` like the main configuration.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nonsite.cases.deadlines import TimeLimitDefaults, TimeLimitTable, TypeTimeLimits
from nonsite.config.loader import ConfigError, LocatedError, _node_lines, error_lines

__all__ = [
    "DEFAULT_CATALOGUE",
    "Catalogue",
    "DiscretionRule",
    "LegalBasisError",
    "Provision",
    "Suggestion",
    "TypeBasis",
    "default_catalogue",
    "load_catalogue",
]

DEFAULT_CATALOGUE = Path(__file__).resolve().parent / "legal_basis.yaml"

Disposition = Literal["warning", "penalty", "dispatch", "manual"]


UNKNOWN_KEY = "unknown key; check its spelling against the schema at the top of cases/legal_basis.yaml"


class LegalBasisError(ConfigError):
    """The catalogue file is missing or invalid (``str()`` is ``file:line: key: fix``)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Model):
    zh: str = Field(min_length=1, description="Simplified Chinese.")
    en: str = Field(min_length=1, description="English.")

    def get(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


class Provision(_Model):
    law: Text = Field(description="Name of the law or regulation (with its version where it matters).")
    article: Text | None = Field(description="Article (条/款/项), e.g. {zh: 第五十六条, en: Art. 56}; null when not "
                                 "confirmed.")
    role: Literal["prohibition", "penalty", "duty", "discretion"] = Field(
        description="What the provision does for the case."
    )
    summary: Text = Field(description="What it says, summarised (not the official text).")
    confirmed_by_legal_office: bool = Field(description="Whether the city's legal office confirmed this entry.")
    note: Text | None = Field(None, description="Caveats: jurisdiction, what is not confirmed, what to add locally.")

    def citation(self, lang: str = "zh") -> str:
        law = self.law.get(lang)
        if self.article is None:
            return law
        return f"{law}, {self.article.en}" if lang == "en" else f"{law}{self.article.zh}"


class Penalty(_Model):
    min_yuan: int | None = Field(None, ge=0, description="Lowest fine in yuan (null: no floor set).")
    max_yuan: int | None = Field(None, ge=0, description="Highest fine in yuan (null: no cap set).")
    summary: Text = Field(description="The penalty in words.")

    @model_validator(mode="after")
    def _range(self) -> Penalty:
        if self.min_yuan is not None and self.max_yuan is not None and self.min_yuan > self.max_yuan:
            raise ValueError(f"min_yuan {self.min_yuan} is above max_yuan {self.max_yuan}; swap them")
        return self


class Repeat(_Model):
    window_days: int = Field(30, ge=1, le=3650, description="Earlier cases within this many days count.")
    by: list[Literal["plate", "zone"]] = Field(
        default_factory=lambda: ["plate", "zone"],
        description="What makes an earlier case a repeat: the same plate, the same zone of the same camera.",
    )


class When(_Model):
    min_repeats: int | None = Field(None, ge=0, description="At least this many earlier linked cases.")
    max_repeats: int | None = Field(None, ge=0, description="At most this many earlier linked cases.")
    plate_read: bool | None = Field(None, description="Only when a plate was (true) or was not (false) read.")

    def matches(self, repeat_count: int, plate_read: bool) -> bool:
        return (
            (self.min_repeats is None or repeat_count >= self.min_repeats)
            and (self.max_repeats is None or repeat_count <= self.max_repeats)
            and (self.plate_read is None or plate_read == self.plate_read)
        )


class DiscretionRule(_Model):
    id: str = Field(min_length=1, description="Rule id, unique within the type (stored on the case).")
    when: When = Field(default_factory=When, description="Conditions; empty matches every case.")
    disposition: Disposition = Field(description="warning | penalty | dispatch | manual.")
    dispatch_to: Text | None = Field(None, description="Team a dispatch task goes to (dispatch only).")
    basis: list[str] = Field(default_factory=list, description="Ids of the provisions this rule rests on.")
    summary: Text = Field(description="What to do, in words.")
    confirmed_by_legal_office: bool = Field(description="Whether the city's legal office confirmed this rule.")

    @model_validator(mode="after")
    def _dispatch(self) -> DiscretionRule:
        if self.disposition == "dispatch" and self.dispatch_to is None:
            raise ValueError("a dispatch rule needs dispatch_to (the team, in zh and en)")
        if self.disposition != "dispatch" and self.dispatch_to is not None:
            raise ValueError("dispatch_to applies only to disposition: dispatch; remove it")
        return self


class TypeBasis(_Model):
    name: Text = Field(description="Name of the violation type.")
    basis: list[str] = Field(min_length=1, description="Ids of the provisions a case of this type rests on.")
    penalty: Penalty | None = Field(description="Penalty range; null when the type is never fined.")
    repeat: Repeat = Field(default_factory=Repeat, description="How repeats are linked.")
    discretion: list[DiscretionRule] = Field(
        min_length=1, description="Ordered discretion table; the first matching rule wins."
    )
    time_limits: TypeTimeLimits | None = Field(
        None, description="This type's time limits where they differ from the catalogue's (cases/deadlines.py)."
    )

    @model_validator(mode="after")
    def _unique_rules(self) -> TypeBasis:
        seen: set[str] = set()
        for rule in self.discretion:
            if rule.id in seen:
                raise ValueError(f"discretion rule id '{rule.id}' appears twice; rule ids must be unique")
            seen.add(rule.id)
        return self


class Suggestion(_Model):
    """The disposition the discretion table suggests for one draft."""

    disposition: Disposition
    rule: str | None = Field(description="Id of the rule that matched (None: no rule, or an unknown type).")
    dispatch_to: Text | None = None
    summary: Text | None = None
    basis: list[str] = Field(default_factory=list)

    def as_record(self, catalogue: Catalogue) -> dict[str, Any]:
        """What a case stores of it (with the cited provisions spelled out)."""
        return {
            "disposition": self.disposition,
            "rule": self.rule,
            "dispatch_to": self.dispatch_to.model_dump() if self.dispatch_to else None,
            "summary": self.summary.model_dump() if self.summary else None,
            "basis": [{"id": pid, **catalogue.provisions[pid].model_dump()} for pid in self.basis],
        }


class Catalogue(_Model):
    version: str = Field(min_length=1, description="Version label of the catalogue (stored on every case).")
    provisions: dict[str, Provision] = Field(description="Provisions by id.")
    types: dict[str, TypeBasis] = Field(description="Legal basis per violation type.")
    time_limits: TimeLimitDefaults = Field(
        default_factory=TimeLimitDefaults,
        description="Time limits per step for every type (限时办结), overridden per type (cases/deadlines.py).",
    )
    sha256: str = Field("", description="sha256 of the catalogue file (set by the loader).")

    @model_validator(mode="after")
    def _references(self) -> Catalogue:
        for tname, t in self.types.items():
            for pid in t.basis:
                if pid not in self.provisions:
                    raise _Unknown(("types", tname, "basis"), pid, self.provisions)
            for i, rule in enumerate(t.discretion):
                for pid in rule.basis:
                    if pid not in self.provisions:
                        raise _Unknown(("types", tname, "discretion", i, "basis"), pid, self.provisions)
        return self

    def time_limit_table(self) -> TimeLimitTable:
        """The time limits of every step, with each type's overrides applied."""
        return TimeLimitTable(
            defaults=self.time_limits,
            per_type={t: b.time_limits for t, b in self.types.items() if b.time_limits is not None},
        )

    def for_type(self, violation_type: str) -> TypeBasis | None:
        return self.types.get(violation_type)

    def repeat_policy(self, violation_type: str) -> Repeat:
        t = self.types.get(violation_type)
        return t.repeat if t else Repeat()

    def suggest(self, violation_type: str, repeat_count: int, plate_read: bool) -> Suggestion:
        """The first discretion rule of the type that matches; ``manual`` when none does."""
        t = self.types.get(violation_type)
        if t is not None:
            for rule in t.discretion:
                if rule.when.matches(repeat_count, plate_read):
                    return Suggestion(disposition=rule.disposition, rule=rule.id, dispatch_to=rule.dispatch_to,
                                      summary=rule.summary, basis=list(rule.basis))
        return Suggestion(disposition="manual", rule=None)

    def snapshot(self, violation_type: str) -> dict[str, Any]:
        """What a case stores of the type's entry: provisions in full, the penalty, the catalogue version."""
        t = self.types.get(violation_type)
        if t is None:
            return {"catalogue_version": self.version, "catalogue_sha256": self.sha256, "type": violation_type,
                    "known": False, "provisions": [], "penalty": None, "name": None}
        return {
            "catalogue_version": self.version,
            "catalogue_sha256": self.sha256,
            "type": violation_type,
            "known": True,
            "name": t.name.model_dump(),
            "provisions": [{"id": pid, **self.provisions[pid].model_dump()} for pid in t.basis],
            "penalty": t.penalty.model_dump() if t.penalty else None,
            "repeat": t.repeat.model_dump(),
        }


class _Unknown(LocatedError):
    def __init__(self, loc: tuple[Any, ...], pid: str, known: dict[str, Provision]) -> None:
        self.pid = pid
        super().__init__(loc, f"unknown provision id '{pid}'; define it under provisions: or use one of "
                         f"{', '.join(sorted(known))}")


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read and validate a catalogue file (default: the shipped ``cases/legal_basis.yaml``).

    Raises :class:`LegalBasisError` with ``file:line: key: fix`` lines for a missing or invalid file.
    """
    p = Path(path) if path is not None else DEFAULT_CATALOGUE
    if not p.is_file():
        raise LegalBasisError(f"{p}: legal-basis catalogue not found; fix cases.legal_basis or remove it to use "
                              "the shipped default")
    raw_bytes = p.read_bytes()
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise LegalBasisError(f"{p}:1: the catalogue is not UTF-8 text; save it as UTF-8") from None
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise LegalBasisError(f"{where}: not valid YAML ({getattr(e, 'problem', e)}); fix the syntax there") from None
    if not isinstance(raw, dict):
        raise LegalBasisError(f"{p}:1: the catalogue must be a mapping with version:, provisions: and types:")
    lines = _node_lines(node) if node is not None else {}
    raw["sha256"] = hashlib.sha256(raw_bytes).hexdigest()
    try:
        return Catalogue.model_validate(raw)
    except ValidationError as e:
        raise LegalBasisError("\n".join(error_lines(e, str(p), lines, unknown_key=UNKNOWN_KEY))) from None


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    """The shipped catalogue (loaded once)."""
    return load_catalogue(DEFAULT_CATALOGUE)

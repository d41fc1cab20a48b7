"""Structured parts of a workflow note: the team a case was dispatched to and the feedback photos.

``cases.apply_action`` records one free-text note per transition. Until the workflow carries these as
fields, the console prefixes the note with tags it writes itself and reads back::

    [team:capture_team] [photos:<sha256>,<sha256>] the operator's text
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_TEAM = re.compile(r"^\[team:([A-Za-z0-9_.-]{1,64})\]\s?")
_PHOTOS = re.compile(r"^\[photos:((?:[0-9a-f]{64},)*[0-9a-f]{64})\]\s?")


@dataclass(frozen=True)
class NoteParts:
    text: str
    team: str | None = None
    photos: tuple[str, ...] = ()
    """sha256 of each feedback photo (stored as ``cases/<number>/feedback/<sha256>.jpg``)."""


def compose(text: str, *, team: str | None = None, photos: Sequence[str] = ()) -> str:
    tags = []
    if team:
        tags.append(f"[team:{team}]")
    if photos:
        tags.append(f"[photos:{','.join(photos)}]")
    return " ".join([*tags, text.strip()]).strip()


def parse(note: str | None) -> NoteParts:
    """The tags the console wrote at the start of ``note`` and the rest of it."""
    rest = note or ""
    team = None
    photos: tuple[str, ...] = ()
    m = _TEAM.match(rest)
    if m:
        team, rest = m.group(1), rest[m.end():]
    m = _PHOTOS.match(rest)
    if m:
        photos, rest = tuple(m.group(1).split(",")), rest[m.end():]
    return NoteParts(rest.strip(), team, photos)

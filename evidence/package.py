"""Layout of an evidence package: one store prefix per event, fixed blob names per role."""

from __future__ import annotations

import re

PACKAGES_ROOT = "events/"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"

#: Blob name inside the package prefix for each role the edge writes.
ROLE_FILES: dict[str, str] = {
    "onset": "onset.jpg",
    "confirm": "confirm.jpg",
    "onset_annotated": "onset_annotated.jpg",
    "confirm_annotated": "confirm_annotated.jpg",
    "closeup": "closeup.jpg",
    "clip": "clip.mp4",
    "overview_2": "overview_2.jpg",
    "overview_2_annotated": "overview_2_annotated.jpg",
    "plate": "plate.jpg",
    "reference": "reference.jpg",
    "reference_annotated": "reference_annotated.jpg",
    # The after package of a camera re-check (docs/recheck.md): the zone when the check began and when it decided.
    "after_first": "after_first.jpg",
    "after_first_annotated": "after_first_annotated.jpg",
    "after_last": "after_last.jpg",
    "after_last_annotated": "after_last_annotated.jpg",
}

_EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_event_id(event_id: str) -> str:
    """``event_id`` if it can name a package prefix, else ValueError saying why."""
    if not isinstance(event_id, str) or not _EVENT_ID.match(event_id) or ".." in event_id:
        raise ValueError(
            f"event id {event_id!r} cannot name an evidence package: use letters, digits, '.', '_' or '-' "
            "(a UUID), at most 128 characters"
        )
    return event_id


def package_prefix(event_id: str) -> str:
    """Store prefix of the event's package: ``events/<event_id>/``."""
    return f"{PACKAGES_ROOT}{check_event_id(event_id)}/"


def manifest_key(event_id: str) -> str:
    return package_prefix(event_id) + MANIFEST_NAME


def signature_key(event_id: str) -> str:
    return package_prefix(event_id) + SIGNATURE_NAME


def name_in_package(key: str, event_id: str) -> str:
    """The key relative to the event's prefix (the full key if it lies elsewhere), for messages."""
    prefix = package_prefix(event_id)
    return key[len(prefix):] if key.startswith(prefix) else key

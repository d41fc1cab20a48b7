"""The team of a dispatch and the feedback photos of a rectification as audit-entry columns.

Until now the console wrote them as tags at the start of the note (``[team:capture_team] [photos:<sha>,...]
text``) and parsed them back, so a user could forge them by typing a tag. Existing rows get the columns from
what the workflow recorded (``detail.assignee``, ``detail.attachments``), and the one tag the console wrote is
taken off the note only when it says the same; anything else in a note stays literal text.

Revision ID: 0003_note_columns
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003_note_columns"
down_revision = "0002"
branch_labels = None
depends_on = None

_TEAM = re.compile(r"^\[team:([A-Za-z0-9_.-]{1,64})\]\s?")
_PHOTOS = re.compile(r"^\[photos:((?:[0-9a-f]{64},)*[0-9a-f]{64})\]\s?")


def _loads(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def structured(action: str, detail: dict[str, Any]) -> tuple[str | None, list[str] | None, str | None]:
    """``(team, photos, note)`` of an old audit row: the columns' values, and the note without the tag the
    console wrote (None: the note is unchanged)."""
    note = detail.get("note")
    note = note if isinstance(note, str) else None
    team = photos = None
    stripped = None
    if action == "dispatch" and isinstance(detail.get("assignee"), str) and detail["assignee"]:
        team = str(detail["assignee"])[:256]
        m = _TEAM.match(note or "")
        if note is not None and m and m.group(1) == team:
            stripped = note[m.end():].strip()
    if action == "rectify" and isinstance(detail.get("attachments"), list):
        photos = [str(a.get("sha256", "")) for a in detail["attachments"] if isinstance(a, dict)]
        m = _PHOTOS.match(note or "")
        if note is not None and m and m.group(1).split(",") == photos:
            stripped = note[m.end():].strip()
    return team, photos or None, stripped


def upgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.add_column(sa.Column("team", sa.String(256), nullable=True, comment="Team a dispatch went to"))
        batch.add_column(sa.Column("photos", sa.JSON(), nullable=True,
                                   comment="sha256 of each feedback photo of a rectification"))
    bind = op.get_bind()
    table = sa.table("audit_entries", sa.column("id", sa.Integer), sa.column("action", sa.String),
                     sa.column("detail", sa.JSON), sa.column("team", sa.String), sa.column("photos", sa.JSON))
    rows = bind.execute(sa.select(table.c.id, table.c.action, table.c.detail)
                        .where(table.c.action.in_(("dispatch", "rectify")))).all()
    changes = []
    for row_id, action, raw in rows:
        detail = _loads(raw)
        team, photos, note = structured(action, detail)
        if team is None and photos is None:
            continue
        values: dict[str, Any] = {"team": team, "photos": photos}
        if note is not None:
            values["detail"] = {**detail, "note": note} if note else {k: v for k, v in detail.items() if k != "note"}
        changes.append((row_id, values))
    if not changes:
        return
    # The append-only triggers (0001 on SQLite, 0002 on PostgreSQL) refuse updates: this migration moves the
    # data once, inside the migration's transaction, with the trigger lifted only for it.
    dialect = bind.dialect.name
    if dialect == "postgresql":
        op.execute("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_change")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
    for row_id, values in changes:
        bind.execute(sa.update(table).where(table.c.id == row_id).values(
            **{k: sa.null() if v is None else v for k, v in values.items()}))
    if dialect == "postgresql":
        op.execute("ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_no_change")
    elif dialect == "sqlite":
        _sqlite_append_only()


def _sqlite_append_only() -> None:
    """The triggers of 0001 (dropping or rebuilding the table on SQLite drops them)."""
    op.execute("CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries "
               "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END")
    op.execute("CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries "
               "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END")


def downgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_column("photos")
        batch.drop_column("team")
    if op.get_bind().dialect.name == "sqlite":  # batch mode rebuilt the table without its triggers
        _sqlite_append_only()

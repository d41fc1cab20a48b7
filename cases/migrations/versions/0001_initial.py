"""Initial schema: the walking skeleton's cases, audit trail, number sequences and outbox.

Revision ID: 0001
Revises:
Create Date: 2026-01-20

A database made by the skeleton's ``create_all`` has exactly this schema; :func:`nonsite.cases.db.migrate`
stamps such a database at 0001 before upgrading it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("draft", "confirmed", "approved", "returned", "dismissed", "dispatched", "rectified", "closed")


def _ts(name: str, nullable: bool = False, **kw: object) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, **kw)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(40), nullable=False, unique=True, comment="<prefix>-<year>-<6-digit seq>"),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True,
                  comment="Violation event id (idempotency)"),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("camera_name", sa.String(256), nullable=False),
        sa.Column("zone_id", sa.String(128), nullable=False),
        sa.Column("zone_name", sa.String(256), nullable=False),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        _ts("started_at"),
        _ts("confirmed_at"),
        sa.Column("dwell_s", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("track_ids", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False, comment="EvidenceItem dicts"),
        sa.Column("manifest_key", sa.String(512), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("signature_key", sa.String(512), nullable=False),
        sa.Column("seal_problems", sa.JSON(), nullable=False),
        sa.Column("thumbnail_key", sa.String(512), nullable=True),
        sa.Column("violation", sa.JSON(), nullable=False,
                  comment="The violation event as sealed (boxes, model, rule config hash)"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dismiss_reason", sa.String(32), nullable=True),
        sa.Column("dismiss_note", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")", name="case_status"),
    )
    op.create_index("ix_cases_camera_id", "cases", ["camera_id"])
    op.create_index("ix_cases_confirmed_at", "cases", ["confirmed_at"])
    op.create_index("ix_cases_type", "cases", ["type"])
    op.create_index("ix_cases_status", "cases", ["status"])

    op.create_table(
        "case_sequences",
        sa.Column("prefix", sa.String(12), primary_key=True),
        sa.Column("year", sa.Integer(), primary_key=True),
        sa.Column("last", sa.Integer(), nullable=False),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("published_at", nullable=True),
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])

    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="RESTRICT"), nullable=False),
        _ts("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("before_status", sa.String(16), nullable=True),
        sa.Column("after_status", sa.String(16), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_entries_case_id", "audit_entries", ["case_id"])

    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"
        )
        op.execute(
            "CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_delete")
    op.drop_table("audit_entries")
    op.drop_table("outbox")
    op.drop_table("case_sequences")
    op.drop_table("cases")

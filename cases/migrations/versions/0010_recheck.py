"""Camera re-check before closing (issue 15, docs/recheck.md): the re-check requests of rectified cases and the
after packages that answered them, and the newest re-check's state on the case.

Revision ID: 0010_recheck
Revises: 0009_stats
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_recheck"
down_revision = "0009_stats"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: a plain ALTER TABLE on SQLite too (no table rebuild that would touch the partial indexes).
    op.add_column("cases", sa.Column(
        "recheck_state", sa.String(16), nullable=True,
        comment="The newest camera re-check: pending | clear | present | unavailable (null: none requested)"))
    op.create_table(
        "case_rechecks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="RESTRICT"), nullable=False,
                  index=True),
        sa.Column("request_id", sa.String(128), nullable=False, unique=True,
                  comment="RecheckRequest.request_id (= the after package's event id)"),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("zone_id", sa.String(128), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False, comment="Detector classes looked for"),
        sa.Column("boxes_px", sa.JSON(), nullable=False,
                  comment="The original objects' boxes (pixels of the confirm still)"),
        sa.Column("clear_s", sa.Float(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False, comment="Who reported the case rectified"),
        sa.Column("answer_due_at", sa.DateTime(timezone=True), nullable=False,
                  comment="With no answer by then the re-check counts as unavailable (timeout + grace)"),
        sa.Column("state", sa.String(16), nullable=False, comment="pending | clear | present | unavailable"),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True,
                  comment="The frame (or instant) that decided the outcome"),
        sa.Column("after_event_id", sa.String(128), nullable=True),
        sa.Column("after_manifest_key", sa.String(512), nullable=True),
        sa.Column("after_manifest_sha256", sa.String(64), nullable=True),
        sa.Column("after_signature_key", sa.String(512), nullable=True),
        sa.Column("after_evidence", sa.JSON(), nullable=False, comment="EvidenceItem dicts of the after package"),
        sa.Column("detail", sa.JSON(), nullable=False,
                  comment="The RecheckResult as sealed (or why it counted as unavailable)"),
    )


def downgrade() -> None:
    op.drop_table("case_rechecks")
    op.drop_column("cases", "recheck_state")

"""The bureau's side of a case (issue 14): the team it is routed to, its grid and street, the current step's due
time, the reviewer's decision; supervision orders (督办).

Revision ID: 0006_bureau
Revises: 0005_audit_chain
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_bureau"
down_revision = "0005_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("team", sa.String(64), nullable=True,
                                   comment="Team id the case is routed to (organisation file; reassign changes it)"))
        batch.add_column(sa.Column("grid", sa.String(64), nullable=True, comment="Grid id of the camera when routed"))
        batch.add_column(sa.Column("street", sa.String(64), nullable=True, comment="Street id of that grid"))
        batch.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True,
                                   comment="First late instant of the current step (UTC; null: no limit)"))
        batch.add_column(sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=True,
                                   comment="When the case entered its current step (UTC)"))
        batch.add_column(sa.Column("due_soon_at", sa.DateTime(timezone=True), nullable=True,
                                   comment="From this instant the step is due soon (UTC)"))
        batch.add_column(sa.Column("due_step", sa.String(16), nullable=True,
                                   comment="The step due_at belongs to "
                                   "(confirm | review | dispatch | rectify | close)"))
        batch.add_column(sa.Column("decision", sa.String(16), nullable=True,
                                   comment="The reviewer's decision: warning | penalty | no_penalty | transfer"))
        batch.add_column(sa.Column("decision_amount_yuan", sa.Integer(), nullable=True,
                                   comment="The fine of a penalty decision (within the catalogue's range)"))
        batch.add_column(sa.Column("decision_reason", sa.Text(), nullable=False, server_default="",
                                   comment="Why (required for no_penalty)"))
    op.create_index("ix_cases_team_status_due", "cases", ["team", "status", "due_at"])
    op.create_index("ix_cases_status_due", "cases", ["status", "due_at"])
    op.create_table(
        "supervisions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="RESTRICT"), nullable=False,
                  index=True),
        sa.Column("instruction", sa.Text(), nullable=False, comment="What the supervisor orders (督办意见)"),
        sa.Column("new_deadline", sa.DateTime(timezone=True), nullable=True,
                  comment="The deadline the order sets (UTC)"),
        sa.Column("issued_by", sa.String(128), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_by", sa.String(128), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answer", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("supervisions")
    op.drop_index("ix_cases_status_due", table_name="cases")
    op.drop_index("ix_cases_team_status_due", table_name="cases")
    # Plain ALTER TABLE … DROP COLUMN (SQLite >= 3.35 has it): a batch "move and copy" of `cases` would drop the
    # table that the audit entries reference, which SQLite's foreign keys refuse once cases exist.
    for column in ("decision_reason", "decision_amount_yuan", "decision", "due_step", "due_soon_at",
                   "step_started_at", "due_at", "street", "grid", "team"):
        op.drop_column("cases", column)

"""Console notifications of the reminder job (issue 14): one row per notice and recipient, unique so a reminder
or escalation is stored (and sent) once; the case's whole deadline (限时办结, ``finish_due``); indexes for the
bureau's lists at 100,000 cases; ``config_changes``, the audit of the organisation file edited in the console.

Revision ID: 0007_notifications
Revises: 0006_bureau
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_notifications"
down_revision = "0006_bureau"
branch_labels = None
depends_on = None

OPEN_SQL = "status NOT IN ('closed', 'dismissed')"


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(200), nullable=False,
                  comment="The planner's notice key: case|step|due instant|kind|level"),
        sa.Column("recipient", sa.String(128), nullable=False, comment="Console user name it is for"),
        sa.Column("copy", sa.Boolean(), nullable=False, server_default=sa.false(),
                  comment="True: in copy (the assignee of an escalation)"),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("case_number", sa.String(40), nullable=False),
        sa.Column("team", sa.String(64), nullable=True, comment="The case's team when the notice was planned"),
        sa.Column("kind", sa.String(16), nullable=False, comment="reminder | escalation"),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False, comment="The deadline it is about (UTC)"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("key", "recipient", name="uq_notifications_key_recipient"),
    )
    op.create_table(
        "config_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("what", sa.String(32), nullable=False, comment="Which file: organisation"),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("before_sha256", sa.String(64), nullable=True),
        sa.Column("after_sha256", sa.String(64), nullable=False),
        sa.Column("after_text", sa.Text(), nullable=False, comment="The file as saved"),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_notifications_recipient_read", "notifications", ["recipient", "read_at", "id"])
    op.create_index("ix_notifications_case", "notifications", ["case_id"])
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("finish_due", sa.DateTime(timezone=True), nullable=True,
                                   comment="限时办结: when the whole case must be finished (UTC; from confirmation)"))
    # The queue sorted by due (ORDER BY due_at IS NULL, due_at, id: no deadline last) reads this index in order
    # instead of sorting every case; the month's counts per type / team read only the index (bench/README.md).
    op.create_index("ix_cases_due_order", "cases", [sa.text("(due_at IS NULL)"), "due_at", "id"])
    op.create_index("ix_cases_confirmed_type", "cases", ["confirmed_at", "type"])
    op.create_index("ix_cases_confirmed_team", "cases", ["confirmed_at", "team"])
    # The open work (a few thousand cases however long the history): the leader's dashboard and the reminder job
    # read this partial index only. Queries say exactly this condition (OPEN_SQL in cases/notifications.py).
    op.create_index("ix_cases_open", "cases", ["team", "status", "due_at", "due_soon_at"],
                    sqlite_where=sa.text(OPEN_SQL), postgresql_where=sa.text(OPEN_SQL))


def downgrade() -> None:
    op.drop_index("ix_cases_open", table_name="cases")
    op.drop_index("ix_cases_confirmed_team", table_name="cases")
    op.drop_index("ix_cases_confirmed_type", table_name="cases")
    op.drop_index("ix_cases_due_order", table_name="cases")
    op.drop_column("cases", "finish_due")  # plain DROP COLUMN: see 0006_bureau
    op.drop_index("ix_notifications_case", table_name="notifications")
    op.drop_index("ix_notifications_recipient_read", table_name="notifications")
    op.drop_table("notifications")
    op.drop_table("config_changes")

"""Console sessions kept server-side (logout, a password change and disabling a user end them for good,
across restarts); the user an API token acts for; when an admin last unlocked a user's logins.

Revision ID: 0004_sessions
Revises: 0003_note_columns
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_sessions"
down_revision = "0003_note_columns"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sid_hash", sa.String(64), nullable=False, unique=True,
                  comment="hex sha256 of the session id in the cookie (the id itself is never stored)"),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False, comment="Client address at login"),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=False, server_default="",
                  comment="logout | password_changed | disabled | revoked"),
    )
    op.create_index("ix_console_sessions_username", "console_sessions", ["username"])
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True,
                                   comment="The console user the token acts for (four-eyes counts them as one "
                                           "person); null: the token is its own identity"))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("unlocked_at", sa.DateTime(timezone=True), nullable=True,
                                   comment="When an admin last cleared the user's failed logins"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("unlocked_at")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("owner")
    op.drop_index("ix_console_sessions_username", table_name="console_sessions")
    op.drop_table("console_sessions")

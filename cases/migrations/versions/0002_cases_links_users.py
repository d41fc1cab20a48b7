"""Offender hint, repeat links, suggested disposition and legal-basis snapshot; users and API tokens;
the append-only audit trail enforced on PostgreSQL too.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only; write a new entry instead of changing one';
END;
$$ LANGUAGE plpgsql
"""


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("offender_plate", sa.String(32), nullable=True,
                                   comment="Plate text as read (normalised), when one was read"))
        batch.add_column(sa.Column("offender_hint", sa.JSON(), nullable=True,
                                   comment="The violation's OffenderHint (plate, confidence, format, crop role)"))
        batch.add_column(sa.Column("repeat_count", sa.Integer(), nullable=False, server_default="0",
                                   comment="Earlier linked cases that count as repeats"))
        batch.add_column(sa.Column("suggested_disposition", sa.String(16), nullable=False, server_default="manual",
                                   comment="warning | penalty | dispatch | manual (from the discretion table)"))
        batch.add_column(sa.Column("disposition", sa.JSON(), nullable=False, server_default=sa.text("'{}'"),
                                   comment="The discretion rule that matched: rule id, basis, dispatch team, "
                                           "summary"))
        batch.add_column(sa.Column("legal_basis", sa.JSON(), nullable=False, server_default=sa.text("'{}'"),
                                   comment="Snapshot of the catalogue entry applied when drafted (provisions, "
                                           "penalty, version)"))
        batch.add_column(sa.Column("dispatched_to", sa.String(256), nullable=False, server_default="",
                                   comment="Team the case was dispatched to"))
    op.create_index("ix_cases_offender_plate", "cases", ["offender_plate"])
    op.create_index("ix_cases_suggested_disposition", "cases", ["suggested_disposition"])

    op.create_table(
        "case_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("linked_case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, comment="same_zone | same_plate"),
        _ts("created_at"),
        sa.UniqueConstraint("case_id", "linked_case_id", "kind", name="uq_case_links"),
    )
    op.create_index("ix_case_links_case_id", "case_links", ["case_id"])
    op.create_index("ix_case_links_linked_case_id", "case_links", ["linked_case_id"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, comment="operator | reviewer | admin"),
        sa.Column("password_hash", sa.String(255), nullable=False, comment="argon2id hash (argon2-cffi)"),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("password_changed_at"),
        _ts("last_login_at", nullable=True),
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True, comment="hex sha256 of the token"),
        sa.Column("prefix", sa.String(16), nullable=False, comment="First characters of the token, to recognise it"),
        sa.Column("role", sa.String(16), nullable=False,
                  comment="Role the token acts with: operator | reviewer | admin"),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        _ts("revoked_at", nullable=True),
        _ts("last_used_at", nullable=True),
    )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
        op.execute(
            "CREATE TRIGGER audit_entries_no_change BEFORE UPDATE OR DELETE ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_truncate ON audit_entries")
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_change ON audit_entries")
        op.execute("DROP FUNCTION IF EXISTS audit_entries_append_only()")
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_index("ix_case_links_linked_case_id", table_name="case_links")
    op.drop_index("ix_case_links_case_id", table_name="case_links")
    op.drop_table("case_links")
    op.drop_index("ix_cases_suggested_disposition", table_name="cases")
    op.drop_index("ix_cases_offender_plate", table_name="cases")
    with op.batch_alter_table("cases") as batch:
        for col in ("dispatched_to", "legal_basis", "disposition", "suggested_disposition", "repeat_count",
                    "offender_hint", "offender_plate"):
            batch.drop_column(col)

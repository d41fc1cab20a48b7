"""The audit trail as a hash chain: each entry's position, the previous entry's hash and its own hash; the
chain head (one row, locked by writers). Existing entries are chained in id order.

Revision ID: 0005_audit_chain
Revises: 0004_sessions
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_audit_chain"
down_revision = "0004_sessions"
branch_labels = None
depends_on = None

_SQLITE_TRIGGER = ("CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries "
                   "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END")


def upgrade() -> None:
    from nonsite.cases.audit import GENESIS, entry_digest

    op.add_column("audit_entries", sa.Column(
        "chain_seq", sa.Integer(), nullable=True,
        comment="Position in the audit hash chain (1, 2, ...; set when written)"))
    op.add_column("audit_entries", sa.Column(
        "prev_hash", sa.String(64), nullable=True,
        comment="entry_hash of the previous entry of the chain (64 zeros for the first)"))
    op.add_column("audit_entries", sa.Column(
        "entry_hash", sa.String(64), nullable=True,
        comment="sha256 over this entry's content and prev_hash (nonsite.cases.audit)"))
    op.create_index("ix_audit_entries_chain_seq", "audit_entries", ["chain_seq"], unique=True)
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False, comment="chain_seq of the last entry (0: none yet)"),
        sa.Column("head_hash", sa.String(64), nullable=False, comment="entry_hash of the last entry"),
    )

    bind = op.get_bind()
    dialect = bind.dialect.name
    rows = bind.execute(sa.text(
        "SELECT id, case_id, at, actor, action, before_status, after_status, detail, team, photos FROM audit_entries "
        "ORDER BY id"
    )).all()
    # The append-only triggers refuse updates; this one migration fills the new columns of existing rows.
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
    elif dialect == "postgresql":
        op.execute("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_change")
    prev, seq = GENESIS, 0
    for r in rows:
        seq += 1
        digest = entry_digest(seq=seq, prev_hash=prev, case_id=r.case_id, at=r.at, actor=r.actor,
                              action=r.action, before_status=r.before_status, after_status=r.after_status,
                              detail=r.detail if r.detail is not None else {}, team=r.team, photos=r.photos)
        bind.execute(sa.text("UPDATE audit_entries SET chain_seq = :s, prev_hash = :p, entry_hash = :h "
                             "WHERE id = :id"), {"s": seq, "p": prev, "h": digest, "id": r.id})
        prev = digest
    if dialect == "sqlite":
        op.execute(_SQLITE_TRIGGER)
    elif dialect == "postgresql":
        op.execute("ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_no_change")
    bind.execute(sa.text("INSERT INTO audit_chain (id, seq, head_hash) VALUES (1, :s, :h)"), {"s": seq, "h": prev})


def downgrade() -> None:
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_entries_chain_seq", table_name="audit_entries")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("audit_entries", recreate="always") as batch:
            batch.drop_column("entry_hash")
            batch.drop_column("prev_hash")
            batch.drop_column("chain_seq")
        op.execute(_SQLITE_TRIGGER)
        op.execute("CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries "
                   "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END")
    else:
        op.drop_column("audit_entries", "entry_hash")
        op.drop_column("audit_entries", "prev_hash")
        op.drop_column("audit_entries", "chain_seq")

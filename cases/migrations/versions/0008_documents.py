"""Enforcement documents (执法文书, issue 15): numbered per series and year, the text as issued, and the record
of their service (送达).

Revision ID: 0008_documents
Revises: 0007_notifications
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_documents"
down_revision = "0007_notifications"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "document_sequences",
        sa.Column("series", sa.String(32), primary_key=True, comment="Document series (e.g. 责改, 罚告, 罚决)"),
        sa.Column("year", sa.Integer(), primary_key=True),
        sa.Column("last", sa.Integer(), nullable=False, comment="Last number handed out in the series and year"),
    )
    op.create_table(
        "enforcement_documents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="RESTRICT"), nullable=False,
                  index=True),
        sa.Column("kind", sa.String(32), nullable=False,
                  comment="rectification_order | penalty_notice | penalty_decision"),
        sa.Column("series", sa.String(32), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(128), nullable=False, unique=True,
                  comment="The document number as printed (e.g. X城管责改〔2026〕第0001号)"),
        sa.Column("party", sa.String(256), nullable=False, comment="当事人 as entered at issue"),
        sa.Column("filled", sa.JSON(), nullable=False, comment="Every placeholder's value at issue"),
        sa.Column("body", sa.JSON(), nullable=False, comment="The document as issued: title and paragraphs"),
        sa.Column("template_sha256", sa.String(64), nullable=False, comment="sha256 of the template file used"),
        sa.Column("issued_by", sa.String(128), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("series", "year", "seq", name="uq_enforcement_documents_series_year_seq"),
    )
    op.create_table(
        "document_services",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("document_id", sa.Integer(), sa.ForeignKey("enforcement_documents.id", ondelete="RESTRICT"),
                  nullable=False, index=True),
        sa.Column("method", sa.String(16), nullable=False,
                  comment="direct | left | post | electronic | announcement (送达方式)"),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False, comment="When it was served (UTC)"),
        sa.Column("recipient", sa.String(256), nullable=False, comment="Who received it (受送达人/代收人)"),
        sa.Column("receipt", sa.JSON(), nullable=True,
                  comment="The photo of the signed receipt: {key, sha256, content_type, bytes, name}"),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("document_services")
    op.drop_table("enforcement_documents")
    op.drop_table("document_sequences")

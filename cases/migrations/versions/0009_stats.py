"""Indexes for the statistics page and the overdue report at 100,000 cases (issue 14): a month's page and report
read only that month's cases, the open ones and their audit entries, however long the history.

- ``ix_cases_camera_place`` (camera_id, camera_name, lat, lon): the cameras' names and mean places
  (``reports.camera_places``) from the index alone, without reading the table's rows;
- ``ix_cases_updated_at``: the overdue report's "finished after the instant" half (the other half, the open
  statuses, uses ``ix_cases_status``);
- ``ix_audit_entries_case_status_at`` (case_id, after_status, at): the first time of each status of the period's
  cases from the index alone.

Revision ID: 0009_stats
Revises: 0008_documents
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0009_stats"
down_revision = "0008_documents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cases_camera_place", "cases", ["camera_id", "camera_name", "lat", "lon"])
    op.create_index("ix_cases_updated_at", "cases", ["updated_at"])
    op.create_index("ix_audit_entries_case_status_at", "audit_entries", ["case_id", "after_status", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_entries_case_status_at", table_name="audit_entries")
    op.drop_index("ix_cases_updated_at", table_name="cases")
    op.drop_index("ix_cases_camera_place", table_name="cases")

"""The outbox ledger: one row per issue and subscriber.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message_id", sa.Text()),
        sa.Column("provider_id", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_reply", sa.Text()),
        sa.Column("next_attempt", UTCDateTime()),
        sa.Column("claimed_at", UTCDateTime()),
        sa.Column("worker", sa.String(100)),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("changed", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["issue_id"], ["issues.id"], name="fk_outbox_issue_id_issues", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("issue_id", "subscriber_id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_issue_status", "outbox", ["issue_id", "status", "subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_issue_status", table_name="outbox")
    op.drop_table("outbox")

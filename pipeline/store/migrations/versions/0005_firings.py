"""Schedule firings, one row per (schedule, due time).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "firings",
        sa.Column("schedule", sa.String(100), nullable=False),
        sa.Column("due", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("issue_number", sa.Integer()),
        sa.Column("started", UTCDateTime()),
        sa.Column("finished", UTCDateTime()),
        sa.PrimaryKeyConstraint("schedule", "due", name="pk_firings"),
    )


def downgrade() -> None:
    op.drop_table("firings")

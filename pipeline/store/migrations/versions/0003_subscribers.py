"""Subscribers of each list.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("list", sa.String(100), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("email_key", sa.Text(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("language", sa.String(20)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("changed", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscribers"),
        sa.UniqueConstraint("list", "email_key", name="uq_subscribers_list_email_key"),
    )
    op.create_index("ix_subscribers_list_status_id", "subscribers", ["list", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_list_status_id", table_name="subscribers")
    op.drop_table("subscribers")

"""Items and the conditional-GET state of every fetched URL.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("author", sa.Text()),
        sa.Column("author_role", sa.Text()),
        sa.Column("published", UTCDateTime()),
        sa.Column("modified", UTCDateTime()),
        sa.Column("summary", sa.Text()),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("image", sa.Text()),
        sa.Column("image_alt", sa.Text()),
        sa.Column("language", sa.String(20)),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
    )
    op.create_index("ix_items_source_published", "items", ["source", "published"])
    op.create_index("ix_items_first_seen", "items", ["first_seen"])
    op.create_table(
        "fetch_state",
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text()),
        sa.Column("last_modified", sa.Text()),
        sa.Column("links", sa.Text()),
        sa.Column("checked", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("url", name="pk_fetch_state"),
    )


def downgrade() -> None:
    op.drop_table("fetch_state")
    op.drop_index("ix_items_first_seen", table_name="items")
    op.drop_index("ix_items_source_published", table_name="items")
    op.drop_table("items")

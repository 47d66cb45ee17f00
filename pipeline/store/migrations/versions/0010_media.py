"""Lead images fetched once at collect time and kept by flygblad (``media``).

One row per image URL an item names: whether it was fetched, and if so the
content hash its files are stored under (``{digest}-{width}.{ext}`` in the
media folder next to the feeds), its format and its size in pixels; if not,
why, and how many times it was tried. Emails and feeds show an item's image
from these files only: never hot-linked from the source.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("url_key", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("digest", sa.String(64)),
        sa.Column("ext", sa.String(8)),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("reason", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tried", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("url_key", name="pk_media"),
    )


def downgrade() -> None:
    op.drop_table("media")

"""Drafts: what a communicator decided about a list's next issue before it is frozen.

``drafts`` holds one row per list with an open draft: the editor's note (Markdown), subject and
preheader overrides, and when and by whom it was approved. ``draft_items`` holds the choices about
single items: left out, forced in, placed at a position, a shorter summary. The items themselves are
still "what is new", computed when the draft is shown or frozen, so a collect keeps adding to it.
Freezing the list's next issue uses these choices and then clears them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column("list", sa.String(100), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("subject", sa.Text()),
        sa.Column("preheader", sa.Text()),
        sa.Column("approved_at", UTCDateTime()),
        sa.Column("approved_by", sa.Text()),
        sa.Column("changed", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("list", name="pk_drafts"),
    )
    op.create_table(
        "draft_items",
        sa.Column("list", sa.String(100), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("included", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("position", sa.Integer()),
        sa.Column("summary", sa.Text()),
        sa.PrimaryKeyConstraint("list", "item_id", name="pk_draft_items"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_draft_items_item_id_items", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("draft_items")
    op.drop_table("drafts")

"""One item in several sources; entries without a title of their own (notes).

``item_sources`` says which sources list an item, with the category each gives it and when
each first saw it: a WordPress RSS + Atom pair, or a category feed inside the main feed,
both list the same post, which is stored once and belongs to each (before, the second
source came out empty and its ``category = "leader"`` never applied). The item's own
``source`` stays the one that collected it first: its content is that source's.

``items.note`` marks an entry that had no title (RSS 2.0 allows it: microblogs, link
blogs); its title is made from the first words of its text.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE ADD COLUMN, not a batch alteration: on SQLite that rebuilds ``items``, and dropping the old
    # table fails where issues refer to its rows (FOREIGN KEY constraint failed).
    op.add_column("items", sa.Column("note", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "item_sources",
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "source", name="pk_item_sources"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_item_sources_item_id_items", ondelete="CASCADE"),
    )
    op.create_index("ix_item_sources_source_first_seen", "item_sources", ["source", "first_seen"])
    op.execute(
        "INSERT INTO item_sources (item_id, source, category, first_seen) "
        "SELECT id, source, category, first_seen FROM items"
    )


def downgrade() -> None:
    op.drop_index("ix_item_sources_source_first_seen", table_name="item_sources")
    op.drop_table("item_sources")
    op.drop_column("items", "note")  # SQLite 3.35 and newer drop a column in place

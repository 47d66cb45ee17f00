"""Click counts per issue and link, aggregate only (``track_clicks = true`` lists).

A tracked link in an issue goes through ``/c/{token}``: the token is signed and names the list, the
issue number and the target URL, nothing about the recipient. Each follow adds one to the count of
that (list, number, url); who clicked is never known, so it is never stored.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "link_clicks",
        sa.Column("list", sa.String(100), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("url_key", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("list", "number", "url_key", name="pk_link_clicks"),
    )


def downgrade() -> None:
    op.drop_table("link_clicks")

"""What each origin's robots.txt said, kept a day, so a collect does not ask every host again each run.

RFC 9309 2.4 lets a crawler use a fetched robots.txt for up to 24 hours. ``kind`` is ``rules``
(with ``body``, the file's text), ``none`` (4xx: no rules) or ``disallow`` (5xx: everything
disallowed); an unreachable file is not kept.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "robots",
        sa.Column("origin", sa.Text, primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("fetched", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("robots")

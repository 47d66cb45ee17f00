"""When a list's editors were last told that its draft waits for their approval.

A firing that finds an unapproved draft mails the editors the issue; ``drafts.notified_at`` keeps
the next firings from mailing them again until the draft changes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("drafts", sa.Column("notified_at", UTCDateTime()))


def downgrade() -> None:
    op.drop_column("drafts", "notified_at")

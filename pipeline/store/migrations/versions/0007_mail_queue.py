"""The queue of transactional mail (confirmations): stored, then sent and retried like the outbox.

One row per message to one subscriber; at most one unsent confirmation per
subscriber (a partial unique index), so asking again never queues a second.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UNSENT = "status IN ('pending', 'sending', 'deferred')"


def upgrade() -> None:
    op.create_table(
        "mail_queue",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("list", sa.String(100), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Text()),
        sa.Column("last_reply", sa.Text()),
        sa.Column("next_attempt", UTCDateTime()),
        sa.Column("claimed_at", UTCDateTime()),
        sa.Column("worker", sa.String(100)),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("changed", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mail_queue"),
    )
    op.create_index("ix_mail_queue_status", "mail_queue", ["status", "next_attempt"])
    op.create_index(
        "uq_mail_queue_unsent",
        "mail_queue",
        ["kind", "subscriber_id"],
        unique=True,
        sqlite_where=sa.text(UNSENT),
        postgresql_where=sa.text(UNSENT),
    )


def downgrade() -> None:
    op.drop_index("uq_mail_queue_unsent", table_name="mail_queue")
    op.drop_index("ix_mail_queue_status", table_name="mail_queue")
    op.drop_table("mail_queue")

"""Subscriber ids are never reused (SQLite AUTOINCREMENT).

Without it SQLite hands the highest id out again after that subscriber was
removed, and an old unsubscribe link (signed over the id) then unsubscribed
the next person who got it. PostgreSQL's sequences never reuse a value.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("subscribers", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("subscribers", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass

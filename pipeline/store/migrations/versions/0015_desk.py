"""The communicator's desk: admin accounts and their sessions, and each source's last collect.

``admins`` holds the accounts ``flygblad admin add`` makes (an argon2id hash, never the
password); ``admin_sessions`` the signed-in browsers, by the SHA-256 of their cookie (a
stolen database opens no session); ``source_runs`` what the last collect of each source did,
for the admin's sources page.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admins",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("last_login", UTCDateTime()),
        sa.UniqueConstraint("email", name="uq_admins_email"),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("admin_id", sa.Integer, sa.ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("seen", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "source_runs",
        sa.Column("source", sa.String(100), primary_key=True),
        sa.Column("finished", UTCDateTime(), nullable=False),
        sa.Column("new", sa.Integer, nullable=False),
        sa.Column("updated", sa.Integer, nullable=False),
        sa.Column("unchanged", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("problems", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("source_runs")
    op.drop_table("admin_sessions")
    op.drop_table("admins")

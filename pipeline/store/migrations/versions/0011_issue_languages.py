"""Each subscriber's language: an issue rendered in every language its subscribers read.

``issue_versions`` holds an issue's other renderings (the list's own language stays in
``issues``): the same items, number and placeholders, with the templates' texts and dates
in another language. ``outbox.language`` is the subscriber's language when the outbox was
made, so a send picks the rendering each recipient reads.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("language", sa.String(20)))
    op.create_table(
        "issue_versions",
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(20), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("preheader", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("issue_id", "language", name="pk_issue_versions"),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["issues.id"], name="fk_issue_versions_issue_id_issues", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("issue_versions")
    op.drop_column("outbox", "language")

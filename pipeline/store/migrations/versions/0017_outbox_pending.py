"""PostgreSQL: a partial index of each issue's pending rows, in subscriber order, for the send's claim.

With statistics (flygblad analyses a new outbox; autovacuum does it anyway), PostgreSQL judged walking
the primary key and filtering on ``status`` as cheap as ``ix_outbox_issue_status``, and every claim then
stepped over the rows already sent: quadratic in the list. This index holds only pending rows, so the
claim's walk starts at the first one whatever the planner believes. SQLite plans the claim without
statistics and keeps using ``ix_outbox_issue_status``: it gets no such index.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_outbox_pending ON outbox (issue_id, subscriber_id) WHERE status = 'pending'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_outbox_pending")

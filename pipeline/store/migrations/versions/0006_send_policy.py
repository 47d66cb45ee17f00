"""Invariants the database enforces for the send policy.

* ``lists``: one row per list, locked by every freeze of that list (a row lock
  on PostgreSQL, the write lock on SQLite), so "what is new" and "the next
  number" are decided by one process at a time;
* at most one issue of a list is ``frozen`` or ``sending`` (a partial unique
  index); older databases that already have several keep the oldest open and
  the others become ``held`` (sent after it, oldest first);
* an item is in at most one issue of a list (``issue_items.list`` with a unique
  index; rows from before this revision that broke the rule keep their issue,
  with ``list`` left NULL);
* ``issues.paused``: why an unfinished issue stopped, for ``flygblad issues``;
* ``firings.worker``: who runs a firing, so a firing whose process died is
  found and recorded as interrupted instead of ``running`` forever.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN = "status IN ('frozen', 'sending')"


def upgrade() -> None:
    op.create_table(
        "lists",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("locked_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("name", name="pk_lists"),
    )
    with op.batch_alter_table("issues") as batch:
        batch.add_column(sa.Column("paused", sa.Text()))
    with op.batch_alter_table("issue_items") as batch:
        batch.add_column(sa.Column("list", sa.String(100)))
    with op.batch_alter_table("firings") as batch:
        batch.add_column(sa.Column("worker", sa.String(100)))

    bind = op.get_bind()
    issues = sa.table(
        "issues", sa.column("id"), sa.column("list"), sa.column("number"), sa.column("status"), sa.column("paused")
    )
    issue_items = sa.table("issue_items", sa.column("issue_id"), sa.column("item_id"), sa.column("list"))

    # Several open issues of one list (the race this revision closes): the oldest stays open.
    rows = bind.execute(sa.select(issues.c.id, issues.c.list, issues.c.number).where(sa.text(OPEN))).all()
    oldest: dict[str, tuple[int, int]] = {}
    for row in sorted(rows, key=lambda r: r.number):
        if row.list not in oldest:
            oldest[row.list] = (row.id, row.number)
            continue
        bind.execute(
            sa.update(issues)
            .where(issues.c.id == row.id)
            .values(
                status="held",
                paused=f"held: issue {oldest[row.list][1]} of this list was still unfinished; "
                "it is sent after that one",
            )
        )

    # Each item keeps the first issue of a list it was in.
    seen: set[tuple[str, str]] = set()
    members = bind.execute(
        sa.select(issue_items.c.issue_id, issue_items.c.item_id, issues.c.list, issues.c.number)
        .select_from(issue_items.join(issues, issues.c.id == issue_items.c.issue_id))
        .order_by(issues.c.list, issues.c.number)
    ).all()
    for member in members:
        key = (member.list, member.item_id)
        if key in seen:
            continue
        seen.add(key)
        bind.execute(
            sa.update(issue_items)
            .where(issue_items.c.issue_id == member.issue_id, issue_items.c.item_id == member.item_id)
            .values(list=member.list)
        )

    op.create_index("uq_issue_items_list_item", "issue_items", ["list", "item_id"], unique=True)
    op.create_index(
        "uq_issues_open_per_list",
        "issues",
        ["list"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("uq_issues_open_per_list", table_name="issues")
    op.drop_index("uq_issue_items_list_item", table_name="issue_items")
    with op.batch_alter_table("firings") as batch:
        batch.drop_column("worker")
    with op.batch_alter_table("issue_items") as batch:
        batch.drop_column("list")
    with op.batch_alter_table("issues") as batch:
        batch.drop_column("paused")
    op.drop_table("lists")

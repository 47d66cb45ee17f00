"""The store's drafts: a communicator's choices about each list's next issue (note, subject, items, approval)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from pipeline.store.base import StoreBase, _now
from pipeline.store.schema import draft_items, drafts
from pipeline.types import DraftChoices, DraftItem

#: The fields of a draft a communicator edits; any edit withdraws an approval.
DRAFT_FIELDS = ("note", "subject", "preheader")
ITEM_FIELDS = ("excluded", "included", "position", "summary")


class DraftsMixin(StoreBase):
    """Drafts: one per list, cleared when the list's next issue is frozen."""

    def draft_choices(self, list_name: str) -> DraftChoices:
        """What was decided about the list's next issue (an empty choice when nothing was)."""
        with self.engine.connect() as connection:
            row = connection.execute(select(drafts).where(drafts.c.list == list_name)).first()
            rows = connection.execute(select(draft_items).where(draft_items.c.list == list_name)).all()
        items = {
            r.item_id: DraftItem(r.item_id, bool(r.excluded), bool(r.included), r.position, r.summary) for r in rows
        }
        if row is None:
            return DraftChoices(list_name, items=items)
        return DraftChoices(
            list_name,
            row.note,
            row.subject,
            row.preheader,
            row.approved_at,
            row.approved_by,
            items=items,
            changed=row.changed,
            notified_at=row.notified_at,
        )

    def _touch(self, connection: Connection, list_name: str, **values: Any) -> None:
        """Update the draft row (made when missing) with *values*; an edit withdraws the approval."""
        values = {"changed": _now(), "approved_at": None, "approved_by": None, **values}
        changed = connection.execute(update(drafts).where(drafts.c.list == list_name).values(**values)).rowcount
        if not changed:
            connection.execute(insert(drafts).values(list=list_name, **values))

    def edit_draft(self, list_name: str, **values: str | None) -> None:
        """Set the note, subject or preheader of the list's draft (None: back to the default)."""
        unknown = set(values) - set(DRAFT_FIELDS)
        if unknown:
            raise ValueError(f"not a draft field: {', '.join(sorted(unknown))}")
        with self._write() as connection:
            self._touch(connection, list_name, **values)

    def edit_draft_item(self, list_name: str, item_id: str, **values: Any) -> None:
        """Record a choice about one item (left out, put in, placed, shortened)."""
        unknown = set(values) - set(ITEM_FIELDS)
        if unknown:
            raise ValueError(f"not a draft item field: {', '.join(sorted(unknown))}")
        mine = (draft_items.c.list == list_name) & (draft_items.c.item_id == item_id)
        with self._write() as connection:
            changed = connection.execute(update(draft_items).where(mine).values(**values)).rowcount
            if not changed:
                connection.execute(insert(draft_items).values(list=list_name, item_id=item_id, **values))
            self._touch(connection, list_name)

    def place_draft_items(self, list_name: str, order: list[str]) -> None:
        """Give the items of *order* their positions 1, 2, 3 … in one write."""
        with self._write() as connection:
            for position, item_id in enumerate(order, start=1):
                mine = (draft_items.c.list == list_name) & (draft_items.c.item_id == item_id)
                if not connection.execute(update(draft_items).where(mine).values(position=position)).rowcount:
                    connection.execute(insert(draft_items).values(list=list_name, item_id=item_id, position=position))
            self._touch(connection, list_name)

    def approve_draft(self, list_name: str, by: str) -> None:
        """Approve the list's draft as it is now (an edit after this withdraws it)."""
        with self._write() as connection:
            self._touch(connection, list_name)
            connection.execute(
                update(drafts).where(drafts.c.list == list_name).values(approved_at=_now(), approved_by=by)
            )

    def mark_notified(self, list_name: str) -> None:
        """Record that the list's editors were told its draft waits for them (an edit makes it due again)."""
        now = _now()
        with self._write() as connection:
            changed = connection.execute(update(drafts).where(drafts.c.list == list_name).values(notified_at=now))
            if not changed.rowcount:
                connection.execute(insert(drafts).values(list=list_name, changed=now, notified_at=now))

    def clear_draft(self, list_name: str, connection: Connection | None = None) -> None:
        """Forget the list's draft choices (its next issue was frozen with them)."""
        if connection is not None:
            connection.execute(delete(draft_items).where(draft_items.c.list == list_name))
            connection.execute(delete(drafts).where(drafts.c.list == list_name))
            return
        with self._write() as write:
            self.clear_draft(list_name, write)

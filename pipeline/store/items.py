"""The store's items: save, update in place, list newest first."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    func,
    insert,
    select,
    update,
)

from pipeline.store.base import StoreBase, _now
from pipeline.store.fetch_state import save_state
from pipeline.store.schema import (
    issue_items,
    items,
)
from pipeline.types import (
    Item,
    StoredItem,
    Validators,
)

log = logging.getLogger(__name__)


Outcome = Literal["new", "updated", "unchanged"]
_ITEM_FIELDS = [f.name for f in fields(Item)]


class ItemsMixin(StoreBase):
    """Items: save, update in place, list newest first."""

    def save_item(
        self,
        item: Item,
        *,
        fetched_url: str | None = None,
        validators: Validators | None = None,
        now: datetime | None = None,
    ) -> Outcome:
        """Insert a new item, update a changed one in place, or leave an unchanged one.

        The page's validators are stored in the same transaction, so a page is
        only ever answered with 304 once its item is safely in the store.
        """
        now = now or _now()
        digest = item.content_hash()
        values = {name: getattr(item, name) for name in _ITEM_FIELDS}
        with self._write() as connection:
            row = connection.execute(select(items.c.content_hash, items.c.source).where(items.c.id == item.id)).first()
            if row is None:
                connection.execute(insert(items).values(**values, content_hash=digest, first_seen=now, updated=now))
                outcome: Outcome = "new"
            elif row.source != item.source:
                log.info("%s is already collected by source %r; %r skips it", item.id, row.source, item.source)
                outcome = "unchanged"
            elif row.content_hash != digest:
                connection.execute(
                    update(items).where(items.c.id == item.id).values(**values, content_hash=digest, updated=now)
                )
                outcome = "updated"
            else:
                outcome = "unchanged"
            if fetched_url and validators:
                save_state(connection, fetched_url, validators, None, now)
        return outcome

    def items(self, *, source: str | None = None, limit: int | None = None) -> list[StoredItem]:
        """Items newest first (by published date, else first seen), optionally of one source."""
        return list(self.iter_items(source=source, limit=limit))

    def iter_items(self, *, source: str | None = None, limit: int | None = None) -> Iterator[StoredItem]:
        """Like :meth:`items`, streamed."""
        query = select(items).order_by(items.c.published.desc().nulls_last(), items.c.first_seen.desc(), items.c.id)
        if source is not None:
            query = query.where(items.c.source == source)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                yield self._stored(row._mapping)

    def count_items(self) -> int:
        """How many items the store holds."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(items)).scalar_one())

    def items_first_seen_after(
        self, sources: Iterable[str], since: datetime | None, *, not_in_list: str | None = None
    ) -> list[StoredItem]:
        """Items of *sources* first seen after *since* (all of them when it is None).

        With *not_in_list*, only items in no issue of that list yet.
        """
        query = select(items).where(items.c.source.in_(list(sources)))
        if since is not None:
            query = query.where(items.c.first_seen > since)
        if not_in_list is not None:
            taken = select(issue_items.c.item_id).where(issue_items.c.list == not_in_list)
            query = query.where(items.c.id.not_in(taken))
        with self.engine.connect() as connection:
            return [self._stored(row._mapping) for row in connection.execute(query.order_by(items.c.id))]

    def items_by_id(self, ids: Sequence[str]) -> list[StoredItem]:
        """The items with these ids, in the order given."""
        with self.engine.connect() as connection:
            rows = {
                row.id: self._stored(row._mapping)
                for row in connection.execute(select(items).where(items.c.id.in_(list(ids))))
            }
        return [rows[i] for i in ids if i in rows]

    @staticmethod
    def _stored(mapping: Any) -> StoredItem:
        return StoredItem(
            item=Item(**{name: mapping[name] for name in _ITEM_FIELDS}),
            content_hash=mapping["content_hash"],
            first_seen=mapping["first_seen"],
            updated=mapping["updated"],
        )

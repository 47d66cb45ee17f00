"""The store's items: save, update in place, list newest first; one item may be listed by several sources.

An item is stored once, under its id (canonical URL or feed guid), with the content of the
source that collected it first (``items.source``). Every source that lists it has a row in
``item_sources`` with the category it gives and when it first saw it, so each source's feed
has it and a list built from several sources takes the strongest category (leader over
article) and the first time one of its sources saw it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)

from pipeline.store.base import Compiled, StoreBase, _now
from pipeline.store.fetch_state import save_state
from pipeline.store.schema import (
    UTCDateTime,
    issue_items,
    item_sources,
    items,
)
from pipeline.types import (
    Category,
    Item,
    StoredItem,
    Validators,
)

log = logging.getLogger(__name__)


Outcome = Literal["new", "updated", "unchanged"]
_ITEM_FIELDS = [f.name for f in fields(Item)]
_ITEM_TIMES = ("published", "modified", "first_seen", "updated")


class _Inserts:
    """The INSERTs of new items and of the sources that list them, compiled once per dialect and run with the
    driver's executemany.

    Through ``Connection.execute`` SQLAlchemy put every row's every value through its type's processing, one
    call each, and a time through three; a first collect of many feeds does most of its storing after its
    last page (bench.hosts). Here only the times are converted, by the same processor, each distinct one once:
    a batch of 1,000 new items from 50 sources, 46 -> 32 µs an item on SQLite, 92 -> 80 on PostgreSQL (CPU,
    interleaved runs).
    """

    def __init__(self, dialect: Any) -> None:
        self.items = Compiled(insert(items), dialect, [*_ITEM_FIELDS, "content_hash", *_ITEM_TIMES[2:]])
        self.sources = Compiled(insert(item_sources), dialect, ["item_id", "source", "category", "first_seen"])
        self._to_db = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)

    def run(
        self, connection: Connection, statement: Compiled, rows: list[dict[str, Any]], times: Sequence[str]
    ) -> None:
        """*statement* with every one of *rows*: the names in *times* converted as the column type would."""
        if self._to_db is not None:
            convert, converted = self._to_db, dict[Any, Any]()  # a batch's rows share first_seen and updated
            rows = [{**row, **{name: _once(converted, convert, row[name]) for name in times}} for row in rows]
        connection.exec_driver_sql(statement.sql, [statement.args(row) for row in rows])


def _once(done: dict[Any, Any], convert: Any, value: Any) -> Any:
    """``convert(value)``, remembered in *done*."""
    if value not in done:
        done[value] = convert(value)
    return done[value]


_INSERTS: dict[str, _Inserts] = {}


def _inserts(dialect: Any) -> _Inserts:
    if dialect.name not in _INSERTS:
        _INSERTS[dialect.name] = _Inserts(dialect)
    return _INSERTS[dialect.name]


def _strongest(sources: Iterable[str] | None = None) -> Any:
    """SQL for an item's category among *sources* (all when None): leader when any of them says leader."""
    condition = and_(item_sources.c.item_id == items.c.id, item_sources.c.category == "leader")
    if sources is not None:
        condition = and_(condition, item_sources.c.source.in_(list(sources)))
    return case((exists().where(condition), literal("leader")), else_=items.c.category)


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
        """Insert a new item, update a changed one in place, or leave an unchanged one (see :meth:`save_items`)."""
        [outcome] = self.save_items([(item, fetched_url, validators)], now=now)
        return outcome

    def save_items(
        self,
        found: Sequence[tuple[Item, str | None, Validators | None]],
        *,
        now: datetime | None = None,
        listings: Sequence[tuple[str, Validators, list[str]]] = (),
    ) -> list[Outcome]:
        """Save items (each with the page it was read from and that page's validators) in one transaction.

        Each is inserted when new, updated in place when changed, or left when unchanged; and each
        notes that ``item.source`` lists it. For a source other than the one that collected it first,
        an item it had not listed yet is "new" (to that source; the content stays the first source's,
        so two sources never take turns rewriting it). The pages' validators are stored in the same
        transaction, so a page is only ever answered with 304 once its item is safely in the store;
        so are the *listings* (each an index page's or feed's URL, validators and links: a collect saves
        several sources' items and listings at once).
        The statements are compiled once for the batch and executed with all its rows (executemany):
        building one per item was half the CPU of a first collect of many feeds (bench.hosts, py-spy).
        """
        now = now or _now()
        ids = list(dict.fromkeys(item.id for item, _u, _v in found))
        outcomes: list[Outcome] = []
        inserts: dict[str, dict[str, Any]] = {}
        updates: dict[str, dict[str, Any]] = {}
        source_rows: dict[tuple[str, str], dict[str, Any]] = {}
        recategorised: dict[tuple[str, str], str] = {}
        with self._write() as connection:
            stored: dict[str, tuple[str, str]] = {}
            listed: dict[tuple[str, str], str] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for row in connection.execute(
                    select(items.c.id, items.c.content_hash, items.c.source).where(items.c.id.in_(chunk))
                ):
                    stored[row.id] = (row.content_hash, row.source)
                for row in connection.execute(
                    select(item_sources.c.item_id, item_sources.c.source, item_sources.c.category).where(
                        item_sources.c.item_id.in_(chunk)
                    )
                ):
                    listed[(row.item_id, row.source)] = row.category
            for item, _url, _validators in found:
                digest = item.content_hash()
                values = {name: getattr(item, name) for name in _ITEM_FIELDS}
                known = stored.get(item.id)
                outcome: Outcome = "unchanged"
                if known is None:
                    inserts[item.id] = {**values, "content_hash": digest, "first_seen": now, "updated": now}
                    outcome = "new"
                elif known[1] == item.source and known[0] != digest:
                    target = inserts.get(item.id) or updates.setdefault(item.id, {"b_id": item.id})
                    target.update(values, content_hash=digest, updated=now)
                    outcome = "updated"
                stored[item.id] = (digest, known[1] if known else item.source)
                key = (item.id, item.source)
                if key not in listed:
                    source_rows[key] = {
                        "item_id": item.id,
                        "source": item.source,
                        "category": item.category,
                        "first_seen": now,
                    }
                    listed[key] = item.category
                    if known is not None:
                        log.info("%s, collected by source %r, is also in %r", item.id, known[1], item.source)
                        outcome = "new"
                elif listed[key] != item.category:  # the source's category changed in the config
                    recategorised[key] = listed[key] = item.category
                    if key in source_rows:
                        source_rows[key]["category"] = item.category
                outcomes.append(outcome)
            fast = _inserts(connection.dialect)
            if inserts:
                fast.run(connection, fast.items, list(inserts.values()), _ITEM_TIMES)
            if updates:  # the SET clause is made from the rows' keys; b_id picks the row
                connection.execute(update(items).where(items.c.id == bindparam("b_id")), list(updates.values()))
            if source_rows:
                fast.run(connection, fast.sources, list(source_rows.values()), ("first_seen",))
            for (item_id, source), category in recategorised.items():
                if (item_id, source) in source_rows:
                    continue
                connection.execute(
                    update(item_sources)
                    .where(item_sources.c.item_id == item_id, item_sources.c.source == source)
                    .values(category=category)
                )
            for _item, fetched_url, validators in found:
                if fetched_url and validators:
                    save_state(connection, fetched_url, validators, None, now)
            for url, validators, links in listings:
                save_state(connection, url, validators, links, now)
        return outcomes

    def items(self, *, source: str | None = None, limit: int | None = None) -> list[StoredItem]:
        """Items newest first (by published date, else first seen); of one source, with the category it gives."""
        return list(self.iter_items(source=source, limit=limit))

    def iter_items(self, *, source: str | None = None, limit: int | None = None) -> Iterator[StoredItem]:
        """Like :meth:`items`, streamed."""
        if source is None:
            query = select(items, _strongest().label("category_in"), items.c.first_seen.label("first_seen_in"))
        else:
            query = select(
                items, item_sources.c.category.label("category_in"), item_sources.c.first_seen.label("first_seen_in")
            ).join(item_sources, and_(item_sources.c.item_id == items.c.id, item_sources.c.source == source))
        query = query.order_by(items.c.published.desc().nulls_last(), items.c.first_seen.desc(), items.c.id)
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
        """Items that one of *sources* first saw after *since* (all of them when it is None), each with the
        strongest category those sources give it and the first time one of them saw it.

        With *not_in_list*, only items in no issue of that list yet.
        """
        chosen = list(sources)
        listed = (
            select(item_sources.c.item_id, func.min(item_sources.c.first_seen).label("first_seen_in"))
            .where(item_sources.c.source.in_(chosen))
            .group_by(item_sources.c.item_id)
            .subquery()
        )
        query = select(items, _strongest(chosen).label("category_in"), listed.c.first_seen_in).join(
            listed, listed.c.item_id == items.c.id
        )
        if since is not None:
            query = query.where(listed.c.first_seen_in > since)
        if not_in_list is not None:
            taken = select(issue_items.c.item_id).where(issue_items.c.list == not_in_list)
            query = query.where(items.c.id.not_in(taken))
        with self.engine.connect() as connection:
            return [self._stored(row._mapping) for row in connection.execute(query.order_by(items.c.id))]

    def item_sources(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """The sources that list each of these items, the first one first."""
        found: dict[str, list[str]] = {}
        query = (
            select(item_sources.c.item_id, item_sources.c.source)
            .where(item_sources.c.item_id.in_(list(ids)))
            .order_by(item_sources.c.item_id, item_sources.c.first_seen, item_sources.c.source)
        )
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                found.setdefault(row.item_id, []).append(row.source)
        return found

    def items_in_list_issues(self, list_name: str, ids: Sequence[str]) -> set[str]:
        """Those of *ids* that are in an issue of the list already."""
        with self.engine.connect() as connection:
            return set(
                connection.execute(
                    select(issue_items.c.item_id).where(
                        issue_items.c.list == list_name, issue_items.c.item_id.in_(list(ids))
                    )
                ).scalars()
            )

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
        item = Item(**{name: mapping[name] for name in _ITEM_FIELDS})
        category: Category | None = mapping.get("category_in")
        if category and category != item.category:
            item = replace(item, category=category)
        return StoredItem(
            item=item,
            content_hash=mapping["content_hash"],
            first_seen=mapping.get("first_seen_in") or mapping["first_seen"],
            updated=mapping["updated"],
        )

"""The store: items and fetch state in SQLite or PostgreSQL (SQLAlchemy Core).

Interface of this stage: :class:`Store` (open with :meth:`Store.open`), and
:class:`StoredItem`, an :class:`~pipeline.sources.Item` with the times the
store keeps for it. The schema is created and upgraded by Alembic migrations
when a store is opened, so a new database and an old one end up the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from pipeline.errors import StoreError
from pipeline.sources import Item, Validators
from pipeline.store.schema import fetch_state, items

log = logging.getLogger(__name__)

Outcome = Literal["new", "updated", "unchanged"]
_ITEM_FIELDS = [f.name for f in fields(Item)]


@dataclass(frozen=True)
class StoredItem:
    """An item as the store has it: the item, a digest of it, and when it was first and last changed."""

    item: Item
    content_hash: str
    first_seen: datetime
    updated: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the web side, a second command) work while a collect writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Store:
    """Reads and writes items and fetch state. Use as a context manager."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to *url* and bring its schema up to date."""
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, future=True, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError, OSError) as err:
            raise StoreError(f"cannot use storage url {_safe(url)}: {err}") from err
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Run every Alembic migration not yet applied."""
        config = Config()
        config.set_main_option("script_location", str(files("pipeline.store") / "migrations"))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as err:
            raise StoreError(f"cannot open the store at {_safe(str(self.engine.url))}: {err.orig or err}") from err

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ items

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
        with self.engine.begin() as connection:
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
                self._save_state(connection, fetched_url, validators, None, now)
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
                mapping = row._mapping
                yield StoredItem(
                    item=Item(**{name: mapping[name] for name in _ITEM_FIELDS}),
                    content_hash=mapping["content_hash"],
                    first_seen=mapping["first_seen"],
                    updated=mapping["updated"],
                )

    def count_items(self) -> int:
        """How many items the store holds."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(items)).scalar_one())

    # ------------------------------------------------------------ fetch state

    def validators(self, url: str) -> Validators | None:
        """The ETag/Last-Modified stored for *url*, if any."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(fetch_state.c.etag, fetch_state.c.last_modified).where(fetch_state.c.url == url)
            ).first()
        if row is None or not (row.etag or row.last_modified):
            return None
        return Validators(row.etag, row.last_modified)

    def links(self, url: str) -> list[str] | None:
        """The item links (or entry ids) stored for an index page or feed."""
        with self.engine.connect() as connection:
            value = connection.execute(select(fetch_state.c.links).where(fetch_state.c.url == url)).scalar()
        return json.loads(value) if value else None

    def save_listing(self, url: str, validators: Validators, links: list[str], now: datetime | None = None) -> None:
        """Store an index page's or feed's validators and the links it listed."""
        with self.engine.begin() as connection:
            self._save_state(connection, url, validators, links, now or _now())

    @staticmethod
    def _save_state(
        connection: Connection, url: str, validators: Validators, links: list[str] | None, now: datetime
    ) -> None:
        values = {"etag": validators.etag, "last_modified": validators.last_modified, "checked": now}
        if links is not None:
            values["links"] = json.dumps(links, ensure_ascii=False)
        done = connection.execute(update(fetch_state).where(fetch_state.c.url == url).values(**values))
        if done.rowcount == 0:
            connection.execute(insert(fetch_state).values(url=url, **values))


def _safe(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable url)"


__all__ = ["Outcome", "Store", "StoredItem"]

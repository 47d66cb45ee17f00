"""The store: items and fetch state in SQLite or PostgreSQL (SQLAlchemy Core).

Interface of this stage: :class:`Store` (open with :meth:`Store.open`), and
:class:`StoredItem`, an :class:`~pipeline.sources.Item` with the times the
store keeps for it. The schema is created and upgraded by Alembic migrations
when a store is opened, so a new database and an old one end up the same.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from pipeline.errors import StoreError
from pipeline.store.base import StoreBase, _sqlite_pragmas, worker_is_dead, worker_name
from pipeline.store.desk import Admin, AdminSession, DeskMixin
from pipeline.store.drafts import DraftsMixin
from pipeline.store.fetch_state import FetchStateMixin
from pipeline.store.firings import FiringsMixin
from pipeline.store.issues import IssuesMixin, ListTurn
from pipeline.store.items import ItemsMixin, Outcome
from pipeline.store.mail_queue import MailQueueMixin
from pipeline.store.media import ClicksMixin, MediaMixin
from pipeline.store.outbox import OutboxMixin
from pipeline.store.subscribers import SubscribersMixin
from pipeline.types import Issue, LedgerUpdate, OutboxRow, QueuedMail, StoredItem

#: The newest migration (migrations/versions/). A store already there is opened without loading Alembic,
#: which costs half a second of every command's start; tests/test_store.py keeps this equal to Alembic's head.
HEAD_REVISION = "0017"


#: Connections opened beyond the 5 kept: each sending connection ([sender] connections, up to 64) holds one
#: while it works and may take a second for a moment, and a collect's or the web side's threads take
#: turns on theirs. SQLAlchemy's default (10) ran out at connections = 20 and failed the send.
MAX_OVERFLOW = 2 * 64 + 16


def _postgresql_session(dbapi_connection: Any, _record: object) -> None:
    """Plan each statement for its own parameters: psycopg prepares a statement after 5 runs, and PostgreSQL
    then kept the generic plan it made while a table was small (a sequential scan) as the table grew: an
    import's lookups of 1,000 addresses a batch became a scan of the whole list, 100,000 rows in 85 s."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_connection.commit()


class Store(
    ItemsMixin,
    IssuesMixin,
    SubscribersMixin,
    OutboxMixin,
    FiringsMixin,
    FetchStateMixin,
    MailQueueMixin,
    MediaMixin,
    DraftsMixin,
    ClicksMixin,
    DeskMixin,
    StoreBase,
):
    """Everything flygblad keeps, one domain per module (lemon24/reader's storage mixins). A context manager."""

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to *url* and bring its schema up to date."""
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # A server (PostgreSQL) may have dropped a pooled connection; a SQLite file cannot,
            # and its ping would cost a query on every check-out.
            pool = {} if parsed.database in (None, "", ":memory:") else {"pool_size": 5, "max_overflow": MAX_OVERFLOW}
            engine = create_engine(url, future=True, pool_pre_ping=parsed.get_backend_name() != "sqlite", **pool)
        except (SQLAlchemyError, ImportError, ValueError, OSError) as err:
            raise StoreError(f"cannot use storage url {_safe(url)}: {err}") from err
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        elif engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _postgresql_session)
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Run every Alembic migration not yet applied (none, without loading Alembic, when it is up to date)."""
        try:
            with self.engine.connect() as connection:
                current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except SQLAlchemyError:
            current = None  # a new database, or one that does not answer: Alembic says which below
        if current == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(files("pipeline.store") / "migrations"))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as err:
            raise StoreError(
                f"cannot open the store at {_safe(str(self.engine.url))}: {getattr(err, 'orig', None) or err}"
            ) from err

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable url)"


__all__ = [
    "Admin",
    "AdminSession",
    "Issue",
    "LedgerUpdate",
    "ListTurn",
    "Outcome",
    "OutboxRow",
    "QueuedMail",
    "Store",
    "StoredItem",
    "worker_is_dead",
    "worker_name",
]

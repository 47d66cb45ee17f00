"""The store: items and fetch state in SQLite or PostgreSQL (SQLAlchemy Core).

Interface of this stage: :class:`Store` (open with :meth:`Store.open`), and
:class:`StoredItem`, an :class:`~pipeline.sources.Item` with the times the
store keeps for it. The schema is created and upgraded by Alembic migrations
when a store is opened, so a new database and an old one end up the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from pipeline.errors import StoreError
from pipeline.sources import Item, Validators
from pipeline.store.mail_queue import MailQueueMixin, QueuedMail
from pipeline.store.schema import (
    OPEN_STATUSES,
    UTCDateTime,
    fetch_state,
    firings,
    issue_items,
    issues,
    items,
    lists,
    outbox,
    subscribers,
)
from pipeline.subscribers import SUPPRESSED, Candidate, ImportReport, Subscriber

log = logging.getLogger(__name__)

Outcome = Literal["new", "updated", "unchanged"]
_ITEM_FIELDS = [f.name for f in fields(Item)]
_OUTBOX_FIELDS = (
    "issue_id",
    "subscriber_id",
    "email",
    "name",
    "status",
    "attempts",
    "message_id",
    "last_reply",
    "next_attempt",
)


def worker_name(number: int = 0) -> str:
    """``host:pid:n``: who claimed an outbox row, so a later run can tell a dead claim from a live one."""
    return f"{socket.gethostname()}:{os.getpid()}:{number}"


def worker_is_dead(worker: str | None) -> bool:
    """True for a worker of this machine whose process is gone (or an unnamed one: the old single-process form)."""
    if not worker or worker.count(":") < 2:
        return True
    host, pid, _ = worker.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: only its lease can expire it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim_statement(postgresql: bool, due: bool) -> Any:
    """UPDATE … RETURNING that claims the first *b_limit* pending (or due deferred) rows of an issue.

    Built once with bind parameters and reused, so claiming costs no statement construction.
    """
    if due:
        condition = and_(
            outbox.c.status == "deferred", outbox.c.next_attempt <= bindparam("b_now", type_=UTCDateTime())
        )
    else:
        condition = outbox.c.status == "pending"
    chosen = (
        select(outbox.c.subscriber_id)
        .where(outbox.c.issue_id == bindparam("b_issue"), condition)
        .order_by(outbox.c.subscriber_id)
        .limit(bindparam("b_limit"))
    )
    if postgresql:
        # A CTE is evaluated once: an IN (sub-select … LIMIT … FOR UPDATE) may be re-run by
        # PostgreSQL's planner and claim more rows than asked for.
        chosen_rows = chosen.with_for_update(skip_locked=True).cte("chosen")
        subset = select(chosen_rows.c.subscriber_id)
    else:
        subset = chosen.scalar_subquery()
    return (
        update(outbox)
        .where(outbox.c.issue_id == bindparam("b_issue"), outbox.c.subscriber_id.in_(subset))
        .values(
            status="sending",
            claimed_at=bindparam("b_now", type_=UTCDateTime()),
            worker=bindparam("b_worker"),
            attempts=outbox.c.attempts + 1,
            changed=bindparam("b_now", type_=UTCDateTime()),
        )
        .returning(*(outbox.c[k] for k in _OUTBOX_FIELDS))
    )


#: One prepared UPDATE for every outcome of a batch (executemany).
_RECORD = (
    update(outbox)
    .where(outbox.c.issue_id == bindparam("b_issue"), outbox.c.subscriber_id == bindparam("b_subscriber"))
    .values(
        status=bindparam("status"),
        message_id=bindparam("message_id"),
        provider_id=bindparam("provider_id"),
        last_reply=bindparam("last_reply"),
        next_attempt=bindparam("next_attempt"),
        sent_at=func.coalesce(bindparam("sent_at", type_=UTCDateTime()), outbox.c.sent_at),
        changed=bindparam("changed"),
    )
)
#: A bounce suppresses the subscriber.
_BOUNCE = (
    update(subscribers)
    .where(subscribers.c.id == bindparam("b_id"))
    .values(status="bounced", changed=bindparam("b_now"))
)


class _Compiled:
    """One statement compiled once for a dialect, to run on the driver's own cursor.

    Values are given as the driver takes them (times through
    :meth:`_LedgerStatements.to_db`); the constants SQLAlchemy bound into the
    statement (``status = 'sending'``, ``OFFSET 0``) are filled in here.
    """

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.constants = compiled.construct_params(_check=False)
        self.positions = compiled.positiontup  # None for a named paramstyle (psycopg)

    def args(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.constants, **values}
        return tuple(merged[name] for name in self.positions) if self.positions else merged


class _LedgerStatements:
    """The statements a sending worker runs for every message, compiled once per dialect.

    Through ``Connection.execute`` each statement costs tens of microseconds of
    Python (cache lookup, parameter and result processing) on top of the
    database's own work, and a send to a fast SMTP server spends a large share
    of its time there. Run on the driver's cursor, the outcome of one message
    and the claim of the next cost ~55 µs on SQLite instead of ~175 µs
    (measured for bench/send.py).
    """

    def __init__(self, dialect: Any) -> None:
        self.postgresql = dialect.name == "postgresql"
        self.record = _Compiled(_RECORD, dialect)
        self.bounce = _Compiled(_BOUNCE, dialect)
        self.claims = {due: _Compiled(_claim_statement(self.postgresql, due), dialect) for due in (False, True)}
        time_type = UTCDateTime().dialect_impl(dialect)  # with the dialect's own DATETIME (a string on SQLite)
        self._to_db = time_type.bind_processor(dialect)
        self._from_db = time_type.result_processor(dialect, None)

    def to_db(self, value: datetime | None) -> Any:
        return self._to_db(value) if self._to_db else value

    def row(self, values: Sequence[Any]) -> OutboxRow:
        *rest, next_attempt = values
        return OutboxRow(*rest, self._from_db(next_attempt) if self._from_db else next_attempt)

    def record_params(self, issue_id: int, o: LedgerUpdate, now: Any) -> Any:
        """*now* already through :meth:`to_db`."""
        return self.record.args(
            {
                "b_issue": issue_id,
                "b_subscriber": o.subscriber_id,
                "status": o.status,
                "message_id": o.message_id,
                "provider_id": o.provider_id,
                "last_reply": o.reply[:1000],
                "next_attempt": self.to_db(o.next_attempt),
                "sent_at": now if o.status == "sent" else None,
                "changed": now,
            }
        )


_LEDGERS: dict[str, _LedgerStatements] = {}

_SUBSCRIBER_FIELDS = ("id", "list", "email", "name", "language", "status", "created", "changed")
_ISSUE_FIELDS = (
    "id",
    "list",
    "number",
    "subject",
    "preheader",
    "html",
    "text",
    "nonce",
    "language",
    "created",
    "cutoff",
    "status",
    "paused",
)


@dataclass(frozen=True)
class StoredItem:
    """An item as the store has it: the item, a digest of it, and when it was first and last changed."""

    item: Item
    content_hash: str
    first_seen: datetime
    updated: datetime


@dataclass(frozen=True)
class Issue:
    """A frozen issue of a list: its items, subject, preheader and rendered HTML and text.

    ``html`` and ``text`` hold the per-recipient placeholders (see
    :mod:`pipeline.render`); ``nonce`` is their per-issue secret part.
    """

    id: int
    list: str
    number: int
    subject: str
    preheader: str
    html: str
    text: str
    nonce: str
    language: str
    created: datetime
    cutoff: datetime
    status: str
    item_ids: tuple[str, ...]
    paused: str | None = None  # why an unfinished issue stopped

    @property
    def unfinished(self) -> bool:
        """Frozen, or sent to some but not yet all of its recipients."""
        return self.status in (*OPEN_STATUSES, "held")


@dataclass(frozen=True)
class OutboxRow:
    """One recipient of one issue, as the ledger has it."""

    issue_id: int
    subscriber_id: int
    email: str
    name: str | None
    status: str
    attempts: int
    message_id: str | None
    last_reply: str | None
    next_attempt: datetime | None


@dataclass(frozen=True)
class LedgerUpdate:
    """An outcome to record: the row, its new status and what the sender said."""

    subscriber_id: int
    status: str  # sent, deferred, bounced, failed
    message_id: str
    provider_id: str | None = None
    reply: str = ""
    next_attempt: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the web side, a second command) work while a collect writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL keeps the database consistent through a crash of the process (what
    # the outbox ledger guards against); only a power cut can lose the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Store(MailQueueMixin):
    """Reads and writes everything flygblad keeps. Use as a context manager."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite has one writer at a time and its busy handler sleeps in steps of
        # milliseconds: threads of this process take turns here instead.
        self._writing = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to *url* and bring its schema up to date."""
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # A server (PostgreSQL) may have dropped a pooled connection; a SQLite file cannot,
            # and its ping would cost a query on every check-out.
            engine = create_engine(url, future=True, pool_pre_ping=parsed.get_backend_name() != "sqlite")
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
    def _stored(mapping: Mapping[str, Any]) -> StoredItem:
        return StoredItem(
            item=Item(**{name: mapping[name] for name in _ITEM_FIELDS}),
            content_hash=mapping["content_hash"],
            first_seen=mapping["first_seen"],
            updated=mapping["updated"],
        )

    # ------------------------------------------------------------ issues

    @contextlib.contextmanager
    def list_turn(self, list_name: str) -> Iterator[ListTurn]:
        """Hold the list's lock for one transaction: one process at a time freezes an issue of a list.

        The lock is the list's row in ``lists``, updated first thing: PostgreSQL
        holds a row lock until commit (another process's turn waits, then sees
        what this one committed); on SQLite the write takes the database's write
        lock, which waits for any other writer (busy_timeout) the same way.
        Everything read after the lock is taken is what the last turn committed.
        """
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        try:
            with self.engine.begin() as connection:
                connection.execute(dialect_insert(lists).values(name=list_name).on_conflict_do_nothing())
                connection.execute(update(lists).where(lists.c.name == list_name).values(locked_at=_now()))
                yield ListTurn(self, connection, list_name)
        except IntegrityError as err:  # the invariants held against a bug: say so, store nothing
            raise StoreError(
                f"list {list_name!r}: the store refused an issue that breaks its rules: {err.orig}"
            ) from err

    def freeze_issue(self, list_name: str, **content: Any) -> Issue:
        """Store a rendered issue as the list's next number, in the list's turn (see :meth:`ListTurn.freeze`)."""
        with self.list_turn(list_name) as turn:
            number = turn.freeze(**content)
        issue = self.issue(list_name, number)
        assert issue is not None
        return issue

    def issue(self, list_name: str, number: int | None = None) -> Issue | None:
        """Issue *number* of a list, or its latest issue when *number* is None."""
        query = select(issues).where(issues.c.list == list_name)
        query = (
            query.where(issues.c.number == number)
            if number is not None
            else query.order_by(issues.c.number.desc()).limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
            if row is None:
                return None
            ids = (
                connection.execute(
                    select(issue_items.c.item_id)
                    .where(issue_items.c.issue_id == row.id)
                    .order_by(issue_items.c.position)
                )
                .scalars()
                .all()
            )
        return Issue(**{k: row._mapping[k] for k in _ISSUE_FIELDS}, item_ids=tuple(ids))

    def unfinished_issues(self, list_name: str) -> list[Issue]:
        """The list's issues not yet sent to everyone (frozen, sending, held), oldest first."""
        with self.engine.connect() as connection:
            numbers = (
                connection.execute(
                    select(issues.c.number)
                    .where(issues.c.list == list_name, issues.c.status.in_((*OPEN_STATUSES, "held")))
                    .order_by(issues.c.number)
                )
                .scalars()
                .all()
            )
        return [issue for n in numbers if (issue := self.issue(list_name, n)) is not None]

    def set_paused(self, issue_id: int, reason: str | None) -> None:
        """Say why an unfinished issue stopped (None: it is not paused)."""
        with self._writing, self.engine.begin() as connection:
            connection.execute(update(issues).where(issues.c.id == issue_id).values(paused=reason and reason[:1000]))

    def reopen_held(self, issue_id: int) -> bool:
        """A held issue (see migration 0006) becomes the list's open issue; False while another is open."""
        with self.engine.connect() as connection:
            started = connection.execute(select(func.count()).where(outbox.c.issue_id == issue_id)).scalar_one()
        try:
            with self._writing, self.engine.begin() as connection:
                connection.execute(
                    update(issues)
                    .where(issues.c.id == issue_id, issues.c.status == "held")
                    .values(status="sending" if started else "frozen", paused=None)
                )
        except IntegrityError:
            return False
        return True

    def issues(self, list_name: str | None = None) -> list[Issue]:
        """Every frozen issue (of one list), newest first."""
        query = select(issues.c.list, issues.c.number).order_by(
            issues.c.created.desc(), issues.c.list, issues.c.number.desc()
        )
        if list_name is not None:
            query = query.where(issues.c.list == list_name)
        with self.engine.connect() as connection:
            keys = connection.execute(query).all()
        return [issue for key in keys if (issue := self.issue(key.list, key.number)) is not None]

    # ------------------------------------------------------------ subscribers

    def upsert_subscribers(
        self,
        list_name: str,
        batch: Sequence[Candidate],
        *,
        status: str = "active",
        report: ImportReport,
        now: datetime | None = None,
        vouched: bool = True,
    ) -> None:
        """Add new addresses and update known ones, in one transaction per batch.

        A suppressed address (unsubscribed, bounced, complained) keeps its status.
        With ``vouched=False`` (a sign-up on the web, not the communicator's list),
        a known address never becomes active here; one that unsubscribed may ask
        again (``unconfirmed``), and proves it owns the address by confirming.
        """
        now = now or _now()
        unique: dict[str, Candidate] = {}
        for c in batch:  # the same address twice in a batch: one row, the later name and language win
            first = unique.get(c.key)
            if first is not None:
                report.duplicates += 1
                c = Candidate(first.email, c.name or first.name, c.language or first.language)
            unique[c.key] = c
        with self.engine.begin() as connection:
            known = {
                row.email_key: row
                for row in connection.execute(
                    select(
                        subscribers.c.id,
                        subscribers.c.email_key,
                        subscribers.c.name,
                        subscribers.c.language,
                        subscribers.c.status,
                    ).where(subscribers.c.list == list_name, subscribers.c.email_key.in_(list(unique)))
                )
            }
            new = [
                {
                    "list": list_name,
                    "email": c.email,
                    "email_key": key,
                    "name": c.name,
                    "language": c.language,
                    "status": status,
                    "created": now,
                    "changed": now,
                }
                for key, c in unique.items()
                if key not in known
            ]
            if new:
                connection.execute(insert(subscribers), new)
            report.added += len(new)
            for key, c in unique.items():
                row = known.get(key)
                if row is None:
                    continue
                values = {}
                if c.name and c.name != row.name:
                    values["name"] = c.name
                if c.language and c.language != row.language:
                    values["language"] = c.language
                if not vouched:
                    if row.status == "unsubscribed" and status == "unconfirmed":
                        values["status"] = "unconfirmed"
                    elif row.status in SUPPRESSED:
                        report.suppressed += 1
                elif row.status in SUPPRESSED:
                    report.suppressed += 1
                elif status == "active" and row.status != "active":
                    values["status"] = "active"  # the communicator vouches for the consent
                if values:
                    connection.execute(
                        update(subscribers).where(subscribers.c.id == row.id).values(**values, changed=now)
                    )
                    if row.status not in SUPPRESSED:
                        report.updated += 1
                elif row.status not in SUPPRESSED:
                    report.unchanged += 1

    def iter_subscribers(self, list_name: str, *, status: str | None = None, batch: int = 1000) -> Iterator[Subscriber]:
        """A list's subscribers by id, streamed in batches (keyset pagination, no long-open cursor)."""
        last = 0
        while True:
            query = select(subscribers).where(subscribers.c.list == list_name, subscribers.c.id > last)
            if status is not None:
                query = query.where(subscribers.c.status == status)
            with self.engine.connect() as connection:
                rows = connection.execute(query.order_by(subscribers.c.id).limit(batch)).all()
            for row in rows:
                yield Subscriber(**{k: row._mapping[k] for k in _SUBSCRIBER_FIELDS})
            if len(rows) < batch:
                return
            last = rows[-1].id

    def subscriber(self, list_name: str, email: str) -> Subscriber | None:
        """One subscriber of a list by address (any case)."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(subscribers).where(subscribers.c.list == list_name, subscribers.c.email_key == email.lower())
            ).first()
        return Subscriber(**{k: row._mapping[k] for k in _SUBSCRIBER_FIELDS}) if row else None

    def set_subscriber_status(self, subscriber_id: int, status: str, now: datetime | None = None) -> None:
        """Change one subscriber's status (bounced, unsubscribed …)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .values(status=status, changed=now or _now())
            )

    def confirm_subscriber(self, subscriber_id: int, list_name: str, now: datetime | None = None) -> bool:
        """Double opt-in: an unconfirmed subscriber becomes active (again: no change). False if unknown or suppressed."""
        with self._writing, self.engine.begin() as connection:
            row = connection.execute(
                select(subscribers.c.status).where(subscribers.c.id == subscriber_id, subscribers.c.list == list_name)
            ).first()
            if row is None or row.status not in ("unconfirmed", "active"):
                return False
            if row.status == "unconfirmed":
                connection.execute(
                    update(subscribers)
                    .where(subscribers.c.id == subscriber_id)
                    .values(status="active", changed=now or _now())
                )
        return True

    def unsubscribe(self, subscriber_id: int, list_name: str, now: datetime | None = None) -> bool:
        """The subscriber leaves the list (idempotent); False when there is no such subscriber on it.

        One UPDATE while holding SQLite's write turn; only when it changed nothing
        (already gone, or no such subscriber) a read tells which.
        """
        mine = and_(subscribers.c.id == subscriber_id, subscribers.c.list == list_name)
        with self._writing, self.engine.begin() as connection:
            changed = connection.execute(
                update(subscribers)
                .where(mine, subscribers.c.status.in_(("unconfirmed", "active")))
                .values(status="unsubscribed", changed=now or _now())
            ).rowcount
        if changed:
            return True
        with self.engine.connect() as connection:
            return connection.execute(select(subscribers.c.id).where(mine)).first() is not None

    def suppress(self, email: str, status: str, *, list_name: str | None = None, now: datetime | None = None) -> int:
        """Mark an address ``bounced`` or ``complained`` (on one list, or every list it is on).

        A bounce does not overwrite a complaint; returns how many rows changed.
        """
        keep = ("complained",) if status == "bounced" else ()
        query = update(subscribers).where(subscribers.c.email_key == email.lower(), subscribers.c.status != status)
        if keep:
            query = query.where(subscribers.c.status.not_in(keep))
        if list_name is not None:
            query = query.where(subscribers.c.list == list_name)
        with self._writing, self.engine.begin() as connection:
            return int(connection.execute(query.values(status=status, changed=now or _now())).rowcount or 0)

    def remove_subscriber(self, list_name: str, email: str) -> bool:
        """Delete a subscriber from a list; False when the address is not on it."""
        with self.engine.begin() as connection:
            done = connection.execute(
                subscribers.delete().where(subscribers.c.list == list_name, subscribers.c.email_key == email.lower())
            )
        return done.rowcount > 0

    def count_subscribers(self, list_name: str, status: str | None = None) -> int:
        """How many subscribers a list has (with a status)."""
        query = select(func.count()).select_from(subscribers).where(subscribers.c.list == list_name)
        if status is not None:
            query = query.where(subscribers.c.status == status)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    # ------------------------------------------------------------ outbox

    def start_outbox(self, issue_id: int, list_name: str, now: datetime | None = None) -> int:
        """Write one pending row per active subscriber and mark the issue sending, in one transaction.

        Only a frozen issue gets rows: an issue already sending keeps the
        recipients it started with, so a resume never adds or drops anyone.
        Returns the number of rows written (0 on a resume).
        """
        now = now or _now()
        with self.engine.begin() as connection:
            started = connection.execute(
                update(issues).where(issues.c.id == issue_id, issues.c.status == "frozen").values(status="sending")
            ).rowcount
            if not started:
                return 0
            chosen = select(
                literal(issue_id),
                subscribers.c.id,
                subscribers.c.email,
                subscribers.c.name,
                literal("pending"),
                literal(0),
                literal(now, UTCDateTime()),
            ).where(subscribers.c.list == list_name, subscribers.c.status == "active")
            connection.execute(
                insert(outbox).from_select(
                    ["issue_id", "subscriber_id", "email", "name", "status", "attempts", "changed"], chosen
                )
            )
            # rowcount of INSERT … SELECT is -1 on SQLite: count what is there.
            return int(
                connection.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.issue_id == issue_id)
                ).scalar_one()
            )

    def abandon_claims(self, issue_id: int, now: datetime | None = None, lease_seconds: float | None = None) -> int:
        """Rows a dead worker claimed but never recorded become ``uncertain``: they may or may not have gone.

        A worker is dead when it ran on this machine and its process is gone, or
        (any machine) when its claim is older than the lease. Claims of live
        workers are left alone, so several senders can share one outbox.
        """
        now = now or _now()
        with self.engine.connect() as connection:
            workers = set(
                connection.execute(
                    select(outbox.c.worker)
                    .where(outbox.c.issue_id == issue_id, outbox.c.status == "sending")
                    .distinct()
                ).scalars()
            )
        dead = [w for w in workers if worker_is_dead(w)]
        condition = outbox.c.worker.in_(dead) if dead else None
        if lease_seconds is not None:
            stale = outbox.c.claimed_at < now - timedelta(seconds=lease_seconds)
            condition = stale if condition is None else or_(condition, stale)
        if condition is None:
            return 0
        with self._writing, self.engine.begin() as connection:
            done = connection.execute(
                update(outbox)
                .where(outbox.c.issue_id == issue_id, outbox.c.status == "sending", condition)
                .values(
                    status="uncertain", changed=now, last_reply="the sending run stopped before an answer was recorded"
                )
            )
        return int(done.rowcount or 0)

    def requeue_uncertain(self, issue_id: int, now: datetime | None = None) -> int:
        """Put ``uncertain`` rows back in the queue (``--resend-uncertain``)."""
        with self.engine.begin() as connection:
            done = connection.execute(
                update(outbox)
                .where(outbox.c.issue_id == issue_id, outbox.c.status == "uncertain")
                .values(status="pending", changed=now or _now())
            )
        return int(done.rowcount or 0)

    def claim(
        self,
        issue_id: int,
        limit: int,
        now: datetime | None = None,
        worker: str = "",
        connection: Connection | None = None,
    ) -> list[OutboxRow]:
        """Take up to *limit* rows that are due (pending, else deferred and due) and mark them ``sending``.

        Committed before anything is sent: if the process dies after this, the
        rows are found ``sending`` and become ``uncertain``, never silently
        pending (which could mail twice) or sent (which could skip).
        """
        return self.record_and_claim(issue_id, (), limit, now=now, worker=worker, connection=connection)

    def record(self, issue_id: int, outcomes: Sequence[LedgerUpdate], now: datetime | None = None) -> None:
        """Write what happened to claimed rows; a bounce also suppresses the subscriber. One transaction."""
        if outcomes:
            self.record_and_claim(issue_id, outcomes, 0, now=now)

    def record_and_claim(
        self,
        issue_id: int,
        outcomes: Sequence[LedgerUpdate],
        limit: int,
        *,
        now: datetime | None = None,
        worker: str = "",
        connection: Connection | None = None,
    ) -> list[OutboxRow]:
        """Record *outcomes*, then claim up to *limit* due rows, in one transaction.

        A worker may pass the *connection* it holds for the whole send (see
        :meth:`worker_connection`), saving a pool check-out per message.

        A sending worker does this once per message: the outcome of the message
        it just sent and the claim of the next one cost a single commit. Each
        claim is one UPDATE … RETURNING over a sub-select that walks the
        (issue, status, subscriber) index; on PostgreSQL the sub-select skips
        rows another worker has locked.
        """
        now = now or _now()
        ledger = self._ledger()
        with self._writing, self._driver_transaction(connection) as cursor:
            if ledger.postgresql:
                # The same trade-off as SQLite's synchronous=NORMAL: a crash of flygblad loses
                # nothing committed; only a crash of the database server itself could lose the
                # last few hundred milliseconds of ledger writes. Without it every message
                # waits for its own WAL flush.
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
            when = ledger.to_db(now)
            if outcomes:
                params = [ledger.record_params(issue_id, o, when) for o in outcomes]
                if len(params) == 1:
                    cursor.execute(ledger.record.sql, params[0])
                else:
                    cursor.executemany(ledger.record.sql, params)
                bounced = [
                    ledger.bounce.args({"b_id": o.subscriber_id, "b_now": when})
                    for o in outcomes
                    if o.status == "bounced"
                ]
                if bounced:
                    cursor.executemany(ledger.bounce.sql, bounced)
            if limit <= 0:
                return []
            values = {"b_issue": issue_id, "b_limit": limit, "b_now": when, "b_worker": worker}
            cursor.execute(ledger.claims[False].sql, ledger.claims[False].args(values))
            rows = cursor.fetchall()
            if not rows:
                cursor.execute(ledger.claims[True].sql, ledger.claims[True].args(values))
                rows = cursor.fetchall()
        return sorted((ledger.row(row) for row in rows), key=lambda r: r.subscriber_id)

    @contextlib.contextmanager
    def _driver_transaction(self, connection: Connection | None) -> Iterator[Any]:
        """A cursor of the driver's own connection in one transaction: committed, or rolled back on error.

        *connection* is a worker's held connection (not inside a SQLAlchemy
        transaction); without one, one is checked out of the pool for this call.
        """
        with contextlib.ExitStack() as stack:
            if connection is None:
                connection = stack.enter_context(self.engine.connect())
            driver = connection.connection.dbapi_connection
            assert driver is not None
            cursor = driver.cursor()
            try:
                yield cursor
                driver.commit()
            except BaseException:
                driver.rollback()
                raise
            finally:
                cursor.close()

    def worker_connection(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection a send worker keeps for its whole run."""
        return self.engine.connect()

    def _ledger(self) -> _LedgerStatements:
        name = self.engine.dialect.name
        if name not in _LEDGERS:
            _LEDGERS[name] = _LedgerStatements(self.engine.dialect)
        return _LEDGERS[name]

    def release(self, issue_id: int, subscriber_ids: Sequence[int], now: datetime | None = None) -> None:
        """Give back claimed rows that were never handed to the sender (a send that stopped)."""
        if not subscriber_ids:
            return
        with self._writing, self.engine.begin() as connection:
            connection.execute(
                update(outbox)
                .where(
                    outbox.c.issue_id == issue_id,
                    outbox.c.subscriber_id.in_(list(subscriber_ids)),
                    outbox.c.status == "sending",
                )
                .values(status="pending", attempts=outbox.c.attempts - 1, changed=now or _now())
            )

    def next_due(self, issue_id: int) -> datetime | None:
        """When the earliest deferred row of an issue is due again."""
        with self.engine.connect() as connection:
            return connection.execute(
                select(func.min(outbox.c.next_attempt)).where(
                    outbox.c.issue_id == issue_id, outbox.c.status == "deferred"
                )
            ).scalar()

    def outbox_counts(self, issue_id: int) -> dict[str, int]:
        """How many rows of an issue have each status."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(outbox.c.status, func.count()).where(outbox.c.issue_id == issue_id).group_by(outbox.c.status)
            ).all()
        return {status: int(count) for status, count in rows}

    def outbox_rows(self, issue_id: int, status: str | None = None) -> list[OutboxRow]:
        """The ledger rows of an issue (with a status), by subscriber id."""
        query = select(outbox).where(outbox.c.issue_id == issue_id)
        if status is not None:
            query = query.where(outbox.c.status == status)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(outbox.c.subscriber_id)).all()
        return [OutboxRow(**{k: r._mapping[k] for k in _OUTBOX_FIELDS}) for r in rows]

    def finish_issue(self, issue_id: int) -> bool:
        """Mark the issue sent when no row is left to send; True when it is done."""
        with self.engine.begin() as connection:
            open_rows = connection.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.issue_id == issue_id, outbox.c.status.in_(("pending", "sending", "deferred")))
            ).scalar_one()
            if open_rows:
                return False
            connection.execute(update(issues).where(issues.c.id == issue_id).values(status="sent", paused=None))
        return True

    # ------------------------------------------------------------ schedule firings

    def take_firing(
        self, schedule: str, due: datetime, status: str = "running", detail: str = "", now: datetime | None = None
    ) -> bool:
        """Record a firing before it acts; False when another scheduler (or an earlier run) has it already."""
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(firings).values(
                        schedule=schedule,
                        due=due,
                        status=status,
                        detail=detail,
                        started=now or _now(),
                        worker=worker_name() if status == "running" else None,
                    )
                )
        except IntegrityError:
            return False
        return True

    def finish_firing(
        self,
        schedule: str,
        due: datetime,
        status: str,
        detail: str = "",
        issue_number: int | None = None,
        now: datetime | None = None,
    ) -> None:
        """Write how a firing ended."""
        with self.engine.begin() as connection:
            connection.execute(
                update(firings)
                .where(firings.c.schedule == schedule, firings.c.due == due)
                .values(status=status, detail=detail[:1000], issue_number=issue_number, finished=now or _now())
            )

    def abandon_firings(self, now: datetime | None = None) -> int:
        """Firings left ``running`` by a process that is gone become ``interrupted``."""
        with self.engine.connect() as connection:
            running = connection.execute(
                select(firings.c.schedule, firings.c.due, firings.c.worker).where(firings.c.status == "running")
            ).all()
        dead = [r for r in running if worker_is_dead(r.worker)]
        for row in dead:
            self.finish_firing(
                row.schedule, row.due, "interrupted", "the process running it stopped before it ended", now=now
            )
        return len(dead)

    def firings(self, schedule: str | None = None) -> list[dict[str, Any]]:
        """Recorded firings, newest first."""
        query = select(firings).order_by(firings.c.due.desc(), firings.c.schedule)
        if schedule is not None:
            query = query.where(firings.c.schedule == schedule)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

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


class ListTurn:
    """One list's lock, held for one transaction (see :meth:`Store.list_turn`)."""

    def __init__(self, store: Store, connection: Connection, list_name: str) -> None:
        self.store = store
        self.connection = connection
        self.list = list_name

    def open_issue(self) -> Issue | None:
        """The list's oldest unfinished issue (frozen or sending: at most one; or held), if any."""
        number = self.connection.execute(
            select(func.min(issues.c.number)).where(
                issues.c.list == self.list, issues.c.status.in_((*OPEN_STATUSES, "held"))
            )
        ).scalar()
        return None if number is None else self.store.issue(self.list, number)

    def freeze(
        self,
        *,
        subject: str,
        preheader: str,
        html: str,
        text: str,
        nonce: str,
        language: str,
        item_ids: Sequence[str],
        cutoff: datetime,
        created: datetime | None = None,
    ) -> int:
        """Insert the issue as the list's next number with its items; returns the number."""
        connection = self.connection
        last = connection.execute(select(func.max(issues.c.number)).where(issues.c.list == self.list)).scalar()
        number = int(last or 0) + 1
        issue_id = connection.execute(
            insert(issues).values(
                list=self.list,
                number=number,
                subject=subject,
                preheader=preheader,
                html=html,
                text=text,
                nonce=nonce,
                language=language,
                created=created or _now(),
                cutoff=cutoff,
                status="frozen",
            )
        ).inserted_primary_key[0]
        if item_ids:
            connection.execute(
                insert(issue_items),
                [
                    {"issue_id": issue_id, "item_id": item_id, "position": n, "list": self.list}
                    for n, item_id in enumerate(item_ids)
                ],
            )
        return number


__all__ = ["Issue", "ListTurn", "Outcome", "QueuedMail", "OutboxRow", "LedgerUpdate", "Store", "StoredItem"]

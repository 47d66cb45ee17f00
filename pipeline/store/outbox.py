"""The store's outbox ledger: one row per (issue, subscriber), claimed before sending, each outcome committed."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from pipeline.errors import StoreError
from pipeline.store.base import Compiled, StoreBase, _now, database_trouble, worker_is_dead
from pipeline.store.schema import (
    UTCDateTime,
    issues,
    outbox,
    subscribers,
)
from pipeline.types import (
    LedgerUpdate,
    OutboxRow,
)

log = logging.getLogger(__name__)


_OUTBOX_FIELDS = (
    "issue_id",
    "subscriber_id",
    "email",
    "name",
    "status",
    "attempts",
    "message_id",
    "last_reply",
    "language",
    "next_attempt",
)


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
    subset: Any
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


#: PostgreSQL: a batch's outcomes in one UPDATE from a JSON array, instead of one UPDATE per row (500 a batch
#: took 25 ms). ``= ANY(ids)`` on the primary key lets the planner look the rows up by key; JSON rather than
#: one array per column, because psycopg builds arrays element by element in Python (4 ms a batch).
_RECORD_MANY_POSTGRESQL = """
UPDATE outbox AS o SET
    status = u.status,
    message_id = u.message_id,
    provider_id = u.provider_id,
    last_reply = u.last_reply,
    next_attempt = u.next_attempt,
    sent_at = CASE WHEN u.status = 'sent' THEN %(changed)s ELSE o.sent_at END,
    changed = %(changed)s
FROM json_to_recordset(%(rows)s::json) AS u(
    subscriber_id integer, status varchar, message_id text, provider_id text, last_reply text, next_attempt timestamptz
)
WHERE o.issue_id = %(issue)s AND o.subscriber_id = ANY(%(ids)s::integer[]) AND o.subscriber_id = u.subscriber_id
"""


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
        self.record = Compiled(_RECORD, dialect)
        self.bounce = Compiled(_BOUNCE, dialect)
        self.claims = {due: Compiled(_claim_statement(self.postgresql, due), dialect) for due in (False, True)}
        time_type = UTCDateTime().dialect_impl(dialect)  # with the dialect's own DATETIME (a string on SQLite)
        self._to_db = time_type.bind_processor(dialect)
        self._from_db = time_type.result_processor(dialect, None)

    def to_db(self, value: datetime | None) -> Any:
        return self._to_db(value) if self._to_db else value

    def row(self, values: Sequence[Any]) -> OutboxRow:
        *rest, next_attempt = values
        return OutboxRow(*rest, self._from_db(next_attempt) if self._from_db else next_attempt)  # type: ignore[call-arg]

    def record_params(self, issue_id: int, o: LedgerUpdate, now: Any) -> Any:
        """*now* already through :meth:`to_db`."""
        return self.record.args(
            {
                "b_issue": issue_id,
                "b_subscriber": o.subscriber_id,
                **_outcome_fields(o),
                "next_attempt": self.to_db(o.next_attempt),
                "sent_at": now if o.status == "sent" else None,
                "changed": now,
            }
        )

    def record_many(self, issue_id: int, outcomes: Sequence[LedgerUpdate], now: Any) -> tuple[str, dict[str, Any]]:
        """PostgreSQL: :data:`_RECORD_MANY_POSTGRESQL` and its parameters; *now* through :meth:`to_db`."""
        rows = [
            {
                "subscriber_id": o.subscriber_id,
                **_outcome_fields(o),
                "next_attempt": o.next_attempt.isoformat() if o.next_attempt else None,
            }
            for o in outcomes
        ]
        ids = "{" + ",".join(str(o.subscriber_id) for o in outcomes) + "}"
        return _RECORD_MANY_POSTGRESQL, {
            "issue": issue_id,
            "changed": now,
            "rows": json.dumps(rows, ensure_ascii=False),
            "ids": ids,
        }

    def write_outcomes(self, cursor: Any, issue_id: int, outcomes: Sequence[LedgerUpdate], now: Any) -> None:
        """Each outcome to its row: on PostgreSQL a batch in one statement, else one prepared UPDATE per row."""
        if self.postgresql and len(outcomes) > 1:
            cursor.execute(*self.record_many(issue_id, outcomes, now))
            return
        params = [self.record_params(issue_id, o, now) for o in outcomes]
        if len(params) == 1:
            cursor.execute(self.record.sql, params[0])
        else:
            cursor.executemany(self.record.sql, params)


def _outcome_fields(o: LedgerUpdate) -> dict[str, Any]:
    """What both ways of recording write from an outcome as it is."""
    return {"status": o.status, "message_id": o.message_id, "provider_id": o.provider_id, "last_reply": o.reply[:1000]}


_LEDGERS: dict[str, _LedgerStatements] = {}


class OutboxMixin(StoreBase):
    """The outbox ledger: claims committed before sending, each outcome committed as it comes."""

    def start_outbox(self, issue_id: int, list_name: str, now: datetime | None = None) -> int:
        """Write one pending row per active subscriber and mark the issue sending, in one transaction.

        Only a frozen issue gets rows: an issue already sending keeps the
        recipients it started with, so a resume never adds or drops anyone.
        Returns the number of rows written (0 on a resume).
        """
        now = now or _now()
        with self._write() as connection:
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
                subscribers.c.language,
                literal("pending"),
                literal(0),
                literal(now, UTCDateTime()),
            ).where(subscribers.c.list == list_name, subscribers.c.status == "active")
            connection.execute(
                insert(outbox).from_select(
                    ["issue_id", "subscriber_id", "email", "name", "language", "status", "attempts", "changed"],
                    chosen,
                )
            )
            # rowcount of INSERT … SELECT is -1 on SQLite: count what is there.
            written = int(
                connection.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.issue_id == issue_id)
                ).scalar_one()
            )
        # Statistics of the new rows now, not when autovacuum gets to them a minute into the send. Without them
        # PostgreSQL guesses a few rows per issue, and records a batch's outcomes by reading the issue's whole
        # outbox (13 ms a batch of 500 at 100,000 rows, growing with the list) instead of by key (5 ms).
        self._analyze("outbox")
        return written

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
        condition: Any = outbox.c.worker.in_(dead) if dead else None
        if lease_seconds is not None:
            stale = outbox.c.claimed_at < now - timedelta(seconds=lease_seconds)
            condition = stale if condition is None else or_(condition, stale)
        if condition is None:
            return 0
        with self._write() as connection:
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
        with self._write() as connection:
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
                ledger.write_outcomes(cursor, issue_id, outcomes, when)
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
            except self.engine.dialect.loaded_dbapi.Error as err:  # locked, or the server went away
                with contextlib.suppress(Exception):
                    driver.rollback()
                if isinstance(err, self.engine.dialect.loaded_dbapi.OperationalError) and not self._sqlite:
                    connection.invalidate()  # gone: the pool must not try to reset it (a logged traceback)
                raise StoreError(database_trouble(err)) from err
            except BaseException:
                driver.rollback()
                raise
            finally:
                with contextlib.suppress(Exception):
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
        with self._write() as connection:
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
        with self._write() as connection:
            open_rows = connection.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.issue_id == issue_id, outbox.c.status.in_(("pending", "sending", "deferred")))
            ).scalar_one()
            if open_rows:
                return False
            connection.execute(update(issues).where(issues.c.id == issue_id).values(status="sent", paused=None))
        return True

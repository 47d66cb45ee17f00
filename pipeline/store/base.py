"""What every domain of the store shares: the engine, the one write path, and who is working."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from pipeline.errors import StoreError


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


def _now() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the web side, a second command) work while a collect writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL keeps the database consistent through a crash of the process (what
    # the outbox ledger guards against); only a power cut can lose the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def database_trouble(err: BaseException) -> str:
    """One line for a database that could not do its part (locked, gone), without the SQL."""
    cause = getattr(err, "orig", None) or err
    words = " ".join(str(cause).split())[:300]
    return f"the database could not be written ({type(cause).__name__}: {words})"


class Compiled:
    """One statement compiled once for a dialect, to run on the driver's own cursor.

    Values are given as the driver takes them (times through the column type's own bind processor); the
    constants SQLAlchemy bound into the statement (``status = 'sending'``, ``OFFSET 0``) are filled in here.
    An INSERT takes its columns from *column_keys*.
    """

    def __init__(self, statement: Any, dialect: Any, column_keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self.constants = compiled.construct_params(_check=False)
        self.positions = compiled.positiontup  # None for a named paramstyle (psycopg)

    def args(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.constants, **values}
        return tuple(merged[name] for name in self.positions) if self.positions else merged


class StoreBase:
    """The engine, and the one write path every writer of every domain goes through."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer at a time and its busy handler sleeps in steps of milliseconds:
        # threads of this process take turns here instead. Re-entrant, so a writer holding the
        # turn (a list's turn) may call another writer.
        self._writing: Any = threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        self._grown: dict[str, tuple[int, int]] = {}  # table: (rows added since its last ANALYZE, rows then)

    def _analyze(self, table: str, added: int = 0) -> None:
        """PostgreSQL: statistics for *table*, now (``added=0``), or each time this store has doubled it.

        Without statistics PostgreSQL guesses that a condition such as ``list = 'nyhetsbrev'`` matches a few
        rows, and reads the whole list for every batch an import looks up (quadratic: 1,000,000 subscribers
        took 214 s to import), or every row of an issue for every batch of outcomes. Autovacuum analyses a
        table only a minute or more after it has grown. ANALYZE reads a sample: 0.1 s at 1,000,000 rows.
        """
        if self._sqlite:
            return
        since, then = self._grown.get(table, (0, 0))
        since += added
        if added and since < max(10_000, then):
            self._grown[table] = (since, then)
            return
        with self._write() as connection:
            connection.execute(text(f"ANALYZE {table}"))
        self._grown[table] = (0, then + since)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction, in this process's SQLite write turn: committed, or rolled back on error.

        A database that is locked past its busy timeout, or a server that went
        away, raises :class:`StoreError` saying so (IntegrityError passes: it is
        a constraint speaking, which callers handle).
        """
        try:
            with self._writing, self.engine.begin() as connection:
                yield connection
        except (OperationalError, InterfaceError) as err:
            raise StoreError(database_trouble(err)) from err

    def _insert_once(self, table: Any, values: dict[str, Any]) -> bool:
        """Insert one row; False when a unique constraint says it is there already."""
        try:
            with self._write() as connection:
                connection.execute(insert(table).values(**values))
        except IntegrityError:
            return False
        return True


__all__ = ["StoreBase", "worker_is_dead", "worker_name"]

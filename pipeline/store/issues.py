"""The store's issues: the list's turn (its lock), freezing, reading and resuming issues."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from pipeline.errors import StoreError
from pipeline.store.base import StoreBase, _now
from pipeline.store.schema import (
    OPEN_STATUSES,
    issue_items,
    issue_versions,
    issues,
    lists,
    outbox,
)
from pipeline.types import (
    Issue,
)

log = logging.getLogger(__name__)


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


class IssuesMixin(StoreBase):
    """Issues: the list's turn, freezing, reading, resuming."""

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
            with self._write() as connection:
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

    def issue_versions(self, issue_id: int) -> dict[str, dict[str, str]]:
        """An issue's renderings in its subscribers' other languages: language → subject, preheader, html, text."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(issue_versions).where(issue_versions.c.issue_id == issue_id)).all()
        return {
            row.language: {"subject": row.subject, "preheader": row.preheader, "html": row.html, "text": row.text}
            for row in rows
        }

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
        with self._write() as connection:
            connection.execute(update(issues).where(issues.c.id == issue_id).values(paused=reason and reason[:1000]))

    def reopen_held(self, issue_id: int) -> bool:
        """A held issue (see migration 0006) becomes the list's open issue; False while another is open."""
        with self.engine.connect() as connection:
            started = connection.execute(select(func.count()).where(outbox.c.issue_id == issue_id)).scalar_one()
        try:
            with self._write() as connection:
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


class ListTurn:
    """One list's lock, held for one transaction (see :meth:`Store.list_turn`)."""

    def __init__(self, store: IssuesMixin, connection: Connection, list_name: str) -> None:
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
        versions: Mapping[str, Mapping[str, str]] | None = None,
    ) -> int:
        """Insert the issue as the list's next number with its items; returns the number.

        *versions* are its renderings in other languages (language → subject, preheader, html, text).
        """
        connection = self.connection
        last = connection.execute(select(func.max(issues.c.number)).where(issues.c.list == self.list)).scalar()
        number = int(last or 0) + 1
        inserted = connection.execute(
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
        )
        assert inserted.inserted_primary_key is not None
        issue_id = inserted.inserted_primary_key[0]
        if item_ids:
            connection.execute(
                insert(issue_items),
                [
                    {"issue_id": issue_id, "item_id": item_id, "position": n, "list": self.list}
                    for n, item_id in enumerate(item_ids)
                ],
            )
        if versions:
            connection.execute(
                insert(issue_versions),
                [{"issue_id": issue_id, "language": language, **dict(v)} for language, v in versions.items()],
            )
        return number

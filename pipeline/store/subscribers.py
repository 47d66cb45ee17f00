"""The store's subscribers: upsert in batches, confirm, unsubscribe, suppress."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import (
    and_,
    func,
    insert,
    select,
    update,
)

from pipeline.store.base import StoreBase, _now
from pipeline.store.schema import (
    subscribers,
)
from pipeline.types import (
    SUPPRESSED,
    Candidate,
    ImportReport,
    Subscriber,
)

log = logging.getLogger(__name__)


_SUBSCRIBER_FIELDS = ("id", "list", "email", "name", "language", "status", "created", "changed")


class SubscribersMixin(StoreBase):
    """Subscribers: upsert in batches, confirm, unsubscribe, suppress."""

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
        with self._write() as connection:
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
        self._analyze("subscribers", len(new))

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

    def find_subscribers(
        self, list_name: str, text: str = "", *, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
    ) -> tuple[list[Subscriber], int]:
        """A page of a list's subscribers whose address or name contains *text* (any case), and how many match."""
        query = select(subscribers).where(subscribers.c.list == list_name)
        if text:
            pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                subscribers.c.email_key.like(pattern, escape="\\")
                | func.lower(subscribers.c.name).like(pattern, escape="\\")
            )
        if statuses:
            query = query.where(subscribers.c.status.in_(list(statuses)))
        with self.engine.connect() as connection:
            total = int(connection.execute(select(func.count()).select_from(query.subquery())).scalar_one())
            rows = connection.execute(query.order_by(subscribers.c.email_key).limit(limit).offset(offset)).all()
        return [Subscriber(**{k: row._mapping[k] for k in _SUBSCRIBER_FIELDS}) for row in rows], total

    def subscriber(self, list_name: str, email: str) -> Subscriber | None:
        """One subscriber of a list by address (any case)."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(subscribers).where(subscribers.c.list == list_name, subscribers.c.email_key == email.lower())
            ).first()
        return Subscriber(**{k: row._mapping[k] for k in _SUBSCRIBER_FIELDS}) if row else None

    def set_subscriber_status(self, subscriber_id: int, status: str, now: datetime | None = None) -> None:
        """Change one subscriber's status (bounced, unsubscribed …)."""
        with self._write() as connection:
            connection.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .values(status=status, changed=now or _now())
            )

    def confirm_subscriber(self, subscriber_id: int, list_name: str, now: datetime | None = None) -> bool:
        """Double opt-in: an unconfirmed subscriber becomes active (again: no change). False if unknown or suppressed."""
        with self._write() as connection:
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
        with self._write() as connection:
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
        # A stronger word is never overwritten by a weaker one: complained > bounced > unsubscribed.
        keep = {"bounced": ("complained",), "unsubscribed": ("complained", "bounced")}.get(status, ())
        query = update(subscribers).where(subscribers.c.email_key == email.lower(), subscribers.c.status != status)
        if keep:
            query = query.where(subscribers.c.status.not_in(keep))
        if list_name is not None:
            query = query.where(subscribers.c.list == list_name)
        with self._write() as connection:
            return int(connection.execute(query.values(status=status, changed=now or _now())).rowcount or 0)

    def remove_subscriber(self, list_name: str, email: str) -> bool:
        """Delete a subscriber from a list; False when the address is not on it."""
        with self._write() as connection:
            done = connection.execute(
                subscribers.delete().where(subscribers.c.list == list_name, subscribers.c.email_key == email.lower())
            )
        return done.rowcount > 0

    def status_changes(self, list_name: str, start: datetime, end: datetime | None) -> dict[str, int]:
        """How many of the list's subscribers became unsubscribed, bounced or complained in [start, end)."""
        query = select(subscribers.c.status, func.count()).where(
            subscribers.c.list == list_name,
            subscribers.c.status.in_(("unsubscribed", "bounced", "complained")),
            subscribers.c.changed >= start,
        )
        if end is not None:
            query = query.where(subscribers.c.changed < end)
        with self.engine.connect() as connection:
            return {row[0]: int(row[1]) for row in connection.execute(query.group_by(subscribers.c.status))}

    def subscriber_languages(self, list_name: str) -> set[str]:
        """The languages the list's active subscribers chose (those who chose none read the list's)."""
        with self.engine.connect() as connection:
            return set(
                connection.execute(
                    select(subscribers.c.language)
                    .where(
                        subscribers.c.list == list_name,
                        subscribers.c.status == "active",
                        subscribers.c.language.is_not(None),
                    )
                    .distinct()
                ).scalars()
            )

    def count_subscribers(self, list_name: str, status: str | None = None) -> int:
        """How many subscribers a list has (with a status)."""
        query = select(func.count()).select_from(subscribers).where(subscribers.c.list == list_name)
        if status is not None:
            query = query.where(subscribers.c.status == status)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

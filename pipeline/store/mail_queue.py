"""The store's transactional mail: confirmations queued, claimed, recorded (one domain of :class:`Store`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, insert, or_, select, update

from pipeline.store.base import StoreBase
from pipeline.store.schema import UTCDateTime, mail_queue
from pipeline.types import QueuedMail

if TYPE_CHECKING:
    pass


class MailQueueMixin(StoreBase):
    """Transactional mail: queued before it is sent, so a relay that is down loses nothing."""

    def enqueue_mail(
        self, kind: str, list_name: str, subscriber_id: int, email: str, name: str | None, now: datetime | None = None
    ) -> bool:
        """Queue one message; False when one of this kind to this subscriber is still unsent (no second one)."""
        now = now or datetime.now(UTC)
        row = {
            "kind": kind,
            "list": list_name,
            "subscriber_id": subscriber_id,
            "email": email,
            "name": name,
            "status": "pending",
            "attempts": 0,
            "created": now,
            "changed": now,
        }
        return self._insert_once(mail_queue, row)

    def claim_mail(
        self, limit: int, worker: str, now: datetime | None = None, lease_seconds: float = 600
    ) -> list[QueuedMail]:
        """Take up to *limit* due messages (pending, or deferred and due) and mark them ``sending``.

        Claims older than the lease (a process that died) become ``uncertain`` first.
        """
        now = now or datetime.now(UTC)
        with self._write() as connection:
            connection.execute(
                update(mail_queue)
                .where(
                    mail_queue.c.status == "sending", mail_queue.c.claimed_at < now - timedelta(seconds=lease_seconds)
                )
                .values(status="uncertain", changed=now, last_reply="the sending run stopped before an answer")
            )
            due = or_(
                mail_queue.c.status == "pending",
                and_(mail_queue.c.status == "deferred", mail_queue.c.next_attempt <= now),
            )
            ids = (
                connection.execute(select(mail_queue.c.id).where(due).order_by(mail_queue.c.id).limit(limit))
                .scalars()
                .all()
            )
            if not ids:
                return []
            connection.execute(
                update(mail_queue)
                .where(mail_queue.c.id.in_(ids), due)
                .values(
                    status="sending", claimed_at=now, worker=worker, attempts=mail_queue.c.attempts + 1, changed=now
                )
            )
            rows = connection.execute(
                select(mail_queue).where(
                    mail_queue.c.id.in_(ids), mail_queue.c.worker == worker, mail_queue.c.status == "sending"
                )
            ).all()
        return [QueuedMail(r.id, r.kind, r.list, r.subscriber_id, r.email, r.name, r.attempts) for r in rows]

    def record_mail(
        self,
        mail_id: int,
        status: str,
        *,
        reply: str = "",
        message_id: str | None = None,
        next_attempt: datetime | None = None,
        now: datetime | None = None,
    ) -> None:
        """What happened to one claimed message (``pending`` gives it back untouched)."""
        values: dict[str, Any] = {"status": status, "last_reply": reply[:1000], "changed": now or datetime.now(UTC)}
        if message_id:
            values["message_id"] = message_id
        values["next_attempt"] = next_attempt
        if status == "pending":
            values["attempts"] = mail_queue.c.attempts - 1
        with self._write() as connection:
            connection.execute(update(mail_queue).where(mail_queue.c.id == mail_id).values(**values))

    def queue_confirmations(self, list_name: str, now: datetime | None = None) -> int:
        """Queue a confirmation for every unconfirmed subscriber of a list who never had one; how many."""
        from sqlalchemy import exists, func, literal

        from pipeline.store.schema import subscribers

        now = now or datetime.now(UTC)
        asked = exists().where(mail_queue.c.kind == "confirm", mail_queue.c.subscriber_id == subscribers.c.id)
        chosen = select(
            literal("confirm"),
            subscribers.c.list,
            subscribers.c.id,
            subscribers.c.email,
            subscribers.c.name,
            literal("pending"),
            literal(0),
            literal(now, UTCDateTime()),
            literal(now, UTCDateTime()),
        ).where(subscribers.c.list == list_name, subscribers.c.status == "unconfirmed", ~asked)
        with self._write() as connection:
            before = connection.execute(select(func.count()).select_from(mail_queue)).scalar_one()
            connection.execute(
                insert(mail_queue).from_select(
                    ["kind", "list", "subscriber_id", "email", "name", "status", "attempts", "created", "changed"],
                    chosen,
                )
            )
            after = connection.execute(select(func.count()).select_from(mail_queue)).scalar_one()
        return int(after - before)

    def mailed_since(self, kind: str, subscriber_id: int, since: datetime) -> bool:
        """Whether a message of *kind* to this subscriber was queued at or after *since*."""
        with self.engine.connect() as connection:
            found = connection.execute(
                select(mail_queue.c.id)
                .where(
                    mail_queue.c.kind == kind,
                    mail_queue.c.subscriber_id == subscriber_id,
                    mail_queue.c.created >= since,
                )
                .limit(1)
            ).first()
        return found is not None

    def mail_counts(self, kind: str | None = None) -> dict[str, int]:
        """How many queued messages have each status."""
        from sqlalchemy import func

        query = select(mail_queue.c.status, func.count()).group_by(mail_queue.c.status)
        if kind is not None:
            query = query.where(mail_queue.c.kind == kind)
        with self.engine.connect() as connection:
            return {status: int(n) for status, n in connection.execute(query).all()}

    def mail_rows(self, subscriber_id: int | None = None) -> list[dict[str, Any]]:
        """The queue's rows (of one subscriber), oldest first."""
        query = select(mail_queue).order_by(mail_queue.c.id)
        if subscriber_id is not None:
            query = query.where(mail_queue.c.subscriber_id == subscriber_id)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]


__all__ = ["MailQueueMixin"]

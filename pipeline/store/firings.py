"""The store's schedule firings: one row per (schedule, due time), taken before a firing acts."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import (
    select,
    update,
)

from pipeline.store.base import StoreBase, _now, worker_is_dead, worker_name
from pipeline.store.schema import (
    firings,
)

log = logging.getLogger(__name__)


class FiringsMixin(StoreBase):
    """Schedule firings: taken before they act, finished with their status."""

    def take_firing(
        self, schedule: str, due: datetime, status: str = "running", detail: str = "", now: datetime | None = None
    ) -> bool:
        """Record a firing before it acts; False when another scheduler (or an earlier run) has it already."""
        row = {
            "schedule": schedule,
            "due": due,
            "status": status,
            "detail": detail,
            "started": now or _now(),
            "worker": worker_name() if status == "running" else None,
        }
        return self._insert_once(firings, row)

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
        with self._write() as connection:
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

    def claim_firing(
        self, schedule: str, due: datetime, statuses: tuple[str, ...], now: datetime | None = None
    ) -> bool:
        """Take a recorded firing (a one-off send waiting for its time) to run it; False when another took it."""
        with self._write() as connection:
            taken = connection.execute(
                update(firings)
                .where(firings.c.schedule == schedule, firings.c.due == due, firings.c.status.in_(statuses))
                .values(status="running", started=now or _now(), worker=worker_name())
            ).rowcount
        return bool(taken)

    def firings_due(self, prefix: str, statuses: tuple[str, ...], now: datetime) -> list[dict[str, Any]]:
        """Firings of schedules named *prefix*… in one of *statuses* whose time has come, oldest first."""
        query = (
            select(firings)
            .where(firings.c.schedule.startswith(prefix), firings.c.status.in_(statuses), firings.c.due <= now)
            .order_by(firings.c.due)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def firings_named(self, prefix: str) -> list[dict[str, Any]]:
        """Firings of schedules named *prefix*…, newest first."""
        query = select(firings).where(firings.c.schedule.startswith(prefix)).order_by(firings.c.due.desc())
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def cancel_firing(self, schedule: str, due: datetime) -> bool:
        """Cancel a firing that has not run yet."""
        with self._write() as connection:
            return bool(
                connection.execute(
                    update(firings)
                    .where(firings.c.schedule == schedule, firings.c.due == due, firings.c.status == "scheduled")
                    .values(status="cancelled", finished=_now())
                ).rowcount
            )

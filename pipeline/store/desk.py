"""The store's desk: admin accounts, their sessions, and what each source's last collect did."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from pipeline.store.base import StoreBase, _now
from pipeline.store.schema import admin_sessions, admins, source_runs


@dataclass(frozen=True)
class Admin:
    """An account of the admin: who, and the password's hash (never the password)."""

    id: int
    email: str
    password_hash: str


@dataclass(frozen=True)
class AdminSession:
    """A signed-in browser: whose, and the CSRF token its forms carry."""

    admin: Admin
    csrf: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeskMixin(StoreBase):
    """Admin accounts and sessions; the last collect of each source."""

    def add_admin(self, email: str, password_hash: str) -> bool:
        """A new account; False when *email* has one already."""
        return self._insert_once(admins, {"email": email.lower(), "password_hash": password_hash, "created": _now()})

    def set_admin_password(self, email: str, password_hash: str) -> bool:
        """A new password for an account (its sessions end); False when there is no such account."""
        with self._write() as connection:
            row = connection.execute(select(admins.c.id).where(admins.c.email == email.lower())).first()
            if row is None:
                return False
            connection.execute(update(admins).where(admins.c.id == row.id).values(password_hash=password_hash))
            connection.execute(delete(admin_sessions).where(admin_sessions.c.admin_id == row.id))
        return True

    def remove_admin(self, email: str) -> bool:
        """Delete an account and its sessions; False when there is none."""
        with self._write() as connection:
            row = connection.execute(select(admins.c.id).where(admins.c.email == email.lower())).first()
            if row is None:
                return False
            connection.execute(delete(admin_sessions).where(admin_sessions.c.admin_id == row.id))
            connection.execute(delete(admins).where(admins.c.id == row.id))
        return True

    def admin(self, email: str) -> Admin | None:
        """The account of *email* (any case), or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(admins).where(admins.c.email == email.lower())).first()
        return Admin(row.id, row.email, row.password_hash) if row else None

    def admin_emails(self) -> list[str]:
        """Every account, by address."""
        with self.engine.connect() as connection:
            return list(connection.execute(select(admins.c.email).order_by(admins.c.email)).scalars())

    def open_admin_session(self, admin: Admin, token: str, csrf: str) -> None:
        """Remember a signed-in browser by its cookie's hash."""
        now = _now()
        with self._write() as connection:
            connection.execute(
                insert(admin_sessions).values(
                    token_hash=_digest(token), admin_id=admin.id, csrf=csrf, created=now, seen=now
                )
            )
            connection.execute(update(admins).where(admins.c.id == admin.id).values(last_login=now))

    def admin_session(self, token: str, idle: timedelta, longest: timedelta) -> AdminSession | None:
        """The session of a cookie, if it is neither idle past *idle* nor older than *longest*."""
        now = _now()
        digest = _digest(token)
        with self.engine.connect() as connection:
            row = connection.execute(
                select(admin_sessions, admins.c.email, admins.c.password_hash)
                .join(admins, admins.c.id == admin_sessions.c.admin_id)
                .where(admin_sessions.c.token_hash == digest)
            ).first()
        if row is None:
            return None
        if now - row.seen > idle or now - row.created > longest:
            self.close_admin_session(token)
            return None
        if now - row.seen > timedelta(minutes=1):  # a write a minute at most, not one per page
            with self._write() as connection:
                connection.execute(update(admin_sessions).where(admin_sessions.c.token_hash == digest).values(seen=now))
        return AdminSession(Admin(row.admin_id, row.email, row.password_hash), row.csrf)

    def close_admin_session(self, token: str) -> None:
        """Sign a browser out."""
        with self._write() as connection:
            connection.execute(delete(admin_sessions).where(admin_sessions.c.token_hash == _digest(token)))

    def save_source_runs(self, runs: list[tuple[str, dict[str, Any]]], now: datetime | None = None) -> None:
        """Record what each source's collect did (name, and its new, updated, unchanged, failed, error and
        problems), replacing the ones before, in one transaction."""
        finished = now or _now()
        rows = []
        for source, run in runs:
            rows.append(
                {
                    "source": source,
                    "finished": finished,
                    "new": run["new"],
                    "updated": run["updated"],
                    "unchanged": run["unchanged"],
                    "failed": run["failed"],
                    "error": (run["error"] or None) and run["error"][:2000],
                    "problems": "\n".join(run["problems"][:20])[:8000] or None,
                }
            )
        if not rows:
            return
        # Each source's row replaced, all in one transaction with two statements (one per source, built
        # each time, was 7 % of a first collect of 500 sources).
        names = [row["source"] for row in rows]
        with self._write() as connection:
            for start in range(0, len(names), 500):
                connection.execute(delete(source_runs).where(source_runs.c.source.in_(names[start : start + 500])))
            connection.execute(insert(source_runs), rows)

    def source_runs(self) -> dict[str, dict[str, Any]]:
        """The last collect of each source that had one, by source name."""
        with self.engine.connect() as connection:
            return {row.source: dict(row._mapping) for row in connection.execute(select(source_runs))}


__all__ = ["Admin", "AdminSession", "DeskMixin"]

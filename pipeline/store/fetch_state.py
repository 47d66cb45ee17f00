"""The store's fetch state: validators (ETag, Last-Modified) and listed links per URL."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import (
    Connection,
    bindparam,
    insert,
    select,
    update,
)

from pipeline.store.base import StoreBase, _now
from pipeline.store.schema import (
    fetch_state,
    robots,
)
from pipeline.types import (
    Validators,
)

log = logging.getLogger(__name__)


class FetchState(NamedTuple):
    """What the store knows of one URL: its validators, the links it listed (index pages and feeds), and
    when the server last gave or confirmed the version we have."""

    validators: Validators | None
    links: list[str] | None
    checked: datetime


class FetchStateMixin(StoreBase):
    """Fetch state: validators and listed links per URL."""

    def validators(self, url: str) -> Validators | None:
        """The ETag/Last-Modified stored for *url*, if any."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(fetch_state.c.etag, fetch_state.c.last_modified).where(fetch_state.c.url == url)
            ).first()
        if row is None or not (row.etag or row.last_modified):
            return None
        return Validators(row.etag, row.last_modified)

    def fetch_states(self, urls: Sequence[str]) -> dict[str, FetchState]:
        """The stored state of each of *urls* that has one, in one query per 500 URLs."""
        found: dict[str, FetchState] = {}
        wanted = list(dict.fromkeys(urls))
        with self.engine.connect() as connection:
            for start in range(0, len(wanted), 500):
                rows = connection.execute(
                    select(
                        fetch_state.c.url,
                        fetch_state.c.etag,
                        fetch_state.c.last_modified,
                        fetch_state.c.links,
                        fetch_state.c.checked,
                    ).where(fetch_state.c.url.in_(wanted[start : start + 500]))
                )
                for row in rows:
                    validators = Validators(row.etag, row.last_modified) if (row.etag or row.last_modified) else None
                    found[row.url] = FetchState(validators, json.loads(row.links) if row.links else None, row.checked)
        return found

    def confirm_states(self, urls: Sequence[str], now: datetime | None = None) -> None:
        """*urls* answered 304 just now: the versions we have are current as of *now*."""
        if not urls:
            return
        when = now or _now()
        with self._write() as connection:
            connection.execute(_UPDATE_STATE, [{"b_url": url, "checked": when} for url in dict.fromkeys(urls)])

    def robots(self, origins: Sequence[str], max_age: timedelta) -> dict[str, tuple[str, str | None]]:
        """The robots.txt answers (kind and text) kept for *origins*, of those younger than *max_age*."""
        found: dict[str, tuple[str, str | None]] = {}
        oldest = _now() - max_age
        with self.engine.connect() as connection:
            for start in range(0, len(origins), 500):
                rows = connection.execute(select(robots).where(robots.c.origin.in_(origins[start : start + 500])))
                found.update({row.origin: (row.kind, row.body) for row in rows if row.fetched >= oldest})
        return found

    def save_robots(self, answers: Sequence[tuple[str, str, str | None]]) -> None:
        """Keep what each origin's robots.txt said: (origin, kind, text), kind ``rules`` (with its text), ``none``
        or ``disallow``; in one transaction."""
        now = _now()
        with self._write() as connection:
            for origin, kind, body in answers:
                values = {"kind": kind, "body": body, "fetched": now}
                if not connection.execute(update(robots).where(robots.c.origin == origin).values(**values)).rowcount:
                    connection.execute(insert(robots).values(origin=origin, **values))

    def links(self, url: str) -> list[str] | None:
        """The item links (or entry ids) stored for an index page or feed."""
        with self.engine.connect() as connection:
            value = connection.execute(select(fetch_state.c.links).where(fetch_state.c.url == url)).scalar()
        return json.loads(value) if value else None


def save_state(
    connection: Connection, url: str, validators: Validators, links: list[str] | None, now: datetime
) -> None:
    """Write (insert or update) the fetch state of one URL in *connection*'s transaction."""
    values = {"etag": validators.etag, "last_modified": validators.last_modified, "checked": now}
    if links is not None:
        values["links"] = json.dumps(links, ensure_ascii=False)
    # Statements built once, their SET clause from the parameters: building one per URL was a tenth of
    # a first collect's interpreter time (bench.hosts, py-spy --gil).
    if connection.execute(_UPDATE_STATE, {"b_url": url, **values}).rowcount == 0:
        connection.execute(_INSERT_STATE, {"url": url, **values})


_UPDATE_STATE = update(fetch_state).where(fetch_state.c.url == bindparam("b_url"))
_INSERT_STATE = insert(fetch_state)

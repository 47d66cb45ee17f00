"""The store's media: which lead images were fetched (and their files' content hash), and which could not be."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import insert, select, update

from pipeline.store.base import StoreBase, _now
from pipeline.store.schema import items, link_clicks, media
from pipeline.types import Media

#: An image that failed this many times is not tried again (a new URL for it is a new image).
MAX_ATTEMPTS = 3
#: A failed image is tried again after this long, not on every collect.
RETRY_AFTER = timedelta(hours=20)


def url_key(url: str) -> str:
    """The key of an image URL: its SHA-256 (URLs are longer than an index likes)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


class MediaMixin(StoreBase):
    """Lead images: fetched once, kept by content hash."""

    def images_to_fetch(self, limit: int = 200) -> list[str]:
        """Image URLs that items name and that are neither fetched nor given up on, at most *limit*."""
        with self.engine.connect() as connection:
            wanted = connection.execute(select(items.c.image).where(items.c.image.is_not(None)).distinct()).scalars()
            known = {
                row.url_key: (row.status, row.attempts, row.tried)
                for row in connection.execute(select(media.c.url_key, media.c.status, media.c.attempts, media.c.tried))
            }
        out = []
        recently = _now() - RETRY_AFTER
        for url in wanted:
            status, attempts, tried = known.get(url_key(url), ("new", 0, None))
            if status == "ok" or attempts >= MAX_ATTEMPTS or (tried is not None and tried > recently):
                continue
            out.append(url)
            if len(out) >= limit:
                break
        return out

    def save_media(
        self,
        url: str,
        *,
        digest: str | None = None,
        ext: str | None = None,
        width: int | None = None,
        height: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Record an image fetched (with its digest, format and size) or not (with *reason*)."""
        key = url_key(url)
        values = {
            "status": "ok" if digest else "failed",
            "digest": digest,
            "ext": ext,
            "width": width,
            "height": height,
            "reason": reason,
            "tried": _now(),
        }
        with self._write() as connection:
            changed = connection.execute(
                update(media).where(media.c.url_key == key).values(attempts=media.c.attempts + 1, **values)
            ).rowcount
            if not changed:
                connection.execute(insert(media).values(url_key=key, url=url, attempts=1, **values))

    def media_for(self, urls: Iterable[str]) -> dict[str, Media]:
        """The fetched images among *urls*, by URL."""
        keys = {url_key(url): url for url in urls if url}
        if not keys:
            return {}
        found: dict[str, Media] = {}
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(media).where(media.c.url_key.in_(list(keys)), media.c.status == "ok")
            ).all()
        for row in rows:
            found[row.url] = Media(row.url, row.digest, row.ext, row.width, row.height)
        return found

    def media_failures(self) -> list[tuple[str, str]]:
        """(URL, reason) of every image that could not be fetched."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(media.c.url, media.c.reason).where(media.c.status == "failed")).all()
        return [(row.url, row.reason or "") for row in rows]


class ClicksMixin(StoreBase):
    """Clicks per issue and link: counted, never attributed."""

    def count_click(self, list_name: str, number: int, url: str) -> None:
        """One more follow of *url* in issue *number* of a list."""
        key = url_key(url)
        mine = (link_clicks.c.list == list_name) & (link_clicks.c.number == number) & (link_clicks.c.url_key == key)
        with self._write() as connection:
            if not connection.execute(update(link_clicks).where(mine).values(clicks=link_clicks.c.clicks + 1)).rowcount:
                connection.execute(
                    insert(link_clicks).values(list=list_name, number=number, url_key=key, url=url, clicks=1)
                )

    def clicks(self, list_name: str, number: int) -> list[tuple[str, int]]:
        """(URL, clicks) of an issue, most clicked first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(link_clicks.c.url, link_clicks.c.clicks)
                .where(link_clicks.c.list == list_name, link_clicks.c.number == number)
                .order_by(link_clicks.c.clicks.desc(), link_clicks.c.url)
            ).all()
        return [(row.url, row.clicks) for row in rows]

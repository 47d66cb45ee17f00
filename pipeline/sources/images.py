"""Lead images: fetched once at collect time, checked and resized with Pillow, kept by content hash.

An email that hot-links a source's images breaks when the source moves them or
blocks hot-linking, and makes every subscriber on a phone download the
original (often megabytes). So each image an item names is fetched once,
through the same polite fetcher as the pages (robots.txt, per-host delay,
size and time caps), opened by Pillow (which also refuses what is not an
image), turned upright, and written in the widths the templates show it at,
twice over for high-density screens: 640 px (a card: 200 px, or the text's
width on a phone) and 1200 px (a leader: 600 px). Files are named by the
SHA-256 of the original bytes, so the same picture under two URLs is kept
once, and a file never changes: it can be cached for a year.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pipeline.config import Settings
from pipeline.errors import SourceError
from pipeline.images import NotAnImage, keep_image
from pipeline.sources.http import Fetcher, NotModified, fetch_by_host
from pipeline.store import Store
from pipeline.store.media import MAX_ATTEMPTS
from pipeline.types import MEDIA_WIDTHS

log = logging.getLogger(__name__)

WIDTHS = MEDIA_WIDTHS
#: Top-level domains reserved for examples and tests (RFC 2606, RFC 6761): no image lives there.
RESERVED = (".example", ".invalid", ".test", ".localhost")


@dataclass
class ImageReport:
    """What fetching images did."""

    kept: int = 0
    missing: list[str] = field(default_factory=list)


def fetch_images(
    settings: Settings, store: Store, fetcher: Fetcher, *, limit: int = 200, pool: ThreadPoolExecutor | None = None
) -> ImageReport:
    """Fetch and keep every image the items name that is not kept yet (at most *limit* per collect).

    With *pool*, hosts are fetched in parallel (each one request at a time); the store is written here.
    """
    report = ImageReport()
    wanted: list[str] = []
    for url in store.images_to_fetch(limit):
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https"):
            store.save_media(url, reason="not an http(s) URL")
            report.missing.append(f"image {url}: not an http(s) URL")
        elif host.endswith(RESERVED):
            for _ in range(MAX_ATTEMPTS):  # by rule, never tried again
                store.save_media(url, reason="a reserved example domain (RFC 2606): no image lives there")
            log.info("image %s not fetched: a reserved example domain", url)
        else:
            wanted.append(url)

    def fetch_one(url: str) -> tuple[str, str, int, int] | str | None:
        """The kept image's (digest, format, width, height), why it could not be kept, or None."""
        try:
            page = fetcher.get(url)
            if isinstance(page, NotModified):  # no validators were sent: cannot happen, but never a crash
                return None
            return keep_image(page.content, settings.media_dir)
        except (SourceError, NotAnImage, OSError) as err:
            return str(err)

    if pool is None:
        outcomes = [fetch_one(url) for url in wanted]
    else:
        outcomes = [future.result() for future in fetch_by_host(pool, [(url, url) for url in wanted], fetch_one)]
    for url, outcome in zip(wanted, outcomes, strict=True):
        if outcome is None:
            continue
        if isinstance(outcome, str):
            store.save_media(url, reason=outcome)
            report.missing.append(f"image {outcome}" if outcome.startswith(url) else f"image {url}: {outcome}")
            log.info("image %s not kept: %s", url, outcome)
            continue
        digest, ext, width, height = outcome
        store.save_media(url, digest=digest, ext=ext, width=width, height=height)
        report.kept += 1
    return report


__all__ = ["ImageReport", "NotAnImage", "WIDTHS", "fetch_images", "keep_image"]

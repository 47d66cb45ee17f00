"""``kind = "feed"``: RSS 0.9x, 1.0 and 2.0, and Atom, read by feedparser.

The feed is fetched conditionally; a 304 means every entry is unchanged. Each
entry becomes an :class:`~pipeline.sources.Item` keyed by its guid (or link),
its HTML sanitized and its links made absolute against the entry's link.
"""

from __future__ import annotations

import calendar
import functools
import importlib.util
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import SourceError
from pipeline.sources import (
    Collected,
    Failed,
    Found,
    Item,
    ListingUpdate,
    Pending,
    Skipped,
    Source,
    Unchanged,
    ValidatorLookup,
    attr,
)
from pipeline.sources.dates import parse_date, plausible
from pipeline.sources.http import Fetcher, NotModified, Page
from pipeline.text import clean_author, clean_html, clean_text, shorten, title_from_text

log = logging.getLogger(__name__)


@functools.cache
def _feedparser() -> Any:
    """feedparser, imported when the first feed is read, not when a source is opened.

    A collect whose feeds all answer 304 reads none: importing feedparser, bs4 and lxml before its first
    request held every fetching thread back 0.09 s (bench.hosts' second run). The reading processes have
    them from their server's preload (:mod:`pipeline.sources.reading`).
    """
    import feedparser
    import feedparser.api
    import feedparser.mixin
    import feedparser.urls

    # feedparser asks xml.sax for libxml2's driver first, on every parse: where it is not installed (it is not
    # a dependency) that is a failed import per feed, under the interpreter's import lock, which serialised a
    # collect's fetching threads (bench.hosts: most of a first run of 400 feeds, py-spy). Expat is what parses.
    if importlib.util.find_spec("drv_libxml2") is None:
        feedparser.api.PREFERRED_XML_PARSERS[:] = []

    # At every element's start feedparser joins the base URI with itself (its xml:base bookkeeping): 8 urljoins
    # an entry, a quarter of parsing a feed of 20 (py-spy, bench.hosts). The join is a pure function of its two
    # strings, so it is remembered: 8.4 -> 6.5 ms a feed, the parsed feeds equal.
    urljoin = functools.lru_cache(maxsize=4096)(feedparser.urls._urljoin)
    feedparser.urls._urljoin = feedparser.mixin._urljoin = urljoin
    return feedparser


#: C0 control characters: lxml will not take them back (see pipeline.sources.extract.parse).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _struct_to_datetime(value: time.struct_time | None) -> datetime | None:
    # feedparser's *_parsed values are UTC struct_times.
    return datetime.fromtimestamp(calendar.timegm(value), tz=UTC) if value else None


def _plain(value: str | None) -> str | None:
    """The text an HTML value shows: entities decoded, tags gone, inline elements running on (``ft<sup>2</sup>``
    is ``ft2``, not ``ft 2``), blocks apart."""
    if not value:
        return None
    if "<" not in value and "&" not in value:
        return clean_text(value)
    from lxml import etree

    from pipeline.sources.extract import element_text
    from pipeline.text import html_fragment

    try:
        return clean_text(element_text(html_fragment(_CONTROL.sub("", value))))
    except (etree.ParserError, ValueError):
        from bs4 import BeautifulSoup

        return clean_text(BeautifulSoup(value, "html.parser").get_text(" "))


def _web(url: object) -> bool:
    """Whether *url* is an http(s) address: the only links a feed entry may pass on."""
    return isinstance(url, str) and url.lower().startswith(("http://", "https://"))


def _entry_hash(entry: Any) -> str:
    """An id for an entry with no guid, link or enclosure: stable while its title and text stay the same."""
    import hashlib

    text = "\x1f".join(str(dict.get(entry, key) or "") for key in ("title", "summary", "published", "updated"))
    return "urn:sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class LeftOut(SourceError):
    """An entry left out on purpose, with a line (not a failure): nothing in it to show, or no web link."""


class NotAWebLink(LeftOut):
    """An entry whose link is not http(s): left out with a line."""


class FeedSource(Source):
    """Collects the entries of an RSS or Atom feed."""

    #: Where the feed was read from, after redirects (the last resort for relative links in its content).
    feed_url: str | None = None

    def collect(self, fetcher: Fetcher, known: ValidatorLookup) -> Iterator[Collected | Pending]:
        """Yield one result per entry of the feed (at most ``max_items``); when it has not changed since its
        entries were stored, one Unchanged per entry it listed."""
        page = fetcher.get(self.url, known.validators(self.url))
        if isinstance(page, NotModified):
            stored = known.links(self.url)
            if stored is not None:
                self.confirmed.append(self.url)
                self.expected = len(stored)
                yield from (Unchanged(entry_id) for entry_id in stored)
                return
            page = fetcher.get(self.url)
            assert not isinstance(page, NotModified)
        fetched = page
        yield from self.read(fetched, lambda parsed: self.finish(fetched, *parsed))

    def finish(self, page: Page, results: list[Collected], ids: list[str]) -> list[Collected]:
        """Take the read feed's results (read here or in another process) as this source's: its listing is the
        ids it gave."""
        self.feed_url = page.final_url
        self.expected = len(results)
        self.listing = ListingUpdate(self.url, page.validators, ids)
        return results

    def read_page(self, page: Page) -> tuple[list[Collected], list[str]]:
        """One result per entry of a fetched feed (at most ``max_items``), and the ids it listed; SourceError
        when it is not a feed."""
        self.feed_url = page.final_url
        content_type = page.content_type or "application/xml"
        if page.charset:  # the HTTP charset: a KOI8-R feed declared only in Content-Type came out as mojibake
            content_type += f"; charset={page.charset}"
        parsed = _feedparser().parse(
            page.content,
            response_headers={"content-location": page.final_url, "content-type": content_type},
            sanitize_html=False,  # nh3 does it, with the same rules as for pages
            resolve_relative_uris=False,  # against the entry's link, not the feed's URL (read_entry)
        )
        if parsed.bozo and not parsed.entries:
            raise SourceError(f"not a readable RSS or Atom feed ({parsed.get('bozo_exception')})", url=self.url)
        if not parsed.get("version") and not parsed.entries:
            raise SourceError("not an RSS or Atom feed", url=self.url)
        language = parsed.feed.get("language") or self.settings.site.language
        ids: list[str] = []
        results: list[Collected] = []
        for number, entry in enumerate(parsed.entries[: self.source.max_items], start=1):
            try:
                item = self.read_entry(entry, language.split("-")[0] if language else None)
            except LeftOut as err:
                results.append(Skipped(f"{self.url}#entry-{number}", str(err)))
                continue
            except SourceError as err:
                results.append(Failed(f"{self.url}#entry-{number}", str(err)))
                continue
            if item.id in ids:  # a guid repeated in one feed: the first entry stands, the later one is reported
                words = f"entry {item.title!r} repeats the id {item.id[:100]!r}"
                results.append(Skipped(f"{self.url}#entry-{number}", words))
                continue
            ids.append(item.id)
            results.append(Found(item, page.final_url))
        return results, ids

    def read_entry(self, entry: Any, language: str | None) -> Item:
        """One feed entry as an Item (a note, titled by its first words, when it has no title); LeftOut when it
        has neither a title nor text or (NotAWebLink) no http(s) address.

        Its id: the guid, else the link, else the enclosure's URL (a podcast episode), else a hash of the entry.
        """
        link = entry.get("link")
        enclosure = next(
            (e.get("href") for e in entry.get("links", []) if e.get("rel") == "enclosure" and _web(e.get("href"))),
            None,
        )
        entry_id = entry.get("id") or link or enclosure or _entry_hash(entry)
        # Plain text stays text ("Vec<T> &amp; Box" is a title, not markup); only an HTML title loses its tags.
        plain_title = (entry.get("title_detail") or {}).get("type") == "text/plain"
        title = clean_text(entry.get("title")) if plain_title else _plain(entry.get("title"))
        content = entry.get("content") or []
        detail = content[0] if content else entry.get("summary_detail") or {}
        html = detail.get("value", "") if content else entry.get("summary", "")
        # A title-less entry (RSS 2.0 allows it: microblogs, link blogs) is a note, named by its first words.
        note = not title
        title = title or title_from_text(_plain(html))
        if not title:  # an empty <entry/>: nothing a reader could see (feeds do carry them)
            raise LeftOut(f"entry {entry_id[:100]!r} has neither a title nor any text")
        # feedparser's `link` is the first text/html alternate (or the guid): a PDF or other alternate comes next.
        alternates = [e.get("href") for e in entry.get("links", []) if e.get("rel", "alternate") == "alternate"]
        url = next((u for u in (link, *alternates, entry_id, enclosure) if _web(u)), None)
        if url is None:
            # A feed is untrusted: a javascript: or data: link would be republished in every feed and issue.
            raise NotAWebLink(f"entry {title!r}: its link {(link or entry_id)[:100]!r} is not http(s)")
        body = clean_html(html, self.content_base(detail, link))
        tz = self.settings.site.tz
        published = plausible(
            parse_date(entry.get("published"), tz) or _struct_to_datetime(entry.get("published_parsed"))
        )
        # dict.get: FeedParserDict.get("updated") falls back to "published" (with a warning).
        modified = plausible(
            parse_date(dict.get(entry, "updated"), tz) or _struct_to_datetime(dict.get(entry, "updated_parsed"))
        )
        if published is None:
            published = modified
        author_detail = entry.get("author_detail") or {}
        author = clean_author(author_detail.get("name") or entry.get("author"))
        summary_html = entry.get("summary") if content else None
        summary = shorten(_plain(summary_html)) or shorten(_plain(html))
        image, alt = self._image(entry, body)
        return Item(
            id=entry_id,
            source=self.name,
            category=self.source.category,
            url=url,
            title=title,
            author=author,
            published=published,
            modified=modified if modified != published else None,
            summary=summary,
            body_html=body,
            image=image,
            image_alt=alt,
            language=language,
            note=note,
        )

    def content_base(self, detail: Any, link: str | None) -> str:
        """What relative links in an entry's content are relative to: an ``xml:base`` the feed declares (RFC 4287
        section 7: the author's own word), else the entry's link (an item's text is written on its page), else
        the feed's URL. (Daring Fireball's linked-list entries link elsewhere and declare xml:base: their
        content's links are the blog's, not the linked site's.)"""
        feed_url = self.feed_url or self.url
        declared = detail.get("base") if isinstance(detail, dict) else None
        if declared and declared != feed_url and _web(declared):
            return str(declared)
        if _web(link):
            return str(link)
        return str(declared or feed_url)

    @staticmethod
    def _image(entry: Any, body: str) -> tuple[str | None, str | None]:
        for media in entry.get("media_content", []) + entry.get("media_thumbnail", []):
            url = media.get("url")
            if _web(url) and (
                media.get("medium") in (None, "image") or str(media.get("type", "")).startswith("image/")
            ):
                return url, None
        for link in entry.get("links", []):
            if (
                link.get("rel") == "enclosure"
                and _web(link.get("href"))
                and str(link.get("type", "")).startswith("image/")
            ):
                return link.get("href"), None
        if "<img" not in body.lower():  # most entries have none: no parse (a tenth of a first collect's CPU)
            return None, None
        from bs4 import BeautifulSoup, Tag

        img = BeautifulSoup(body, "html.parser").find("img", src=True)
        return (attr(img, "src"), clean_text(attr(img, "alt"))) if isinstance(img, Tag) else (None, None)

"""Feeds: RSS 2.0, Atom 1.0 and JSON Feed 1.1 for each source and for all together.

Interface of this stage: :func:`build_feeds` computes the files (no side
effects), :func:`write_feeds` is the only writer. A feed's bytes depend only on
its items, never on the clock, so an unchanged feed is not rewritten and a
reader's conditional GET keeps answering 304.

feedgen writes RSS and Atom; its quirks are handled here rather than inherited:
entries are added with ``order="append"`` (it prepends by default); the RSS
channel link is the last ``link()`` call, so the alternate link goes last; RSS
wants an author e-mail, so names go in ``dc:creator``; ``content:encoded`` only
appears with a description, so every entry gets one; Atom entry links lose
their ``rel`` and ``type`` in feedgen, so they are added to the Atom XML after
it is built; and every date is timezone-aware. JSON Feed, which feedgen lacks,
is written from the same data.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from bs4 import BeautifulSoup
from feedgen.feed import FeedGenerator
from lxml import etree

from pipeline import __version__
from pipeline.config import Settings
from pipeline.errors import FeedError
from pipeline.store import Store
from pipeline.text import clean_text, shorten
from pipeline.types import MEDIA_WIDTHS, Item, Media, StoredItem

ATOM_NS = "http://www.w3.org/2005/Atom"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ALL = "all"
#: An empty feed still needs an <updated>: a fixed one keeps its bytes stable.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CATEGORY_LABELS = {
    "sv": {"leader": "Ledare", "article": "Artikel"},
    "en": {"leader": "Leader", "article": "Article"},
}
SUFFIXES = ("rss", "atom", "json")


@dataclass(frozen=True)
class FeedFile:
    """One feed file to write: its name (``all.atom``) and its bytes."""

    name: str
    content: bytes


@dataclass(frozen=True)
class FeedImage:
    """An item's image as a feed shows it: served by flygblad, with its size."""

    url: str
    width: int
    height: int
    length: int
    type: str


@dataclass(frozen=True)
class Channel:
    """What a feed is about: shared by its RSS, Atom and JSON versions."""

    name: str
    title: str
    home_url: str
    language: str
    description: str
    feeds_url: str
    tz: tzinfo = UTC
    #: The items' images as flygblad kept them (by the URL the source gave), and where they are served.
    images: Mapping[str, Media] = field(default_factory=dict)
    media_url: str = ""
    media_dir: Path | None = None

    def image(self, item: Item) -> FeedImage | None:
        """The item's kept image at leader size, or None (a feed never hot-links the source's)."""
        kept = self.images.get(item.image) if item.image else None
        if kept is None:
            return None
        name = kept.file_for(MEDIA_WIDTHS[1])
        width, height = kept.size_at(MEDIA_WIDTHS[1])
        try:
            length = (self.media_dir / name).stat().st_size if self.media_dir else 0
        except OSError:
            return None  # the file went missing: no enclosure that 404s
        kind = "image/png" if kept.ext == "png" else "image/jpeg"
        return FeedImage(f"{self.media_url}/{name}", width, height, length, kind)

    def local(self, value: datetime) -> datetime:
        """*value* in the site's time zone: readers see the date the site printed."""
        return value.astimezone(self.tz)

    def self_url(self, suffix: str) -> str:
        """Where this feed is published, e.g. ``https://example.org/feeds/all.atom``."""
        return f"{self.feeds_url}/{self.name}.{suffix}"


def entry_updated(stored: StoredItem) -> datetime:
    """When an entry last changed, as readers should see it.

    The page's own modified date if it gives one; else, when flygblad saw the
    content change after first collecting it, that time; else the publication date.
    """
    item = stored.item
    if item.modified:
        return item.modified
    if stored.updated > stored.first_seen:
        return stored.updated
    return item.published or stored.first_seen


def _published(stored: StoredItem) -> datetime:
    return stored.item.published or stored.first_seen


def _summary(stored: StoredItem) -> str:
    item = stored.item
    if item.summary:
        return item.summary
    return shorten(clean_text(BeautifulSoup(item.body_html, "html.parser").get_text(" "))) or item.title


def _label(category: str, language: str) -> str:
    return CATEGORY_LABELS.get(language.split("-")[0], CATEGORY_LABELS["en"]).get(category, category)


# ---------------------------------------------------------------- builders


def _generator(channel: Channel, entries: Sequence[StoredItem], suffix: str, author: str) -> FeedGenerator:
    fg = FeedGenerator()
    fg.load_extension("dc", atom=False, rss=True)
    fg.load_extension("media", atom=True, rss=True)
    fg.id(channel.self_url("atom"))
    fg.title(channel.title)
    fg.subtitle(channel.description)
    fg.language(channel.language)
    fg.author({"name": author})
    fg.generator("flygblad", version=__version__)
    fg.link(href=channel.self_url(suffix), rel="self", type=_MEDIA_TYPES[suffix])
    fg.link(href=channel.home_url, rel="alternate", type="text/html")  # last: it becomes RSS <link>
    updated = channel.local(max((entry_updated(e) for e in entries), default=EPOCH))
    fg.updated(updated)
    fg.lastBuildDate(updated)
    for stored in entries:
        item = stored.item
        fe = fg.add_entry(order="append")
        fe.id(item.id)
        fe.guid(item.id, permalink=item.id == item.url)
        if not (item.note and suffix == "rss"):  # RSS 2.0 allows an item without a title; Atom does not
            fe.title(item.title)
        fe.link(href=item.url, rel="alternate", type="text/html")
        fe.summary(_summary(stored))
        fe.description(_summary(stored), isSummary=True)
        fe.content(item.body_html, type="html")
        if item.author:
            fe.author({"name": item.author})
            fe.dc.dc_creator(item.author)
        fe.category(term=item.category, label=_label(item.category, channel.language))
        fe.published(channel.local(_published(stored)))
        fe.updated(channel.local(entry_updated(stored)))
        image = channel.image(item)
        if image is not None:
            fe.media.content(
                {
                    "url": image.url,
                    "medium": "image",
                    "type": image.type,
                    "width": str(image.width),
                    "height": str(image.height),
                }
            )
            if suffix == "rss":
                fe.enclosure(image.url, str(image.length), image.type)
    return fg


_MEDIA_TYPES = {"rss": "application/rss+xml", "atom": "application/atom+xml", "json": "application/feed+json"}


def _fix_atom_links(channel: Channel, atom: bytes, entries: Sequence[StoredItem]) -> bytes:
    """Give each Atom entry its alternate (and image enclosure) link with rel and type."""
    root = etree.fromstring(atom)
    for element, stored in zip(root.findall(f"{{{ATOM_NS}}}entry"), entries, strict=True):
        for link in element.findall(f"{{{ATOM_NS}}}link"):
            element.remove(link)
        etree.SubElement(element, f"{{{ATOM_NS}}}link", rel="alternate", type="text/html", href=stored.item.url)
        image = channel.image(stored.item)
        if image is not None:
            attributes = {"rel": "enclosure", "href": image.url, "type": image.type, "length": str(image.length)}
            etree.SubElement(element, f"{{{ATOM_NS}}}link", attributes)
    etree.indent(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _json_feed(channel: Channel, entries: Sequence[StoredItem], author: str) -> bytes:
    items = []
    for stored in entries:
        item = stored.item
        entry: dict[str, object] = {
            "id": item.id,
            "url": item.url,
            **({} if item.note else {"title": item.title}),  # JSON Feed: a micropost has no title
            "content_html": item.body_html,
            "summary": _summary(stored),
            "date_published": channel.local(_published(stored)).isoformat(),
            "date_modified": channel.local(entry_updated(stored)).isoformat(),
            "tags": [item.category],
        }
        image = channel.image(item)
        if image is not None:
            entry["image"] = image.url
        if item.author:
            entry["authors"] = [{"name": item.author}]
        if item.language:
            entry["language"] = item.language
        if item.author_role:
            entry["_flygblad"] = {
                "author_role": item.author_role,
                "category_label": _label(item.category, channel.language),
            }
        items.append(entry)
    feed = {
        "version": JSON_FEED_VERSION,
        "title": channel.title,
        "home_page_url": channel.home_url,
        "feed_url": channel.self_url("json"),
        "description": channel.description,
        "language": channel.language,
        "authors": [{"name": author}],
        "items": items,
    }
    # Compact: json.dumps with an indent runs its pure-Python encoder (a fifth of building the feeds of
    # 1,000 items, bench.feeds); feed readers do not read the whitespace.
    return (json.dumps(feed, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def channel_files(channel: Channel, entries: Sequence[StoredItem], author: str) -> list[FeedFile]:
    """The RSS, Atom and JSON files of one feed."""
    try:
        rss = _generator(channel, entries, "rss", author).rss_str(pretty=True)
        atom = _fix_atom_links(channel, _generator(channel, entries, "atom", author).atom_str(pretty=True), entries)
    except ValueError as err:  # feedgen refuses an entry it cannot write
        raise FeedError(f"feed {channel.name!r}: {err}") from err
    return [
        FeedFile(f"{channel.name}.rss", rss),
        FeedFile(f"{channel.name}.atom", atom),
        FeedFile(f"{channel.name}.json", _json_feed(channel, entries, author)),
    ]


def build_feeds(settings: Settings, store: Store) -> list[FeedFile]:
    """Every feed file: one set for all sources together (``all``), one per source."""
    site = settings.site
    feeds_url = settings.feeds_url
    limit = settings.feeds.max_items
    everything = store.items(limit=limit)
    per_source = {source.name: store.items(source=source.name, limit=limit) for source in settings.sources}
    named = {s.item.image for entries in (everything, *per_source.values()) for s in entries if s.item.image}
    images = store.media_for(named)

    def channel(name: str, title: str, home: str) -> Channel:
        return Channel(
            name,
            title,
            home,
            site.language,
            title,
            feeds_url,
            site.tz,
            images=images,
            media_url=settings.media_url,
            media_dir=settings.media_dir,
        )

    files = channel_files(
        channel(ALL, site.title, site.base_url),
        everything,
        site.title,
    )
    for source in settings.sources:
        location = settings.source_location(source)
        home = location if location.startswith(("http://", "https://")) else site.base_url
        title = source.title or f"{site.title}: {_label(source.category, site.language)}"
        files.extend(channel_files(channel(source.name, title, home), per_source[source.name], site.title))
    return files


# ---------------------------------------------------------------- writer


def write_feeds(directory: Path, files: Sequence[FeedFile]) -> list[Path]:
    """Write each file atomically (temp file + rename), only when its bytes changed.

    Returns the paths that were (re)written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FeedError(f"cannot create feed folder {directory}: {err.strerror}") from err
    written = []
    for feed in files:
        path = directory / feed.name
        try:
            if path.exists() and path.read_bytes() == feed.content:
                continue
            with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{feed.name}.", delete=False) as temp:
                temp.write(feed.content)
                temp.flush()
                os.fsync(temp.fileno())
            os.chmod(temp.name, 0o644)
            os.replace(temp.name, path)
        except OSError as err:
            raise FeedError(f"cannot write {path}: {err.strerror}") from err
        written.append(path)
    return written


__all__ = ["ALL", "Channel", "FeedFile", "build_feeds", "channel_files", "entry_updated", "write_feeds"]

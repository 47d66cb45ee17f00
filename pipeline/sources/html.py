"""``kind = "html"``: an index page whose links lead to item pages.

The index is fetched (conditionally), its item links found with the source's
``links`` selector or, without one, by the usual markup of listings (headline
links inside ``article`` elements, ``.entry-title a``, ``h2 a``). An index that
links to nothing is read as an item itself. Each item page is then fetched
conditionally and read by :func:`~pipeline.sources.extract.extract_page`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urldefrag, urljoin, urlsplit

from pipeline.errors import SourceError
from pipeline.sources import (
    Collected,
    Failed,
    Found,
    Item,
    ListingUpdate,
    Pending,
    Source,
    Unchanged,
    ValidatorLookup,
    attr,
)
from pipeline.sources.http import Fetcher, NotModified, Page

if TYPE_CHECKING:
    from bs4 import Tag

    from pipeline.sources.extract import Extracted

# bs4 and the extractor (lxml) are imported where a page is read: a collect whose pages all answer 304
# reads none (see pipeline.sources.feed._feedparser).

log = logging.getLogger(__name__)

#: Where listings put the link of each item, most specific first.
LISTING_LINKS = (
    "article h1 a[href], article h2 a[href], article h3 a[href], .entry-title a[href], "
    ".post-title a[href], .h-entry .u-url[href], h2 a[href], h3 a[href]"
)
#: Links in these parts of a page are navigation, not items...
CHROME = ("nav", "aside")
#: ...and so are links in a header or footer, unless it is an article's own.
PAGE_CHROME = ("header", "footer")
HTML_TYPES = ("text/html", "application/xhtml+xml", "")


def _in_chrome(anchor: Tag) -> bool:
    if anchor.find_parent(CHROME):
        return True
    block = anchor.find_parent(PAGE_CHROME)
    return (
        block is not None
        and block.find_parent(["article", "main"]) is None
        and "entry" not in (attr(block, "class") or "")
    )


def no_text_reason(extracted: Extracted, selected: bool) -> str:
    """Why a page gave no article text, in words a communicator can act on."""
    if selected:
        return "no article text found on the page: the [sources.select] body selector matches nothing with text"
    if extracted.page_words == 0:
        return (
            "no article text found on the page: it has no text at all "
            "(it may be filled in by JavaScript, which flygblad does not run; its feed may have the text)"
        )
    return (
        f"no article text found on the page: its {extracted.page_words} words are all menus, links, "
        "lists or other page parts; if the article is there, name its element in [sources.select] body"
    )


#: An article page whose listing has not changed is asked again (a conditional GET) once this old: a
#: correction shows within a day (at once with ``collect --refresh``), and a site with 100 articles listed
#: is not asked 100 times an hour.
RECHECK = timedelta(days=1)


def _web(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _alone(read: Found | Failed) -> list[Collected]:
    """An item page gives one result."""
    return [read]


class HtmlSource(Source):
    """Collects the items an HTML index page links to."""

    def collect(self, fetcher: Fetcher, known: ValidatorLookup) -> Iterator[Collected | Pending]:
        """Yield one result per item link of the index page (at most ``max_items``)."""
        index = fetcher.get(self.url, known.validators(self.url))
        links: list[str] | None = known.links(self.url) if isinstance(index, NotModified) else None
        if isinstance(index, NotModified) and links is None:
            index = fetcher.get(self.url)  # validators without links: read the index again
        listing_unchanged = isinstance(index, NotModified)
        if listing_unchanged:
            self.confirmed.append(self.url)
        if isinstance(index, Page):
            found = self.item_links(index)
            links = found if found else [self.url]
            self.listing = ListingUpdate(self.url, index.validators, links)
        assert links is not None
        links = links[: self.source.max_items]
        self.expected = len(links)
        for url in links:
            if url == self.url:  # the index page is itself the item
                if isinstance(index, NotModified):
                    yield Unchanged(url)
                else:
                    yield from self.read(index, _alone)
                continue
            validators = known.validators(url)
            # A page on this machine costs a stat to ask again: only a web page is spared the question.
            checked = known.checked(url) if validators and listing_unchanged and _web(url) else None
            if checked is not None and datetime.now(UTC) - checked < RECHECK:
                yield Unchanged(url, asked=False)  # the listing did not change, and this page was current today
                continue
            try:
                page = fetcher.get(url, validators)
            except SourceError as err:
                yield Failed(url, str(err))
                continue
            if isinstance(page, NotModified):
                self.confirmed.append(url)
                yield Unchanged(url)
            else:
                yield from self.read(page, _alone)

    def item_links(self, index: Page) -> list[str]:
        """The item URLs on an index page, in page order, without duplicates."""
        if index.content_type not in HTML_TYPES:
            raise SourceError(f"expected an HTML page, got {index.content_type}", url=index.url)
        # The charset the server gave first (as browsers take it); without it, bs4 asks chardet to guess:
        # 10 ms of the interpreter for each section page of a collect (bench.hosts, py-spy --gil).
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(index.content, "lxml", from_encoding=index.charset)
        if self.source.links:
            elements = soup.select(self.source.links)
            anchors = [e if e.name == "a" and e.get("href") else e.find("a", href=True) for e in elements]
        else:
            anchors = [a for a in soup.select(LISTING_LINKS) if not _in_chrome(a)]
        own = urlsplit(index.final_url)
        links: list[str] = []
        for anchor in anchors:
            if anchor is None:
                continue
            url = urldefrag(urljoin(index.final_url, (attr(anchor, "href") or "").strip())).url
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https", "file"):
                continue
            if parts.scheme == "file" and own.scheme != "file":
                continue  # a page from the web never makes flygblad read this machine's files
            if not self.source.links and (parts.scheme, parts.netloc) != (own.scheme, own.netloc):
                continue  # discovered links stay on the site; a selector may point anywhere
            if url != urldefrag(index.final_url).url and url not in links:
                links.append(url)
        return links

    def read_page(self, page: Page) -> Found | Failed:
        """One item page read into an item, or why it could not be (that page fails, not the source)."""
        try:
            return Found(self.read_item(page), page.url, page.validators)
        except SourceError as err:
            return Failed(page.url, str(err))
        except Exception as err:  # noqa: BLE001 - one odd page must not stop the source
            log.debug("could not read %s", page.url, exc_info=True)
            return Failed(page.url, f"could not read the page ({type(err).__name__}: {err})")

    def read_item(self, page: Page) -> Item:
        """Extract one item from its page; SourceError when it has no title or no text."""
        if page.content_type not in HTML_TYPES:
            raise SourceError(f"expected an HTML page, got {page.content_type}", url=page.url)
        from pipeline.sources.extract import extract_page

        extracted = extract_page(
            page.content, page.final_url, tz=self.settings.site.tz, select=self.source.select, charset=page.charset
        )
        if not extracted.title:
            raise SourceError(
                "no title found on the page (no <title>, <h1>, og:title or JSON-LD headline): "
                "name the element holding it in [sources.select] title",
                url=page.url,
            )
        if not extracted.body_html:
            raise SourceError(
                no_text_reason(extracted, bool(self.source.select and self.source.select.body)), url=page.url
            )
        return Item(
            id=extracted.canonical_url,
            source=self.name,
            category=self.source.category,
            url=extracted.canonical_url,
            title=extracted.title,
            author=extracted.author,
            author_role=extracted.author_role,
            published=extracted.published,
            modified=extracted.modified,
            summary=extracted.summary,
            body_html=extracted.body_html,
            image=extracted.image,
            image_alt=extracted.image_alt,
            language=extracted.language or self.settings.site.language,
        )

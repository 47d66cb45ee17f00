"""Sources: where leaders and articles come from.

Interface of this stage:

* :class:`Item`: one leader or article, as collected (sanitized, URLs absolute);
* a *source* (:class:`HtmlSource`, :class:`FeedSource`) turns its config into a
  stream of :class:`Collected` results, one per item page or feed entry: an
  ``Item``, a :class:`NotModified` page, or a :class:`Failed` page;
* :func:`open_source` picks the source class for a ``[[sources]]`` table.

Sources only read (through the :class:`~pipeline.sources.http.Fetcher`); storing
what they found is the collector's job (:mod:`pipeline.collect`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.config import Settings, SourceSettings
from pipeline.sources.http import Fetcher, NotModified, Page, Validators
from pipeline.types import Category, Item

if TYPE_CHECKING:
    from pipeline.sources.reading import Readers


@dataclass(frozen=True)
class Found:
    """An item read from a page or feed entry, with the validators to store beside it."""

    item: Item
    fetched_url: str
    validators: Validators = field(default_factory=Validators)

    def __post_init__(self) -> None:
        self.item.content_hash()  # where the item was read (a reading process), not in the store's turn


@dataclass(frozen=True)
class Unchanged:
    """A page the server (or disk) says has not changed since the last collect, or (``asked`` False) an
    article page not asked again: its listing had not changed and it was confirmed within the day."""

    url: str
    asked: bool = True


@dataclass(frozen=True)
class Failed:
    """One item page that could not be read; the rest of the source still counts."""

    url: str
    reason: str


@dataclass(frozen=True)
class Skipped:
    """An entry left out on purpose (a link that is not http(s)): reported with a line, not a failure."""

    url: str
    reason: str


Collected = Found | Unchanged | Failed | Skipped


@dataclass(frozen=True)
class Pending:
    """A page being read in another process (:mod:`pipeline.sources.reading`): what its source's
    ``read_page`` gives is on its way; ``then`` turns it into the source's results."""

    future: Future[Any]
    page: Page
    then: Callable[[Any], Iterable[Collected]]


class ValidatorLookup(Protocol):
    """What a source needs from the store: the validators and links stored for a URL."""

    def validators(self, url: str) -> Validators | None: ...

    def links(self, url: str) -> list[str] | None: ...

    def checked(self, url: str) -> datetime | None:
        """When the server last gave or confirmed the version stored for *url* (None: nothing stored)."""
        ...


@dataclass
class ListingUpdate:
    """An index page or feed that answered 200: what to store for its URL once its items are in."""

    url: str
    validators: Validators
    links: list[str]


class Source:
    """Base of every source: built from its ``[[sources]]`` table, iterated to collect.

    While :meth:`collect` runs, ``expected`` is how many results it will yield
    once it knows (for progress bars). After it has run to its end, ``listing``
    holds what to store for the index page or feed (its validators and the links
    it listed), or ``None``, and ``confirmed`` the URLs that answered 304.
    """

    def __init__(self, settings: Settings, source: SourceSettings) -> None:
        self.settings = settings
        self.source = source
        self.name = source.name
        self.url = settings.source_location(source)
        self.listing: ListingUpdate | None = None
        self.expected: int | None = None
        #: URLs the server answered 304 for in this collect: the store notes when they were last confirmed.
        self.confirmed: list[str] = []

    #: Set by a collect of many sources: the processes this source's pages are read in.
    readers: Readers | None = None

    def collect(self, fetcher: Fetcher, known: ValidatorLookup) -> Iterator[Collected | Pending]:
        """Yield one result per item; raise SourceError if the source as a whole fails.

        A page read in another process is yielded as :class:`Pending` (:meth:`read`): the collect
        waits for it, and takes what ``then`` makes of it, in its place.
        """
        raise NotImplementedError

    def read_page(self, page: Page) -> Any:
        """What one fetched page gives (a feed's entries, an article's item): CPU only, no network, the
        same wherever it runs. Raises SourceError when the source as a whole fails with it."""
        raise NotImplementedError

    def read(self, page: Page, then: Callable[[Any], Iterable[Collected]]) -> Iterator[Collected | Pending]:
        """``then(self.read_page(page))``: here, or, where the collect has :attr:`readers`, in one of them
        while this thread goes on to fetch."""
        if self.readers is None:
            yield from then(self.read_page(page))
        else:
            yield Pending(self.readers.submit(self.name, page), page, then)


def attr(tag: Any, name: str) -> str | None:
    """An attribute's value as one string (bs4 gives multi-valued ones, such as ``class``, as a list)."""
    value = tag.get(name)
    if value is None or isinstance(value, str):
        return value
    return " ".join(value)


def open_source(settings: Settings, source: SourceSettings) -> Source:
    """The source object for one ``[[sources]]`` table."""
    # Imported here: both modules build on the dataclasses above.
    from pipeline.sources.feed import FeedSource
    from pipeline.sources.html import HtmlSource

    if source.kind == "feed":
        return FeedSource(settings, source)
    return HtmlSource(settings, source)


__all__ = [
    "Category",
    "Collected",
    "Failed",
    "Fetcher",
    "Found",
    "Item",
    "ListingUpdate",
    "NotModified",
    "Page",
    "Pending",
    "Skipped",
    "Source",
    "Unchanged",
    "Validators",
    "ValidatorLookup",
    "attr",
    "open_source",
]

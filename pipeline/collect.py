"""Collecting: run every source and write what it found to the store.

This is the one place where sources meet the store. A source that fails as a
whole (down, 404, not a feed) is reported with its name and cause and the other
sources still run; an item page that fails is reported and skipped. The report
says, per source, how many items were new, updated, unchanged and failed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pipeline.config import Settings, SourceSettings
from pipeline.errors import SourceError
from pipeline.sources import (
    Collected,
    Failed,
    Found,
    Pending,
    Skipped,
    Source,
    Unchanged,
    Validators,
    open_source,
)
from pipeline.sources.http import Fetcher, fetch_by_host, in_parallel
from pipeline.sources.images import fetch_images
from pipeline.store import Store
from pipeline.store.fetch_state import FetchState

if TYPE_CHECKING:
    from pipeline.sources.reading import Readers
    from pipeline.store.items import Outcome

log = logging.getLogger(__name__)

#: Called after each item with (source name, item URL, outcome, how many the source expects in all).
Progress = Callable[[str, str, str, int | None], None]


@dataclass
class SourceReport:
    """What one source gave in one collect."""

    name: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> int:
        """Item pages that failed, plus one if the whole source failed."""
        return len(self.failures) + (1 if self.error else 0)


@dataclass
class CollectReport:
    """What a collect did, per source and in total."""

    sources: list[SourceReport] = field(default_factory=list)
    requests: int = 0
    not_modified: int = 0
    images_kept: int = 0
    #: Images items name that could not be kept (404, not an image, too large): their cards go without.
    images_missing: list[str] = field(default_factory=list)

    def total(self, what: str) -> int:
        """The sum of one counter (``new``, ``updated``, ``unchanged``, ``failed``) over the sources."""
        return sum(getattr(report, what) for report in self.sources)

    @property
    def ok(self) -> bool:
        """True when no source and no item failed."""
        return self.total("failed") == 0

    def summary(self) -> str:
        """One line: ``collected 3 sources: 2 new, 0 updated, 5 unchanged, 0 failed``."""
        count = len(self.sources)
        skipped = sum(len(report.skipped) for report in self.sources)
        return (
            f"collected {count} source{'s' if count != 1 else ''}: {self.total('new')} new, "
            f"{self.total('updated')} updated, {self.total('unchanged')} unchanged, {self.total('failed')} failed"
            + (f", {skipped} skipped" if skipped else "")
            + (f"; {self.images_kept} images kept" if self.images_kept else "")
            + (f"; {len(self.images_missing)} images not kept" if self.images_missing else "")
        )

    def problems(self) -> list[str]:
        """One line per failure or skipped entry, naming the source and the cause."""
        lines = []
        for report in self.sources:
            if report.error:
                lines.append(f"source {report.name!r} failed: {report.error}")
            lines.extend(f"source {report.name!r}: {failure}" for failure in report.failures)
            lines.extend(f"source {report.name!r}: skipped {line}" for line in report.skipped)
        return lines


def collect(
    settings: Settings,
    store: Store,
    *,
    only: Sequence[str] | None = None,
    progress: Progress | None = None,
    refresh: bool = False,
) -> CollectReport:
    """Collect every configured source (or those named in *only*) into *store*.

    An article page whose listing has not changed is asked again once a day; *refresh* asks every page
    again now (conditionally: an unchanged page is still a 304).

    Hosts are fetched in parallel (up to ``[http] concurrency`` requests in flight), each host one
    request at a time and ``delay_seconds`` apart (:class:`Fetcher`'s host turns). The store is written here,
    in this thread, in the config's order as sources are fetched (:func:`_in_batches`): the same
    writes in the same order as a sequential collect, whatever the network does.
    """
    from pipeline.sources.reading import readers

    chosen: list[SourceSettings] = [settings.source(name) for name in only] if only else list(settings.sources)
    report = CollectReport()
    with Fetcher(settings.http, settings.site.base_url, robots_cache=store) as fetcher:
        locations = [(settings.source_location(s), s) for s in chosen]
        fetcher.expect([url for url, _s in locations])
        known = _Known(
            store, [url for url, _s in locations], [url for url, s in locations if s.kind == "html"], refresh=refresh
        )
        # Sources never fetched before (a first collect) will hand pages to read: the reading processes' server
        # starts at once. Where every source was fetched before, most answer 304 and it starts when a page comes.
        first_time = any(known.validators(url) is None for url, _s in locations)
        with in_parallel() as pool, readers(settings, len(chosen), early=first_time) as reading:
            fetched = fetch_by_host(
                pool,
                locations,
                lambda source_settings: _fetch_source(settings, source_settings, fetcher, known, reading),
            )
            confirmed: list[str] = []  # the URLs that answered 304: noted once, for them all
            for batch in _in_batches(list(zip(chosen, fetched, strict=True))):
                report.sources += _store_sources(batch, store, progress)
                confirmed += [url for _s, done in batch for url in done.source.confirmed]
            store.confirm_states(confirmed)
            store.save_source_runs(  # the admin's sources page shows each source's last collect
                [
                    (
                        done.name,
                        {
                            "new": done.new,
                            "updated": done.updated,
                            "unchanged": done.unchanged,
                            "failed": done.failed,
                            "error": done.error,
                            "problems": done.failures + [f"skipped {line}" for line in done.skipped],
                        },
                    )
                    for done in report.sources
                ]
            )
            images = fetch_images(settings, store, fetcher, pool=pool)
        report.images_kept, report.images_missing = images.kept, images.missing
        report.requests, report.not_modified = fetcher.requests, fetcher.not_modified
    return report


class _Known:
    """The store's fetch state for the fetching threads: the sources' own URLs read in one query beforehand,
    any other (an article page) one at a time (a connection, not a pool's worth, however many threads)."""

    def __init__(self, store: Store, urls: Sequence[str], pages: Sequence[str] = (), *, refresh: bool = False) -> None:
        self.store = store
        self.refresh = refresh
        self.lock = threading.Lock()
        # Every URL asked here is known from then on, an absent one as None: a first collect (nothing stored)
        # must not ask the store again, URL by URL, from every fetching thread.
        self.known: dict[str, FetchState | None] = self._read(urls)
        # The pages the HTML sources listed last time: their states in the same few queries.
        listed = [link for url in pages if (state := self.known.get(url)) for link in state.links or ()]
        self.known.update(self._read(listed))

    def _read(self, urls: Sequence[str]) -> dict[str, FetchState | None]:
        found: dict[str, FetchState | None] = dict.fromkeys(urls)
        found.update(self.store.fetch_states(urls))
        return found

    def _state(self, url: str) -> FetchState | None:
        if url in self.known:
            return self.known[url]
        with self.lock:
            return self.store.fetch_states([url]).get(url)

    def validators(self, url: str) -> Validators | None:
        state = self._state(url)
        return state.validators if state else None

    def links(self, url: str) -> list[str] | None:
        state = self._state(url)
        return state.links if state else None

    def checked(self, url: str) -> datetime | None:
        if self.refresh:  # collect --refresh: every page is asked again
            return None
        state = self._state(url)
        return state.checked if state else None


@dataclass
class _Fetched:
    """What fetching one source gave, before anything is stored."""

    source: Source
    results: list[Collected | Pending]
    error: str | None = None

    def parsed(self) -> _Fetched:
        """Wait for the pages being read in other processes and take what each gives in its place (a page
        whose reading process died, or whose answer could not come back, is read here)."""
        if self.error is not None or not any(isinstance(r, Pending) for r in self.results):
            return self
        results: list[Collected | Pending] = []
        try:
            for result in self.results:
                if not isinstance(result, Pending):
                    results.append(result)
                    continue
                try:
                    read = result.future.result()
                except SourceError:
                    raise
                except Exception as err:  # noqa: BLE001 - the process, not the page: read it here
                    log.warning("reading %s in another process failed (%s); reading it here", result.page.url, err)
                    read = self.source.read_page(result.page)
                results.extend(result.then(read))
        except SourceError as err:
            self.error = str(err)
        except Exception as err:  # noqa: BLE001 - a broken source must not stop the others
            log.debug("source %s crashed", self.source.name, exc_info=True)
            self.error = f"{type(err).__name__}: {err}"
        self.results = results
        return self


def _fetch_source(
    settings: Settings, source_settings: SourceSettings, fetcher: Fetcher, known: _Known, reading: Readers | None
) -> _Fetched:
    """Run one source to its end (in a fetching thread): its results (some still being read elsewhere), or
    why it failed as a whole."""
    # The host's robots.txt first: a host's first request need not wait for the sources' modules to load (the
    # first thread to open a source imports them, and every other waits): the first of 100 hosts' requests went
    # out after 0.3 s (bench.hosts). What fails here is met again, and said, by the source's own requests.
    with contextlib.suppress(Exception):
        fetcher.prepare(settings.source_location(source_settings))
    source = open_source(settings, source_settings)
    source.readers = reading
    fetched = _Fetched(source, [])
    try:
        for collected in source.collect(fetcher, known):
            fetched.results.append(collected)
    except SourceError as err:
        fetched.error = str(err)
    except Exception as err:  # noqa: BLE001 - a broken source must not stop the others
        log.debug("source %s crashed", source_settings.name, exc_info=True)
        fetched.error = f"{type(err).__name__}: {err}"
    return fetched


#: The most sources written in one transaction. Each transaction costs the interpreter ~1 ms of its own
#: (statements, commit) besides its rows': written one source at a time, a first collect of 400 feeds spent
#: more of the collect's process in the store than in anything else (bench.hosts, py-spy --gil).
STORE_BATCH = 50


def _in_batches(
    fetching: list[tuple[SourceSettings, Future[_Fetched]]],
) -> Iterator[list[tuple[SourceSettings, _Fetched]]]:
    """The fetched sources in the config's order, in runs: the next one (waited for), and those right after
    it that are fetched already, up to :data:`STORE_BATCH`. Nothing waits for a source that is still fetching
    that would not have waited for it anyway."""
    position = 0
    while position < len(fetching):
        batch = [(fetching[position][0], fetching[position][1].result().parsed())]
        position += 1
        while position < len(fetching) and len(batch) < STORE_BATCH and fetching[position][1].done():
            batch.append((fetching[position][0], fetching[position][1].result().parsed()))
            position += 1
        yield batch


def _store_sources(
    batch: list[tuple[SourceSettings, _Fetched]], store: Store, progress: Progress | None
) -> list[SourceReport]:
    """Write fetched sources to the store in one transaction (their items, their pages' validators and their
    listings), in the order they were found, and say what each gave."""
    found = [(c.item, c.fetched_url, c.validators) for _s, f in batch for c in f.results if isinstance(c, Found)]
    listings = [
        (listing.url, listing.validators, listing.links)
        for _s, fetched in batch
        if not fetched.error and (listing := fetched.source.listing) is not None
    ]
    saved = iter(store.save_items(found, listings=listings) if found or listings else [])
    return [_report(source_settings, fetched, saved, progress) for source_settings, fetched in batch]


def _report(
    source_settings: SourceSettings, fetched: _Fetched, saved: Iterator[Outcome], progress: Progress | None
) -> SourceReport:
    """What one stored source gave: its found items' outcomes taken from *saved*, in order."""
    result = SourceReport(source_settings.name)
    source = fetched.source
    for collected in fetched.results:
        outcome: str
        if isinstance(collected, Found):
            outcome = next(saved)
            setattr(result, outcome, getattr(result, outcome) + 1)
            url = collected.item.url
        elif isinstance(collected, Unchanged):
            result.unchanged += 1
            outcome, url = "unchanged", collected.url
        elif isinstance(collected, Skipped):
            result.skipped.append(f"{collected.url}: {collected.reason}")
            outcome, url = "skipped", collected.url
        else:
            assert isinstance(collected, Failed)
            result.failures.append(
                f"{collected.reason}" if collected.url in collected.reason else f"{collected.url}: {collected.reason}"
            )
            outcome, url = "failed", collected.url
        if progress:
            progress(source_settings.name, url, outcome, source.expected)
    result.error = fetched.error
    if result.error:
        log.info("source %r failed: %s", source_settings.name, result.error)
        if progress:
            progress(source_settings.name, source.url, "failed", source.expected)
    return result

"""Where fetched pages are read: in the collect's own process, or in a pool of processes beside it.

Reading a page is CPU: feedparser (pure Python over expat) takes 9 ms for a feed of 20 entries and our
reading of its entries 3 more; an article page's extraction a few to 30 ms. In a collect of many sources
the fetching threads would spend that on the one core the interpreter's lock allows. So, from
:data:`PROCESSES_FROM` sources on, on a machine with more than one CPU, every source hands each fetched
page to :class:`Readers` (:meth:`Source.read <pipeline.sources.Source.read>`) and its thread goes on to the
host's next request; the collect waits for what comes back (:class:`~pipeline.sources.Pending`), in
config order, before storing.

A reading process gets the collect's settings once, when it starts (pickling them with every page was
a fifth of a first collect's CPU in the collect's process: bench.hosts, thread CPU clocks), and reads a
page by its source's name: :meth:`Source.read_page` on a source opened there from the same table.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from pipeline.config import Settings
from pipeline.sources.http import Page

#: From this many sources in one collect, on a machine with more than one CPU, pages are read in other
#: processes. Fewer are read in place, where starting processes would cost more than they save.
PROCESSES_FROM = 16

#: In a reading process: the collect's settings, sent once as it starts.
_settings: Settings | None = None


def _start(settings: Settings) -> None:
    global _settings  # noqa: PLW0603 - one per process: what every page read in it is read with
    _settings = settings


def _read(source_name: str, page: Page) -> Any:
    """What a reading process runs: *page* read by the source named *source_name*."""
    from pipeline.sources import open_source

    assert _settings is not None, "a reading process starts with the collect's settings"
    return open_source(_settings, _settings.source(source_name)).read_page(page)


class Readers:
    """A pool of processes that read pages for a collect's sources."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool

    def submit(self, source_name: str, page: Page) -> Future[Any]:
        """``read_page(page)`` of the source named *source_name*, in one of the processes (where they have
        died, a future that says so: the collect reads the page itself)."""
        try:
            return self.pool.submit(_read, source_name, page)
        except (BrokenProcessPool, RuntimeError) as err:
            broken: Future[Any] = Future()
            broken.set_exception(err)
            return broken


#: What the reading processes' server imports, so that each process forked from it has it: the sources, and
#: the libraries they import only where a page is read (feedparser, bs4, and lxml through the extractor).
PRELOAD = [
    "pipeline.sources.reading",
    "pipeline.sources.feed",
    "pipeline.sources.html",
    "pipeline.sources.extract",
    "feedparser",
    "bs4",
]


@contextmanager
def readers(settings: Settings, sources: int, *, early: bool = True) -> Iterator[Readers | None]:
    """Processes to read *sources* sources' pages in, as many as the CPUs (at most 4: the collect's own
    process mostly waits on the network); None where not worth it.

    They are forked from a server process that has imported the sources (``forkserver``: safe beside the
    collect's threads), so each starts in milliseconds; ``spawn`` where there is no fork. A script that
    calls :func:`~pipeline.collect.collect` must guard its entry point (``if __name__ == "__main__":``).
    With *early*, that server starts now, beside the collect's first requests; else with the first page.
    """
    cpus = os.cpu_count() or 1
    if sources < PROCESSES_FROM or cpus < 2:
        yield None
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(PRELOAD)
    pool = ProcessPoolExecutor(max_workers=min(cpus, 4), mp_context=context, initializer=_start, initargs=(settings,))
    # Started at the first page handed to the pool, the server the processes are forked from kept every fetching
    # thread with a page waiting 0.55 s while it imported the sources (bench.hosts' first run). Only the server:
    # the pool still starts a process per page handed to it, as before. Not when few pages are expected: on a
    # 2-core machine its start cost an all-304 collect 0.1 s.
    starting = threading.Thread(target=_start_server, name="flygblad-readers", daemon=True)
    if early and method == "forkserver":
        starting.start()
    try:
        yield Readers(pool)
    finally:
        if starting.is_alive():
            starting.join()
        pool.shutdown(wait=True, cancel_futures=True)


def _start_server() -> None:
    """Start the ``forkserver`` with the sources imported; a failure is met, and said, by the first page handed
    to the pool."""
    from multiprocessing import forkserver

    with contextlib.suppress(Exception):
        forkserver.ensure_running()


__all__ = ["PROCESSES_FROM", "Readers", "readers"]

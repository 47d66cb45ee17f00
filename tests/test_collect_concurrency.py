"""Collecting many hosts at once: hosts in parallel, each host one request at a time and its delay apart.

Each host is a real HTTP server on its own loopback address (127.0.0.2, 127.0.0.3 …) that answers
after a pause and records, per request, when it began and ended: what the servers saw, not what
flygblad says it did. Before issue 18 a collect fetched one page at a time across all hosts.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.collect import collect
from pipeline.config import load_settings
from pipeline.store import Store
from tests.conftest import ROOT, source_toml
from tests.smtp_sink import free_port


def feed(host: str, name: str, entries: int = 3, guids: str | None = None) -> bytes:
    """A feed whose entries link to *host*; their guids on *host* too, or on *guids* (shared with another host)."""
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    items = "".join(
        f"<item><title>{name} {n}</title><link>http://{host}/{name}/{n}</link>"
        f"<guid>{guids or 'http://' + host}/{name}/{n}</guid><pubDate>{format_datetime(now - timedelta(hours=n))}</pubDate>"
        f"<description>Text {n} of {name}.</description></item>"
        for n in range(entries)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title>{items}</channel></rss>'.encode()


class Host:
    """One site on its own loopback address: feeds at /{name}.xml, each answer after *pause* seconds."""

    def __init__(self, address: str, pause: float = 0.2, dead: bool = False, guids: str | None = None) -> None:
        self.address, self.pause, self.guids = address, pause, guids
        self.port = free_port()
        self.visits: list[tuple[str, float, float]] = []  # (path, began, ended)
        self.lock = threading.Lock()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                began = time.monotonic()
                time.sleep(host.pause)
                # The answer is recorded as ended before it is written: the client can only send its next
                # request after reading it, so a next request never seems to overlap this one.
                with host.lock:
                    host.visits.append((self.path, began, time.monotonic()))
                if self.path == "/robots.txt":
                    self.send_response(404)
                    self.end_headers()
                else:
                    body = feed(
                        f"{host.address}:{host.port}", self.path.strip("/").removesuffix(".xml"), guids=host.guids
                    )
                    self.send_response(200)
                    self.send_header("Content-Type", "application/rss+xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        if dead:
            self.server.server_close()  # the address and port are known, nothing answers
        else:
            self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}{path}"

    def most_at_once(self) -> int:
        """The most requests this host was answering at the same moment."""
        return _most_at_once([(b, e) for _p, b, e in self.visits])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(b, 1) for b, _e in spans] + [(e, -1) for _b, e in spans], key=lambda x: (x[0], x[1]))
    now = peak = 0
    for _t, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.fixture
def hosts():
    made: list[Host] = []

    def make(count: int, **options: object) -> list[Host]:
        for _ in range(count):
            made.append(Host(f"127.0.0.{len(made) + 2}", **options))  # type: ignore[arg-type]
        return made[-count:]

    yield make
    for host in made:
        if host.thread.is_alive():
            host.close()


def _config(tmp_path: Path, sources: str, *, concurrency: int = 4, delay: float = 0) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        '[site]\ntitle = "Många"\nbase_url = "https://many.example"\n'
        f"\n[http]\ndelay_seconds = {delay}\nconcurrency = {concurrency}\nretries = 0\nbackoff_seconds = 0\n" + sources,
        encoding="utf-8",
    )
    return path


def test_hosts_are_fetched_at_once_and_each_host_one_request_at_a_time(hosts, tmp_path) -> None:
    sites = hosts(4)
    sources = "".join(
        source_toml(f"s{h}-{n}", site.url(f"/s{h}-{n}.xml"), kind="feed", category="article")
        for h, site in enumerate(sites)
        for n in range(3)
    )
    settings = load_settings(_config(tmp_path, sources, concurrency=4))
    seen: list[str] = []
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store, progress=lambda source, url, outcome, expected: seen.append(source))
    assert report.ok and report.total("new") == 12 * 3, report.problems()
    assert all(site.most_at_once() == 1 for site in sites), [site.most_at_once() for site in sites]
    every = [(b, e) for site in sites for _p, b, e in site.visits]
    assert _most_at_once(every) >= 3, "different hosts were fetched at the same time"
    # The store is written, and progress counted, in the config's order, whatever order the answers came in.
    names = [s.name for s in settings.sources]
    assert [r.name for r in report.sources] == names
    assert list(dict.fromkeys(seen)) == names


def test_an_entry_two_sources_list_has_the_first_sources_content_whichever_answers_first(hosts, tmp_path) -> None:
    """Two hosts' feeds carry the same entries (the same guids), each linking to its own site; the first source in
    the config answers last. The store is written in the config's order (sources fetched by then in one
    transaction), so each entry has the first source's content and is new to both sources."""
    [slow] = hosts(1, pause=0.8, guids="https://shared.example")
    [fast] = hosts(1, pause=0.0, guids="https://shared.example")
    sources = source_toml("first", slow.url("/news.xml"), kind="feed", category="article") + source_toml(
        "second", fast.url("/news.xml"), kind="feed", category="leader"
    )
    settings = load_settings(_config(tmp_path, sources, concurrency=4))
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        stored = {s.item.id: s.item for s in store.items()}
        second = {s.item.id: s.item.category for s in store.items(source="second")}
    assert report.ok and [(r.name, r.new) for r in report.sources] == [("first", 3), ("second", 3)], report.problems()
    [slow_feed] = [e for p, _b, e in slow.visits if p == "/news.xml"]
    [fast_feed] = [e for p, _b, e in fast.visits if p == "/news.xml"]
    assert fast_feed < slow_feed, "the second source's feed answered first"
    assert sorted(stored) == [f"https://shared.example/news/{n}" for n in range(3)]
    assert {item.source for item in stored.values()} == {"first"}
    assert all(item.url.startswith(f"http://{slow.address}:{slow.port}/") for item in stored.values())
    assert set(second.values()) == {"leader"}, "each source keeps the category it gives"


def test_the_delay_and_failures_stay_per_host(hosts, tmp_path) -> None:
    slow, other = hosts(2, pause=0.05)
    [dead] = hosts(1, dead=True)
    sources = (
        source_toml("a1", slow.url("/a1.xml"), kind="feed", category="article")
        + source_toml("gone", dead.url("/gone.xml"), kind="feed", category="article")
        + source_toml("a2", slow.url("/a2.xml"), kind="feed", category="article")
        + source_toml("b1", other.url("/b1.xml"), kind="feed", category="article")
    )
    settings = load_settings(_config(tmp_path, sources, concurrency=3, delay=0.5))
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
    by_name = {r.name: r for r in report.sources}
    assert by_name["gone"].error and "cannot connect" in by_name["gone"].error
    assert by_name["a1"].new == by_name["a2"].new == by_name["b1"].new == 3, "a dead host stops no one else"
    starts = sorted(b for _p, b, _e in slow.visits)  # robots.txt, a1, a2
    assert len(starts) == 3
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    # delay_seconds from one request's start to the next one's (the server sees each a little after it is
    # sent, and a new connection's first request a little later than a kept one's: 10 ms of slack)
    assert all(gap >= 0.49 for gap in gaps), gaps
    assert other.visits and other.visits[0][1] < starts[-1], "the other host did not wait for the slow one"


def test_concurrency_is_checked_in_the_config(tmp_path) -> None:
    path = _config(tmp_path, "", concurrency=0)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(path), "items"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "http.concurrency" in done.stderr, done.stderr

"""Collecting many sources on many hosts that answer slowly, beside lemon24/reader's ``update_feeds(workers=20)``.

``python -m bench.hosts [--hosts 100] [--latency-ms 100]``. One process serves 100 sites, each on its own
loopback address (127.0.0.2 … 127.0.0.101) and answering every request after 100 ms, as a real site
some way off does. Each site has 4 feeds of 20 entries and one section page listing one new article:
400 feed sources and 100 page sources. The server counts, per host, how many requests it was answering
at once (politeness: must be 1). Measured, in this order, each on a fresh store unless said:

* flygblad with ``delay_seconds = 0`` (reader has no delay: equal politeness), ``concurrency = 20``:
  the first run, then the second (the feeds and section pages asked with conditional GETs, all 304; the
  articles not asked again, as their listings had not changed and they were confirmed within the day);
* reader 3's ``update_feeds(workers=20)`` on the same 400 feeds (a first run; a second within the hour
  fetches nothing, by reader's schedule, so it is not compared);
* flygblad with ``concurrency = 1`` and ``delay_seconds = 0``: one request at a time, as every collect was
  before issue 18 (the sequential time the goal is measured against);
* flygblad with its defaults (``delay_seconds = 0.5``, ``concurrency = 32``), against the per-host minimum:
  the requests one host gets times the delay.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import requests

from bench.common import ROOT, free_port, write_result

FEEDS_PER_HOST = 4
ENTRIES = 20
#: Requests in flight at equal politeness: reader's workers.
EQUAL_CONCURRENCY = 20


def address(host: int) -> str:
    return f"127.0.0.{host + 2}"


def site_files(host: int, port: int) -> dict[str, bytes]:
    """Everything one site serves: 4 feeds, a section page and its one article."""
    base = f"http://{address(host)}:{port}"
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    files: dict[str, bytes] = {}
    for k in range(FEEDS_PER_HOST):
        items = "".join(
            f"<item><title>Nyhet {n} i flöde {k} på sajt {host}</title><link>{base}/artikel/{k}/{n}</link>"
            f"<guid>{base}/artikel/{k}/{n}</guid><pubDate>{format_datetime(now - timedelta(hours=n))}</pubDate>"
            f"<description>Sammanfattning av nyhet {n}, flöde {k}, sajt {host}. "
            + "Ett stycke text om ämnet. " * 8
            + "</description></item>"
            for n in range(ENTRIES)
        )
        files[f"/feed{k}.xml"] = (
            f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Sajt {host} flöde {k}'
            f"</title><link>{base}/</link><description>d</description>{items}</channel></rss>"
        ).encode()
    files["/aktuellt/"] = (
        f'<!DOCTYPE html><html lang="sv"><head><title>Aktuellt</title></head><body><main><h1>Aktuellt</h1>'
        f'<article><h2><a href="{base}/aktuellt/ny-artikel">Ny artikel på sajt {host}</a></h2></article>'
        "</main></body></html>"
    ).encode()
    paragraphs = "".join(
        f"<p>Stycke {n} i den nya artikeln på sajt {host}, med så mycket text att den är en artikel "
        "och inte en notis: den berättar om vad som hänt och varför det spelar roll för läsaren.</p>"
        for n in range(8)
    )
    files["/aktuellt/ny-artikel"] = (
        f'<!DOCTYPE html><html lang="sv"><head><title>Ny artikel på sajt {host}</title>'
        f'<meta property="article:published_time" content="2026-12-01T07:00:00+01:00"></head><body><main>'
        f"<article><h1>Ny artikel på sajt {host}</h1>{paragraphs}</article></main></body></html>"
    ).encode()
    return files


# ---------------------------------------------------------------- the sites (a process of their own)


async def _serve(hosts: int, port: int, latency: float) -> None:
    sites = [site_files(h, port) for h in range(hosts)]
    etags = [{p: '"' + hashlib.sha1(b).hexdigest()[:16] + '"' for p, b in s.items()} for s in sites]
    busy = [0] * hosts
    peak = [0] * hosts
    served = [0] * hosts

    async def answer(host: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                path = line.split()[1].decode() if len(line.split()) > 1 else "/"
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                if path == "/__stats":
                    body = json.dumps({"peak": max(peak), "served": sum(served)}).encode()
                    status, extra = "200 OK", b"Content-Type: application/json\r\n"
                elif path == "/__reset":
                    peak[:], served[:] = [0] * hosts, [0] * hosts
                    body, status, extra = b"ok", "200 OK", b""
                else:
                    busy[host] += 1
                    peak[host] = max(peak[host], busy[host])
                    await asyncio.sleep(latency)
                    busy[host] -= 1
                    served[host] += 1
                    body = sites[host].get(path, b"")
                    etag = etags[host].get(path)
                    if etag is None:
                        status, extra, body = "404 Not Found", b"", b"not here"
                    elif headers.get("if-none-match") == etag:
                        status, extra, body = "304 Not Modified", f"ETag: {etag}\r\n".encode(), b""
                    else:
                        kind = "application/rss+xml" if path.endswith(".xml") else "text/html; charset=utf-8"
                        status, extra = "200 OK", f"ETag: {etag}\r\nContent-Type: {kind}\r\n".encode()
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    servers = [
        await asyncio.start_server(lambda r, w, h=h: answer(h, r, w), address(h), port, backlog=256)
        for h in range(hosts)
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


# ---------------------------------------------------------------- the runs


def _stats(port: int, reset: bool = False) -> dict[str, int]:
    if reset:
        requests.get(f"http://{address(0)}:{port}/__reset", timeout=10)
        return {}
    answer: dict[str, int] = requests.get(f"http://{address(0)}:{port}/__stats", timeout=10).json()
    return answer


def _config(folder: Path, hosts: int, port: int, *, delay: float | None, concurrency: int | None) -> Path:
    folder.mkdir(parents=True)
    http = "[http]\n" + (f"delay_seconds = {delay}\n" if delay is not None else "")
    http += f"concurrency = {concurrency}\n" if concurrency is not None else ""
    sources = []
    for h in range(hosts):
        base = f"http://{address(h)}:{port}"
        for k in range(FEEDS_PER_HOST):
            sources.append(
                f'[[sources]]\nname = "s{h}-f{k}"\nkind = "feed"\nurl = "{base}/feed{k}.xml"\ncategory = "article"\n'
            )
        sources.append(
            f'[[sources]]\nname = "s{h}-aktuellt"\nkind = "html"\nurl = "{base}/aktuellt/"\ncategory = "article"\n'
        )
    (folder / "config.toml").write_text(
        '[site]\ntitle = "Många sajter"\nbase_url = "https://many.example"\nlanguage = "sv"\n\n'
        + http
        + "\n"
        + "\n".join(sources),
        encoding="utf-8",
    )
    return folder / "config.toml"


FLYGBLAD_RUN = """
import sys, time
from pipeline.collect import collect
from pipeline.config import load_settings
from pipeline.store import Store
settings = load_settings(sys.argv[1])
with Store.open(settings.storage_url) as store:
    began = time.perf_counter()
    report = collect(settings, store)
    print(time.perf_counter() - began, report.summary())
"""


def _flygblad(config: Path, port: int) -> dict[str, object]:
    """One collect in a process of its own, timed around ``collect()`` as reader's ``update_feeds`` is (imports,
    config and store opening outside the clock on both sides); what it did, and the peak per host."""
    _stats(port, reset=True)
    done = subprocess.run(
        [sys.executable, "-c", FLYGBLAD_RUN, str(config)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"flygblad collect failed: {done.stderr[-2000:]}")
    seconds, summary = done.stdout.strip().split(" ", 1)
    return {"s": round(float(seconds), 2), "summary": summary, **_stats(port)}


READER_RUN = """
import sys, time
from reader import make_reader
reader = make_reader(sys.argv[1])
workers = int(sys.argv[2])
for url in sys.argv[3:]:
    reader.add_feed(url, exist_ok=True)
began = time.perf_counter()
reader.update_feeds(workers=workers)
print(time.perf_counter() - began, sum(1 for _ in reader.get_entries()))
"""


def _reader(db: Path, urls: list[str], port: int) -> dict[str, object]:
    """reader's update_feeds(workers=EQUAL_CONCURRENCY) in a process of its own (feeds added before the clock
    starts)."""
    _stats(port, reset=True)
    done = subprocess.run(
        [sys.executable, "-c", READER_RUN, str(db), str(EQUAL_CONCURRENCY), *urls],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"reader failed: {done.stderr[-2000:]}")
    seconds, entries = done.stdout.split()
    return {"s": round(float(seconds), 2), "entries": int(entries), **_stats(port)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--serve", nargs=3, type=int, metavar=("HOSTS", "PORT", "LATENCY_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        hosts, port, latency = args.serve
        asyncio.run(_serve(hosts, port, latency / 1000))
        return
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.hosts", "--serve", str(args.hosts), str(port), str(args.latency_ms)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _stats(port)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        feeds = [f"http://{address(h)}:{port}/feed{k}.xml" for h in range(args.hosts) for k in range(FEEDS_PER_HOST)]
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            equal = _config(work / "equal", args.hosts, port, delay=0, concurrency=EQUAL_CONCURRENCY)
            first = _flygblad(equal, port)
            second = _flygblad(equal, port)
            reader_first = _reader(work / "reader.sqlite", feeds, port)
            sequential = _flygblad(_config(work / "one", args.hosts, port, delay=0, concurrency=1), port)
            polite = _flygblad(_config(work / "polite", args.hosts, port, delay=None, concurrency=None), port)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
    requests_per_host = 1 + FEEDS_PER_HOST + 2  # robots.txt, the feeds, the section page and its article

    def floor(run: dict[str, object]) -> float:
        """The least a run's requests can take, however fast the client: each waits the latency, at most
        EQUAL_CONCURRENCY at once."""
        return round(int(run["served"]) * args.latency_ms / 1000 / EQUAL_CONCURRENCY, 2)  # type: ignore[call-overload]

    per_host_minimum = requests_per_host * 0.5
    feeds_per_s = {
        "flygblad": round(len(feeds) / float(first["s"]), 1),
        "reader": round(len(feeds) / float(reader_first["s"]), 1),
    }  # type: ignore[arg-type]
    result = {
        "what": (
            f"{len(feeds)} feeds and {args.hosts} section pages on {args.hosts} hosts answering after "
            f"{args.latency_ms} ms"
        ),
        "flygblad_first_s": first["s"],
        "flygblad_second_s": second["s"],
        "reader_first_s": reader_first["s"],
        "sequential_s": sequential["s"],
        "polite_s": polite["s"],
        "per_host_minimum_s": per_host_minimum,
        "first_over_sequential": round(float(first["s"]) / float(sequential["s"]), 3),  # type: ignore[arg-type]
        "second_over_first": round(float(second["s"]) / float(first["s"]), 3),  # type: ignore[arg-type]
        # Both runs at their network floors would give this ratio: the second run's goal (0.5) lies below it.
        "network_floor_s": {"first": floor(first), "second": floor(second)},
        "second_over_first_at_the_floors": round(floor(second) / floor(first), 3),
        "second_over_its_floor": round(float(second["s"]) / floor(second), 3),  # type: ignore[arg-type]
        "feeds_per_s": feeds_per_s,
        "peak_per_host": max(int(r["peak"]) for r in (first, second, sequential, polite)),  # type: ignore[call-overload]
        "reader_peak_per_host": int(reader_first["peak"]),  # type: ignore[call-overload]
        "runs": {
            "flygblad_first": first,
            "flygblad_second": second,
            "reader_first": reader_first,
            "flygblad_sequential": sequential,
            "flygblad_defaults": polite,
        },
    }
    write_result("hosts", result)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

"""Load and abuse: 200 idle connections held open while 8 clients subscribe and unsubscribe.

Run: ``.venv/bin/python -m bench.abuse [--seconds S] [--idle N] [--clients C]``.

``flygblad serve`` (waitress, SQLite, the file sender) runs in its own process
on 127.0.0.1, as in production. Two phases of S seconds each, the same load:

* **quiet**: C clients, each from its own loopback address (127.0.0.10, .11, …,
  so each has its own rate-limit bucket, as real visitors do), loop over what a
  subscriber does: fetch the sign-up form, post it (a new address each time),
  open an unsubscribe link and post the one-click unsubscribe;
* **attacked**: the same, while N connections are held open from the start:
  each sends half a request line and then nothing (a slowloris), so they hold
  their channel until the server's channel timeout closes them.

Throughout both, a prober asks ``/healthz`` every 0.25 s (2 s timeout). Reported
per phase: requests, their p50/p99 latency, errors (5xx, or no answer), 429s
(the sign-up limit doing its job), health probes missed; and the server's RSS
before, at its peak and after. Goals: no health probe missed, no errors, and
peak RSS at most 100 MB above the quiet start. Results go to
``bench/results/abuse.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bench.common import (
    SECRET,
    free_port,
    sample_project,
    start_serve,
    subscribers_with_links,
    timed_threads,
    write_result,
)

ROOT = Path(__file__).resolve().parent.parent
RSS_BOUND_MB = 100


class FromAddress(HTTPAdapter):
    """A requests adapter whose connections leave from one local address (a visitor of its own)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 1) if ordered else float("nan")


def phase(base: str, pid: int, seconds: float, clients: int, idle: int, unsubscribe_urls: list[str]) -> dict:
    """One phase: the clients' loop for *seconds*, with *idle* slowloris connections held open."""
    held = []
    host, port = base.removeprefix("http://").split(":")
    for _ in range(idle):
        connection = socket.create_connection((host, int(port)))
        connection.sendall(b"GET /subscribe/nyhetsbrev HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        held.append(connection)
    latencies: list[float] = []
    errors: list[str] = []
    limited = 0
    probes = missed = 0
    peak = _rss_mb(pid)
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    links = iter(unsubscribe_urls)

    def timed(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response | None:
        nonlocal limited
        began = time.perf_counter()
        try:
            answer = session.request(method, url, timeout=10, **kwargs)
        except requests.RequestException as err:
            with lock:
                errors.append(f"{method} {url}: {type(err).__name__}")
            return None
        with lock:
            latencies.append((time.perf_counter() - began) * 1000)
            if answer.status_code == 429:
                limited += 1
            elif answer.status_code >= 500 or answer.status_code >= 400 and "subscribe" not in url:
                errors.append(f"{method} {url}: {answer.status_code}")
        return answer

    def client(number: int) -> None:
        session = requests.Session()
        adapter = FromAddress(f"127.0.0.{10 + number}")
        session.mount("http://", adapter)
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            form = timed(session, "GET", f"{base}/subscribe/nyhetsbrev")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text) if form is not None else None
            if token:
                email = f"c{number}-{n}-{time.monotonic_ns()}@example.org"
                timed(
                    session, "POST", f"{base}/subscribe/nyhetsbrev", data={"csrf_token": token.group(1), "email": email}
                )
            with lock:
                link = next(links, None)
            if link:
                timed(session, "GET", link)
                timed(
                    session,
                    "POST",
                    link,
                    data="List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )

    def prober() -> None:
        nonlocal probes, missed, peak
        while time.monotonic() < stop_at:
            probes += 1
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code != 200:
                    missed += 1
            except requests.RequestException:
                missed += 1
            peak = max(peak, _rss_mb(pid))
            time.sleep(0.25)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)] + [threading.Thread(target=prober)]
    elapsed = timed_threads(threads)
    still_open = 0
    for connection in held:
        connection.setblocking(False)
        try:
            still_open += connection.recv(1) != b""  # b"" once the server closed it
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        connection.close()
    return {
        "idle_connections": idle,
        "idle_still_open_at_end": still_open,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed),
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "errors": len(errors),
        "first_errors": errors[:5],
        "rate_limited_429": limited,
        "health_probes": probes,
        "health_missed": missed,
        "peak_rss_mb": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--idle", type=int, default=200, help="slowloris connections in the attacked phase")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    os.environ["FLYGBLAD_SECRET"] = SECRET
    from pipeline.config import load_settings

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # A limit a person never reaches, per visitor: the clients here sign up every few hundred ms.
        settings = load_settings(
            sample_project(
                work,
                replace={"[web]\n": f'[web]\nbase_url = "{base}"\nsubscribe_rate_limit = "1000 per minute"\n'},
            )
        )
        urls = subscribers_with_links(settings, 20000, base)
        server = start_serve(work, port)
        try:
            start_rss = _rss_mb(server.pid)
            quiet = phase(base, server.pid, args.seconds, args.clients, 0, urls[0::2])
            attacked = phase(base, server.pid, args.seconds, args.clients, args.idle, urls[1::2])
            time.sleep(1)
            end_rss = _rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    peak = max(quiet["peak_rss_mb"], attacked["peak_rss_mb"])
    result = {
        "what": (
            f"flygblad serve (waitress, SQLite): {args.clients} clients subscribing and unsubscribing for "
            f"{args.seconds:.0f} s, quiet and then with {args.idle} idle (slowloris) connections held open"
        ),
        "quiet": quiet,
        "attacked": attacked,
        "rss_mb": {"start": round(start_rss, 1), "peak": peak, "end": round(end_rss, 1)},
        "rss_growth_mb": round(peak - start_rss, 1),
        "rss_bound_mb": RSS_BOUND_MB,
        "goal": f"no /healthz probe missed, no errors, peak RSS <= start + {RSS_BOUND_MB} MB",
        "met": (
            quiet["health_missed"] == attacked["health_missed"] == 0
            and quiet["errors"] == attacked["errors"] == 0
            and peak - start_rss <= RSS_BOUND_MB
        ),
    }
    write_result("abuse", result)
    print(
        f"abuse: attacked p99 {attacked['p99_ms']} ms (quiet {quiet['p99_ms']} ms), "
        f"{attacked['requests_per_s']} req/s (quiet {quiet['requests_per_s']}), health missed "
        f"{attacked['health_missed']}/{attacked['health_probes']}, errors {attacked['errors']}, "
        f"RSS +{result['rss_growth_mb']} MB"
    )


if __name__ == "__main__":
    main()

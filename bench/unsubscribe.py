"""The one-click unsubscribe endpoint under load: requests a second and p99 latency.

Run: ``.venv/bin/python -m bench.unsubscribe [--seconds S] [--repeats R] [--clients C] [--python-client]``.
``flygblad serve`` (waitress, SQLite) runs in its own process on 127.0.0.1; C
keep-alive connections POST ``List-Unsubscribe=One-Click`` to valid tokens of
distinct subscribers for S seconds, R times (each run on subscribers of its
own; medians reported). The load comes from wrk (Debian's ``wrk``,
a C client, with ``bench/unsubscribe.lua``) when it is installed, else from C
Python threads with requests sessions, which on a 2-core machine take CPU the
server would otherwise have (the result names which). Goal (issue 7): >= 500
requests/s with p99 <= 50 ms. Results go to ``bench/results/unsubscribe.json``.

With ``FLYGBLAD_BENCH_PROFILE=FILE`` (and py-spy on PATH, the ``bench`` extra),
py-spy samples the server during the first run and writes its raw stacks to
FILE: how the README's unsubscribe profile was taken.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.common import SECRET, free_port, sample_project, start_serve, subscribers_with_links, write_result

ROOT = Path(__file__).resolve().parent.parent


def _ms(text: str) -> float:
    """wrk's ``812.34us`` / ``12.5ms`` / ``1.02s`` in ms."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)


def wrk_load(port: int, paths: Path, seconds: float, connections: int) -> dict:
    """Run wrk against the server; its requests/s, median and p99 latency and non-200 answers."""
    threads = 2
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "unsubscribe.lua"),
            f"http://127.0.0.1:{port}",
            "--",
            str(paths),
            str(threads),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    found = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    total = int(re.search(r"^\s+(\d+) requests in", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "what": f"one-click unsubscribe POSTs to flygblad serve (waitress, SQLite), {connections} keep-alive connections for {seconds:.0f} s",
        "requests": total,
        "errors": int(bad.group(1)) if bad else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
        "requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),
        "median_ms": round(_ms(found["50"]), 1),
        "p99_ms": round(_ms(found["99"]), 1),
        "goal": ">= 500 req/s, p99 <= 50 ms",
        "load_generator": f"wrk, {threads} threads",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--subscribers", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3, help="wrk runs (each on its own subscribers)")
    parser.add_argument("--python-client", action="store_true", help="load from Python threads even if wrk is there")
    args = parser.parse_args()
    os.environ["FLYGBLAD_SECRET"] = SECRET
    from pipeline.config import load_settings

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        port = free_port()
        settings = load_settings(
            sample_project(work, replace={"[web]\n": f'[web]\nbase_url = "http://127.0.0.1:{port}"\n'})
        )
        urls = subscribers_with_links(settings, args.subscribers, f"http://127.0.0.1:{port}")
        # The server in its own process, as in production: the load generator must not share its GIL.
        server = start_serve(work, port)
        if os.environ.get("FLYGBLAD_BENCH_PROFILE"):  # py-spy on the server while it is under load
            subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "-d",
                    str(int(args.seconds)),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    os.environ["FLYGBLAD_BENCH_PROFILE"],
                    "-p",
                    str(server.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if shutil.which("wrk") and not args.python_client:
            runs = []
            for run in range(args.repeats):  # each run its own subscribers: every request really unsubscribes
                paths = work / f"paths-{run}.txt"
                share = urls[run :: args.repeats]
                paths.write_text("".join(url.split(str(port), 1)[1] + "\n" for url in share), encoding="utf-8")
                runs.append(wrk_load(port, paths, args.seconds, args.clients))
            server.terminate()
            server.wait(30)
            result = dict(runs[0])
            for key in ("requests_per_s", "median_ms", "p99_ms"):
                result[key] = statistics.median(r[key] for r in runs)
            result["requests"] = sum(r["requests"] for r in runs)
            result["errors"] = sum(r["errors"] for r in runs)
            result["what"] += f", median of {args.repeats} runs"
            result["runs"] = [{k: r[k] for k in ("requests_per_s", "median_ms", "p99_ms", "errors")} for r in runs]
            report(result)
            return
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        cursor = iter(urls)
        stop_at = time.monotonic() + args.seconds

        def client() -> None:
            nonlocal errors
            session = requests.Session()
            mine: list[float] = []
            bad = 0
            while time.monotonic() < stop_at:
                with lock:
                    url = next(cursor, None)
                if url is None:
                    break
                began = time.perf_counter()
                response = session.post(
                    url,
                    data="List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                mine.append((time.perf_counter() - began) * 1000)
                bad += response.status_code != 200
            with lock:
                latencies.extend(mine)
                errors += bad

        began = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        server.terminate()
        server.wait(30)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    result = {
        "what": f"one-click unsubscribe POSTs to flygblad serve (waitress, SQLite), {args.clients} keep-alive clients for {args.seconds:.0f} s",
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed),
        "median_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(p99, 1),
        "goal": ">= 500 req/s, p99 <= 50 ms",
        "load_generator": f"{args.clients} Python threads (requests)",
    }
    report(result)


def report(result: dict) -> None:
    write_result("unsubscribe", result)
    errors = result["errors"]
    print(
        f"unsubscribe: {result['requests_per_s']} req/s, median {result['median_ms']} ms, p99 {result['p99_ms']} ms, "
        f"{errors} errors (goal >= 500 req/s, p99 <= 50 ms)"
    )


if __name__ == "__main__":
    main()

"""A provider API under real latency: Postmark's batch endpoint answering after 200 ms, some after the timeout.

Run: ``.venv/bin/python -m bench.providers [--recipients N] [--latency S] [--late-share F]``.

A local HTTP server (threaded, on 127.0.0.1) speaks Postmark's ``POST
/email/batch``: it checks the token, accepts every message of the batch (it
keeps who got what), then answers after ``--latency`` seconds; a share of the
requests (``--late-share``, 5 % by default) answers only after the client's
timeout, as a provider that accepted the batch but was slow to say so.
``flygblad send`` (the postmark sender, batches of 500, ``timeout = 1``) sends
one issue to ``--recipients`` subscribers.

Reported: throughput against the ideal for one request in flight (batch size /
latency), the requests made, and the ledger held against what the server
accepted: duplicates (goal 0: a late answer must never make a batch go twice)
and recipients neither accepted nor listed uncertain (goal 0).
Results go to ``bench/results/providers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import SECRET, free_port, sample_project, subscribers_csv, write_result

TOKEN = "bench-postmark-token"


class Provider:
    """What the stand-in accepted, and how it answers."""

    def __init__(self, latency: float, late_share: float, late_seconds: float, seed: int) -> None:
        self.latency = latency
        self.late_share = late_share
        self.late_seconds = late_seconds
        self.accepted: Counter[str] = Counter()
        self.requests = 0
        self.late = 0
        self.lock = threading.Lock()
        self.draws = random.Random(seed)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/email/batch" or self.headers.get("X-Postmark-Server-Token") != TOKEN:
                    self.send_response(401)
                    self.end_headers()
                    return
                messages = json.loads(body)
                with provider.lock:
                    provider.requests += 1
                    late = provider.draws.random() < provider.late_share
                    provider.late += late
                    for m in messages:
                        to = m["To"].rpartition("<")[2].rstrip(">")
                        provider.accepted[to] += 1
                answers = [
                    {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{n}", "To": m["To"]}
                    for n, m in enumerate(messages)
                ]
                time.sleep(provider.late_seconds if late else provider.latency)
                data = json.dumps(answers).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting: the batch was accepted all the same

        return Handler


def run(recipients: int, latency: float, late_share: float, seed: int) -> dict[str, Any]:
    from pipeline.config import load_settings
    from pipeline.store import Store

    provider = Provider(latency, late_share, late_seconds=2.5, seed=seed)
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), provider.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            sample_project(
                work,
                replace={
                    'kind = "file"\ndir = "outbox"': (
                        f'kind = "postmark"\napi_key_env = "BENCH_POSTMARK_TOKEN"\n'
                        f'base_url = "http://127.0.0.1:{port}"\ntimeout = 1\nretry_base_seconds = 0.2'
                    )
                },
            )
            subscribers_csv(work / "subs.csv", recipients)
            env = {**os.environ, "FLYGBLAD_SECRET": SECRET, "BENCH_POSTMARK_TOKEN": TOKEN}
            for command in (("collect",), ("subscribers", "import", "--list", "nyhetsbrev", "subs.csv")):
                subprocess.run(
                    [sys.executable, "-m", "pipeline", *command], cwd=work, env=env, check=True, capture_output=True
                )
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "pipeline", "send", "--wait"], cwd=work, env=env, capture_output=True, text=True
            )
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"flygblad send failed: {done.stderr}")
            settings = load_settings(work / "config.toml")
            with Store.open(settings.storage_url) as store:
                issue = store.issue("nyhetsbrev", 1)
                assert issue is not None
                ledger = {r.email: r.status for r in store.outbox_rows(issue.id)}
    finally:
        server.shutdown()
    statuses = Counter(ledger.values())
    accepted = provider.accepted
    duplicates = sum(1 for n in accepted.values() if n > 1)
    lost = sum(1 for e, s in ledger.items() if e not in accepted and s != "uncertain")
    ideal = 500 / latency
    rate = statuses.get("sent", 0) / seconds
    return {
        "recipients": recipients,
        "latency_s": latency,
        "late_share": late_share,
        "seed": seed,
        "seconds": round(seconds, 2),
        "requests": provider.requests,
        "late_requests": provider.late,
        "msgs_per_s": round(rate),
        "ideal_msgs_per_s": round(ideal),
        "of_ideal": round(rate / ideal, 2),
        "ledger": dict(statuses),
        "duplicates": duplicates,
        "lost": lost,
        "last_line": done.stdout.strip().splitlines()[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--late-share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = run(args.recipients, args.latency, args.late_share, args.seed)
    write_result("providers", result)
    print(
        f"providers: {result['recipients']:,} through Postmark's batch API at {args.latency * 1000:.0f} ms: "
        f"{result['msgs_per_s']:,} msg/s ({result['of_ideal']} of one request in flight's ideal "
        f"{result['ideal_msgs_per_s']:,}); {result['late_requests']} late answers; ledger {result['ledger']}; "
        f"duplicates {result['duplicates']}, lost {result['lost']}"
    )


if __name__ == "__main__":
    main()

"""A provider API under real latency: Postmark's batch endpoints answering after 200 ms.

Run: ``.venv/bin/python -m bench.providers [--recipients N] [--latency S] [--late-share F]``.

A local HTTP server (threaded, on 127.0.0.1) speaks the parts of Postmark's
API that flygblad uses: ``POST /templates`` (and ``GET``/``DELETE``),
``POST /email/batchWithTemplates`` and ``POST /email/batch``. It checks the
token, accepts every message of a batch (keeping who got what), then answers
after ``--latency`` seconds. ``flygblad send`` (the postmark sender, batches
of 500, one request in flight) sends one issue to ``--recipients``
subscribers, twice, on fresh projects:

* **throughput**: every answer on time. Reported: msg/s against the ideal for
  one request in flight (``connections = 1``, the default: 500 / latency), timed
  by the server from flygblad's first request to its last answer (as the bare
  loop is timed around its loop; the whole command's time, start-up and
  database included, is reported beside it), the bytes uploaded per recipient
  (the issue goes once as a template; the goal is ≤ 2 KB), and a bare
  ``requests`` loop posting the very same request bodies (recorded by the
  server during flygblad's run) with one ``Session``: what the HTTP alone costs;
* **faults**: a share of the requests (``--late-share``, 5 %) answers only after
  the client's 1 s timeout, as a provider that accepted the batch but was slow
  to say so. The ledger is held against what the server accepted: duplicates
  (goal 0: a late answer must never make a batch go twice) and recipients
  neither accepted nor listed uncertain (goal 0).

Results go to ``bench/results/providers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from bench.common import SECRET, free_port, sample_project, subscribers_csv, write_result

TOKEN = "bench-postmark-token"
BATCH = 500


class Provider:
    """What the stand-in accepted, and how it answers."""

    def __init__(self, latency: float, late_share: float, late_seconds: float, seed: int) -> None:
        self.latency = latency
        self.late_share = late_share
        self.late_seconds = late_seconds
        self.accepted: Counter[str] = Counter()
        self.requests = 0
        self.late = 0
        self.uploaded = 0  # bytes of every request body, templates included
        self.sends: list[tuple[str, bytes]] = []  # (path, body) of each send request, for the bare replay
        self.replaying = False
        self.first: float | None = None  # when flygblad's first request arrived
        self.last = 0.0  # when its last answer was written
        self.templates: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.draws = random.Random(seed)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Postmark's
            # The headers and the body go in two writes: with Nagle's algorithm on, the body waited for
            # the client's delayed ACK of the headers, 40 ms a request that no real API adds.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def answer(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting: the batch was accepted all the same

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                alias = self.path.removeprefix("/templates/")
                if alias in provider.templates:
                    self.answer(200, provider.templates[alias])
                else:
                    self.answer(404, {"ErrorCode": 1101, "Message": "Template not found."})

            def do_DELETE(self) -> None:  # noqa: N802
                alias = self.path.removeprefix("/templates/")
                found = provider.templates.pop(alias, None)
                self.answer(200 if found else 422, {"ErrorCode": 0 if found else 1101, "Message": "removed"})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not provider.replaying and provider.first is None:
                    provider.first = time.perf_counter()
                if self.headers.get("X-Postmark-Server-Token") != TOKEN:
                    self.answer(401, {"ErrorCode": 10, "Message": "bad token"})
                    return
                with provider.lock:
                    provider.uploaded += len(body) if not provider.replaying else 0
                if self.path == "/templates":
                    template = json.loads(body)
                    provider.templates[template["Alias"]] = template
                    self.answer(200, {"TemplateId": len(provider.templates), "Alias": template["Alias"]})
                    return
                if self.path not in ("/email/batch", "/email/batchWithTemplates"):
                    self.answer(404, {"ErrorCode": 404, "Message": "no such endpoint"})
                    return
                parsed = json.loads(body)
                messages = parsed["Messages"] if self.path == "/email/batchWithTemplates" else parsed
                with provider.lock:
                    late = False
                    if not provider.replaying:
                        provider.requests += 1
                        provider.sends.append((self.path, body))
                        late = provider.draws.random() < provider.late_share
                        provider.late += late
                        for m in messages:
                            if "TemplateAlias" in m and m["TemplateAlias"] not in provider.templates:
                                continue
                            provider.accepted[m["To"].rpartition("<")[2].rstrip(">")] += 1
                answers = [
                    {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{n}", "To": m["To"]}
                    if provider.replaying
                    or m.get("TemplateAlias", "") in provider.templates
                    or "TemplateAlias" not in m
                    else {"ErrorCode": 1101, "Message": "Template not found."}
                    for n, m in enumerate(messages)
                ]
                time.sleep(provider.late_seconds if late else provider.latency)
                self.answer(200, answers)
                if not provider.replaying:
                    provider.last = time.perf_counter()

        return Handler


def _flygblad(port: int, recipients: int) -> tuple[float, float, dict[str, str], str]:
    """One issue sent by ``flygblad send`` on a fresh copy of the sample: seconds, CPU seconds, the ledger, and
    its last line."""
    from pipeline.config import load_settings
    from pipeline.store import Store

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
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "send", "--wait"], cwd=work, env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_seconds = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
        if done.returncode != 0:
            raise SystemExit(f"flygblad send failed: {done.stderr}")
        settings = load_settings(work / "config.toml")
        with Store.open(settings.storage_url) as store:
            issue = store.issue("nyhetsbrev", 1)
            assert issue is not None
            ledger = {r.email: r.status for r in store.outbox_rows(issue.id)}
    return seconds, cpu_seconds, ledger, done.stdout.strip().splitlines()[-1]


def _bare(port: int, sends: list[tuple[str, bytes]]) -> float:
    """The same request bodies posted one after another with one requests.Session: seconds."""
    session = requests.Session()
    headers = {"X-Postmark-Server-Token": TOKEN, "Accept": "application/json", "Content-Type": "application/json"}
    started = time.perf_counter()
    for path, body in sends:
        session.post(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, timeout=30).raise_for_status()
    return time.perf_counter() - started


def run(recipients: int, latency: float, late_share: float, seed: int) -> dict[str, Any]:
    ideal = BATCH / latency
    # Throughput: every answer on time; then the same bodies again, bare.
    provider = Provider(latency, 0.0, late_seconds=2.5, seed=seed)
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), provider.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        seconds, cpu_seconds, ledger, last = _flygblad(port, recipients)
        sent = Counter(ledger.values()).get("sent", 0)
        templates_left = len(provider.templates)
        sending = provider.last - (provider.first or provider.last)
        provider.replaying = True
        bare_seconds = _bare(port, provider.sends)
    finally:
        server.shutdown()
    rate = sent / sending
    bare_rate = recipients / bare_seconds
    throughput = {
        "command_seconds": round(seconds, 2),
        "sending_seconds": round(sending, 2),
        "command_msgs_per_s": round(sent / seconds),
        "command_cpu_seconds": round(cpu_seconds, 2),
        "requests": provider.requests,
        "msgs_per_s": round(rate),
        "of_ideal": round(rate / ideal, 2),
        "bytes_per_recipient": round(provider.uploaded / recipients),
        "templated": any(p.endswith("Templates") for p, _ in provider.sends),
        "templates_left_at_postmark": templates_left,
        "bare_requests_msgs_per_s": round(bare_rate),
        "of_bare": round(rate / bare_rate, 2),
        "ledger": dict(Counter(ledger.values())),
        "last_line": last,
    }
    # Faults: a share of the answers after the client's timeout.
    provider = Provider(latency, late_share, late_seconds=2.5, seed=seed)
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), provider.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fault_seconds, _, ledger, last = _flygblad(port, recipients)
    finally:
        server.shutdown()
    statuses = Counter(ledger.values())
    accepted = provider.accepted
    return {
        "recipients": recipients,
        "latency_s": latency,
        "ideal_msgs_per_s": round(ideal),
        **throughput,
        "faults": {
            "late_share": late_share,
            "seed": seed,
            "seconds": round(fault_seconds, 2),
            "late_requests": provider.late,
            "ledger": dict(statuses),
            "last_line": last,
        },
        "late_requests": provider.late,
        "duplicates": sum(1 for n in accepted.values() if n > 1),
        "lost": sum(1 for e, s in ledger.items() if e not in accepted and s != "uncertain"),
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
        f"providers: {result['recipients']:,} through Postmark's API at {args.latency * 1000:.0f} ms: "
        f"{result['msgs_per_s']:,} msg/s ({result['of_ideal']} of the ideal {result['ideal_msgs_per_s']:,} for one "
        f"request in flight; a bare requests loop posting the same bodies {result['bare_requests_msgs_per_s']:,}); "
        f"{result['bytes_per_recipient']:,} bytes uploaded per recipient. With {args.late_share:.0%} of answers late: "
        f"{result['late_requests']} late, ledger {result['faults']['ledger']}; duplicates {result['duplicates']}, "
        f"lost {result['lost']}"
    )


if __name__ == "__main__":
    main()

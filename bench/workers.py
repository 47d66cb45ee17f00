"""Several senders on one PostgreSQL outbox against one: 5,000 messages to Postfix's smtp-sink.

Run: ``.venv/bin/python -m bench.workers [--messages N] [--workers W] [--repeats R]``
with ``FLYGBLAD_TEST_DATABASE_URL`` (or ``--database``) naming a PostgreSQL database
to create a scratch schema in. Each repeat sends a fresh issue once with
``flygblad send`` (one process, 2 connections) and once with ``send --workers W``
(W processes, 2 connections each), interleaved; it checks that every subscriber
got exactly one message, and reports medians and the ratio. Results go to
``bench/results/workers.json``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.common import SECRET, sample_project, subscribers_csv, write_result
from bench.send import SmtpSink

ROOT = Path(__file__).resolve().parent.parent


def _project(work: Path, database: str, port: int, count: int) -> Path:
    sample_project(work, smtp_port=port, replace={'url = "sqlite:///var/flygblad.db"': f'url = "{database}"'})
    subscribers_csv(work / "subs.csv", count)
    return work


def _run(work: Path, *args: str) -> str:
    env = {**os.environ, "FLYGBLAD_SECRET": SECRET}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=work, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"flygblad {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def _fresh_issue(work: Path, n: int) -> None:
    """Add a news item so the next send has a new issue to freeze."""
    feed = work / "examples" / "site" / "nyheter.xml"
    item = (
        f"<item><title>Bench {n}</title><link>https://www.produktionslyftet.example/nyheter/bench-{n}</link>"
        f"<description>Bench {n}.</description></item>"
    )
    feed.write_text(feed.read_text(encoding="utf-8").replace("<item>", item + "<item>", 1), encoding="utf-8")
    _run(work, "collect")


def _timed_send(work: Path, workers: int, count: int) -> float:
    start = time.perf_counter()
    out = _run(work, "send", "--workers", str(workers))
    elapsed = time.perf_counter() - start
    if f"{count} sent" not in out.splitlines()[-1]:
        raise SystemExit(f"not every message was sent: {out}")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--database",
        default=os.environ.get("FLYGBLAD_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    schema = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(args.database)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    sink = SmtpSink()
    one, many = [], []
    try:
        with tempfile.TemporaryDirectory() as folder:
            url = f"{args.database}{'&' if '?' in args.database else '?'}options=-csearch_path%3D{schema}"
            work = _project(Path(folder), url, sink.port, args.messages)
            _run(work, "collect")
            _run(work, "subscribers", "import", "--list", "nyhetsbrev", "subs.csv")
            _run(work, "send")  # the first issue: warms everything up
            for n in range(args.repeats):
                _fresh_issue(work, 2 * n)
                one.append(_timed_send(work, 1, args.messages))
                _fresh_issue(work, 2 * n + 1)
                many.append(_timed_send(work, args.workers, args.messages))
    finally:
        sink.stop()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    result = {
        "what": f"send {args.messages} messages from one PostgreSQL outbox to smtp-sink: 1 process vs {args.workers}",
        "one_sender_msgs_per_s": round(statistics.median(one)),
        "workers_msgs_per_s": round(statistics.median(many)),
        "ratio": round(statistics.median(many) / statistics.median(one), 2),
        "goal": "faster than one sender (ratio > 1)",
        "repeats": {"one": [round(x) for x in one], "workers": [round(x) for x in many]},
    }
    write_result("workers", result)
    print(
        f"one sender {result['one_sender_msgs_per_s']} msg/s; {args.workers} workers "
        f"{result['workers_msgs_per_s']} msg/s; ratio {result['ratio']}"
    )


if __name__ == "__main__":
    main()

"""A 1,000,000-subscriber list: import, outbox creation, every message produced to a null sender.

Run: ``.venv/bin/python -m bench.scale [--sizes 100000 1000000] [--repeats R]``.

For each size, in a fresh SQLite project (the bundled default's storage), three
phases, each its own process so its peak RSS is its own (``os.wait4``):

1. **import**: ``flygblad subscribers import`` of a CSV with that many rows
   (every address checked by email-validator, upserted in batches);
2. **outbox**: a new issue's outbox, one ``pending`` row per subscriber, written
   in one transaction (what ``flygblad send`` does first);
3. **messages**: the send loop of ``flygblad send``, ledger included, handing
   every recipient's complete message (headers, both parts, signed unsubscribe
   link) to a sender that drops it; batches of 500 (an API sender's batch).

The sizes run interleaved (small, large, small, large, ...) and the medians of
the repeats are reported, with the large size's time and RSS as a multiple of
the small one's. Goals (issue 7): outbox + messages <= 120 s at 1,000,000;
peak RSS <= 200 MB and no more than 1.2 x the 100,000 run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.common import ROOT, SECRET, sample_project, subscribers_csv, write_result

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _run(command: Sequence[str], cwd: Path) -> tuple[float, float, str]:
    """Run *command*; (seconds, its own peak RSS in MB, its stdout)."""
    env = {**os.environ, "FLYGBLAD_SECRET": SECRET}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not all children's
        elapsed = time.perf_counter() - start
        process.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code != 0:
            raise SystemExit(f"{' '.join(command)} failed ({code}): {err.read().decode()[-2000:]}")
        return elapsed, usage.ru_maxrss / 1024, out.read().decode()


@contextlib.contextmanager
def _storage(database: str | None) -> Iterator[dict[str, str]]:
    """The config edit for the store: the project's SQLite file, or a scratch schema on *database* (dropped after)."""
    if database is None:
        yield {}
        return
    from sqlalchemy import create_engine, text

    schema = f"bench_scale_{secrets.token_hex(4)}"
    admin = create_engine(database)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{database}{'&' if '?' in database else '?'}options=-csearch_path%3D{schema}"
    try:
        yield {'url = "sqlite:///var/flygblad.db"': f'url = "{url}"'}
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def one_size(count: int, database: str | None = None) -> dict[str, float]:
    """Import *count* subscribers into a fresh project, then outbox + messages; times and peak RSS."""
    with tempfile.TemporaryDirectory() as folder, _storage(database) as replace:
        work = Path(folder)
        config = sample_project(work, replace=replace)
        csv_path = work / "subscribers.csv"
        subscribers_csv(csv_path, count)
        flygblad = str(Path(sys.executable).with_name("flygblad"))
        subprocess.run([flygblad, "--config", str(config), "collect"], cwd=work, check=True, capture_output=True)
        import_s, import_rss, _ = _run(
            [flygblad, "--config", str(config), "subscribers", "import", "--list", "nyhetsbrev", str(csv_path)], work
        )
        _, send_rss, out = _run([sys.executable, "-m", "bench.scale", "--phase-send", str(config), str(count)], ROOT)
        phase = json.loads(out.strip().splitlines()[-1])
    return {
        "import_s": import_s,
        "import_rss_mb": import_rss,
        "outbox_s": phase["outbox_s"],
        "messages_s": phase["messages_s"],
        "outbox_and_messages_s": phase["outbox_s"] + phase["messages_s"],
        "send_rss_mb": send_rss,
        "message_bytes": phase["message_bytes"],
    }


def phase_send(config: str, count: int) -> None:
    """In its own process: outbox for a new issue, then every message to a null sender (prints JSON)."""
    from pipeline.config import load_settings
    from pipeline.delivery import Message, Sender, SendResult
    from pipeline.delivery.send import send_issue
    from pipeline.issues import draft, freeze
    from pipeline.store import Store

    class NullSender(Sender):
        """Takes each message's bytes and drops them."""

        name = "null"
        batch_size = 500
        size = 0

        def send(self, messages: Sequence[Message]) -> list[SendResult]:
            NullSender.size = len(messages[-1].data)
            return [SendResult(m, "sent") for m in messages]

    settings = load_settings(config)
    with Store.open(settings.storage_url) as store:
        issue = freeze(store, draft(settings, store, settings.lists[0], store.items()))
        start = time.perf_counter()
        written = store.start_outbox(issue.id, issue.list)  # send_issue finds the outbox there and resumes it
        outbox_s = time.perf_counter() - start
        start = time.perf_counter()
        report = send_issue(
            settings, store, store.issue(issue.list, issue.number), NullSender(settings.sender, settings)
        )
        messages_s = time.perf_counter() - start
    if written != count or report.counts.get("sent") != count:
        raise SystemExit(f"expected {count} rows and messages, got {written} rows, {report.counts}")
    print(json.dumps({"outbox_s": outbox_s, "messages_s": messages_s, "message_bytes": NullSender.size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 1_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--database", metavar="URL", help="PostgreSQL to run on (a scratch schema), e.g. " + DEFAULT_DATABASE
    )
    parser.add_argument("--phase-send", nargs=2, metavar=("CONFIG", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase_send:
        phase_send(args.phase_send[0], int(args.phase_send[1]))
        return
    small, large = args.sizes
    runs: dict[int, list[dict[str, float]]] = {small: [], large: []}
    for _ in range(args.repeats):
        for size in (small, large):
            runs[size].append(one_size(size, args.database))
            print(f"{size}: {json.dumps({k: round(v, 2) for k, v in runs[size][-1].items()})}", flush=True)

    def median(size: int, key: str) -> float:
        return statistics.median(r[key] for r in runs[size])

    keys = runs[small][0].keys()
    result = {
        "what": (
            f"{large} subscribers: import, outbox, every message to a null sender "
            f"({'PostgreSQL' if args.database else 'SQLite'}, batches of 500)"
        ),
        "repeats": args.repeats,
        "small": {"subscribers": small, **{k: round(median(small, k), 2) for k in keys}},
        "large": {"subscribers": large, **{k: round(median(large, k), 2) for k in keys}},
        "time_growth": round(median(large, "outbox_and_messages_s") / median(small, "outbox_and_messages_s"), 2),
        "rss_growth": round(
            max(median(large, "send_rss_mb"), median(large, "import_rss_mb"))
            / max(median(small, "send_rss_mb"), median(small, "import_rss_mb")),
            3,
        ),
        "goal": "outbox + messages <= 120 s; peak RSS <= 200 MB and <= 1.2 x the small run",
        "runs": {str(size): [{k: round(v, 2) for k, v in r.items()} for r in rs] for size, rs in runs.items()},
    }
    write_result("scale_postgresql" if args.database else "scale", result)
    big = result["large"]
    print(
        f"{large} subscribers: import {big['import_s']} s, outbox {big['outbox_s']} s, messages {big['messages_s']} s "
        f"(outbox + messages {big['outbox_and_messages_s']} s, goal <= 120); peak RSS import {big['import_rss_mb']} MB, "
        f"send {big['send_rss_mb']} MB (goal <= 200; {result['rss_growth']} x the {small} run, goal <= 1.2)"
    )


if __name__ == "__main__":
    main()

"""Sending 10,000 personalised messages to a local SMTP sink, against a bare smtplib loop.

Run: ``.venv/bin/python -m bench.send [--messages N] [--connections C] [--repeats R]``.

The sink is Postfix's ``smtp-sink`` (Debian package ``postfix``), which is not
the bottleneck: its own ceiling is measured first with the bare loop at more
connections. Each repeat runs, interleaved, (a) a bare ``smtplib`` loop that
sends one pre-built message's bytes to every recipient over C threads, each
with one reused connection, and (b) ``flygblad send`` for a fresh issue to the
same number of subscribers over the same C connections, with its outbox ledger
(SQLite). Medians over repeats; the goal (issue 4) is flygblad >= 0.8 of the
bare loop. Results go to ``bench/results/send.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import free_port, write_result

ROOT = Path(__file__).resolve().parent.parent


class SmtpSink:
    """Postfix's smtp-sink on a free port."""

    def __init__(self) -> None:
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        if not Path(binary).exists():
            raise SystemExit("smtp-sink not found: apt-get install postfix (it ships /usr/sbin/smtp-sink)")
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "-u", "nobody", "-c", f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("smtp-sink did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def bare_loop(port: int, data: bytes, recipients: list[str], connections: int) -> float:
    """Messages a second of a plain smtplib loop over *connections* threads."""
    shares = [recipients[i::connections] for i in range(connections)]

    def run(share: list[str]) -> None:
        smtp = smtplib.SMTP("127.0.0.1", port)
        for recipient in share:
            smtp.sendmail("nyhetsbrev@produktionslyftet.example", [recipient], data)
        smtp.quit()

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(recipients) / (time.perf_counter() - start)


def make_project(work: Path, port: int, connections: int, count: int):
    from pipeline.collect import collect
    from pipeline.config import load_settings
    from pipeline.store import Store
    from pipeline.subscribers import ImportReport, batches, candidate

    shutil.copytree(ROOT / "examples" / "site", work / "examples" / "site")
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    text = text.replace(
        'kind = "file"\ndir = "outbox"',
        f'kind = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\nconnections = {connections}',
    )
    (work / "config.toml").write_text(text, encoding="utf-8")
    settings = load_settings(work / "config.toml")
    with Store.open(settings.storage_url) as store:
        collect(settings, store)
        rows = (candidate(f"reader{n}@example.org", f"Läsare {n}") for n in range(count))
        report = ImportReport()
        for batch in batches(rows, 1000):
            store.upsert_subscribers("nyhetsbrev", batch, report=report)
    return settings


def flygblad_send(settings, count: int) -> float:
    """Messages a second of flygblad's send loop (ledger included) for a fresh issue."""
    from pipeline.delivery import sender_for
    from pipeline.delivery.send import send_issue
    from pipeline.issues import draft, freeze
    from pipeline.store import Store

    with Store.open(settings.storage_url) as store:
        # The same items every repeat (so every message has the bare loop's size), as a new issue.
        issue = freeze(store, draft(settings, store, settings.lists[0], store.items()))
        start = time.perf_counter()
        report = send_issue(settings, store, issue, sender_for(settings))
        elapsed = time.perf_counter() - start
    assert report.counts.get("sent") == count, report.counts
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("FLYGBLAD_SECRET", "bench-secret-0123456789abcdef")
    sink = SmtpSink()
    try:
        with tempfile.TemporaryDirectory() as folder:
            settings = make_project(Path(folder), sink.port, args.connections, args.messages)
            from pipeline.delivery.send import Outbox
            from pipeline.issues import build_issue
            from pipeline.store import Store

            with Store.open(settings.storage_url) as store:
                sample = build_issue(settings, store, settings.lists[0])
            data = (
                Outbox(settings, settings.lists[0], sample, date=datetime.now(UTC))
                .message(1, "reader1@example.org", "Läsare 1")
                .data
            )
            recipients = [f"reader{n}@example.org" for n in range(args.messages)]
            ceiling = bare_loop(sink.port, data, recipients, max(4, args.connections * 2))
            bare, ours = [], []
            for _ in range(args.repeats):
                bare.append(bare_loop(sink.port, data, recipients, args.connections))
                ours.append(flygblad_send(settings, args.messages))
    finally:
        sink.stop()
    result = {
        "what": f"send {args.messages} personalised messages to Postfix smtp-sink over {args.connections} connections",
        "message_bytes": len(data),
        "sink_ceiling_msgs_per_s": round(ceiling),
        "bare_smtplib_msgs_per_s": round(statistics.median(bare)),
        "flygblad_msgs_per_s": round(statistics.median(ours)),
        "ratio": round(statistics.median(ours) / statistics.median(bare), 3),
        "goal_ratio": 0.8,
        "repeats": {"bare": [round(x) for x in bare], "flygblad": [round(x) for x in ours]},
    }
    write_result("send", result)
    print(
        f"sink ceiling ~{result['sink_ceiling_msgs_per_s']} msg/s; bare smtplib {result['bare_smtplib_msgs_per_s']} msg/s; "
        f"flygblad send {result['flygblad_msgs_per_s']} msg/s; ratio {result['ratio']} (goal >= 0.8)"
    )


if __name__ == "__main__":
    main()

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
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import SECRET, free_port, package_version, sample_project, subscribers_csv, write_result

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

    def ceiling(self, data: bytes, messages: int, sessions: int) -> float:
        """Messages a second Postfix's C client (smtp-source) gets into this sink: the sink's own limit."""
        binary = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
        with tempfile.NamedTemporaryFile(suffix=".eml") as message:
            message.write(data.replace(b"\r\n", b"\n"))  # smtp-source adds the CR itself
            message.flush()
            start = time.perf_counter()
            subprocess.run(
                [
                    binary,
                    "-d",
                    "-s",
                    str(sessions),
                    "-m",
                    str(messages),
                    "-F",
                    message.name,
                    "-f",
                    "nyhetsbrev@produktionslyftet.example",
                    "-t",
                    "reader@example.org",
                    f"127.0.0.1:{self.port}",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return messages / (time.perf_counter() - start)


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


def mailmerge_template(outbox) -> str:
    """The issue flygblad sends, as a mailmerge (Jinja2) template: same headers, same two parts."""
    from pipeline.render import token_pattern

    rendered = outbox.rendered
    fields = {
        "greeting": outbox.strings["greeting_named"].replace("{name}", "{{ name }}"),
        "name": "{{ name }}",
        "email": "{{ email }}",
        "view_url": outbox.view_url,
        "unsubscribe_url": "{{ unsubscribe_url }}",
    }

    def jinja(body: str) -> str:
        pieces = token_pattern(rendered.nonce).split(body)  # literal, field, literal, field, ...
        return "".join(
            fields[piece] if n % 2 else ("{% raw %}" + piece + "{% endraw %}" if piece else "")
            for n, piece in enumerate(pieces)
        )

    return (
        "TO: {{ name }} <{{ email }}>\n"
        f"FROM: {outbox.list.from_}\n"
        f"SUBJECT: {outbox.subject}\n"
        "List-Unsubscribe: <{{ unsubscribe_url }}>\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="fb-alternative"\n\n'
        "--fb-alternative\nContent-Type: text/plain; charset=utf-8\n\n"
        f"{jinja(rendered.text)}\n"
        "--fb-alternative\nContent-Type: text/html; charset=utf-8\n\n"
        f"{jinja(rendered.html)}\n"
        "--fb-alternative--\n"
    )


def mailmerge_run(work: Path, port: int, csv_path: Path, template: str, count: int) -> float:
    """Messages a second of mailmerge (PyPI) sending the same issue to the first *count* rows of the same CSV."""
    (work / "mailmerge_template.txt").write_text(template, encoding="utf-8")
    (work / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nratelimit = 0\n", encoding="utf-8"
    )
    binary = Path(sys.executable).with_name("mailmerge")
    start = time.perf_counter()
    subprocess.run(
        [
            str(binary),
            "--limit",
            str(count),
            "--no-dry-run",
            "--output-format",
            "raw",
            "--template",
            str(work / "mailmerge_template.txt"),
            "--database",
            str(csv_path),
            "--config",
            str(work / "mailmerge_server.conf"),
        ],
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return count / (time.perf_counter() - start)


def make_project(work: Path, port: int, connections: int, csv_path: Path):
    from pipeline.collect import collect
    from pipeline.config import load_settings
    from pipeline.store import Store
    from pipeline.subscribers import ImportReport, batches, read_csv

    settings = load_settings(sample_project(work, smtp_port=port, connections=connections))
    with Store.open(settings.storage_url) as store:
        collect(settings, store)
        report = ImportReport()
        for batch in batches(read_csv(csv_path, report.problems)):  # what `flygblad subscribers import` does
            store.upsert_subscribers("nyhetsbrev", batch, report=report)
        assert not report.problems, report.problems
    return settings


def flygblad_send(settings, count: int) -> float:
    """Messages a second of flygblad's send loop (ledger included) for a fresh issue of a fresh project.

    A fresh project each repeat: the store allows an item in one issue of a list only, and every
    repeat sends the same items (so every message has the bare loop's size).
    """
    from pipeline.delivery import sender_for
    from pipeline.delivery.send import send_issue
    from pipeline.issues import draft, freeze
    from pipeline.store import Store

    with Store.open(settings.storage_url) as store:
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
    parser.add_argument(
        "--mailmerge-messages",
        type=int,
        default=1000,
        help="how many of the CSV's rows mailmerge sends each repeat (0: leave it out); it is ~20 x slower",
    )
    args = parser.parse_args()
    os.environ.setdefault("FLYGBLAD_SECRET", SECRET)
    has_mailmerge = args.mailmerge_messages > 0 and Path(sys.executable).with_name("mailmerge").exists()
    sink = SmtpSink()
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            from pipeline.delivery.send import Outbox
            from pipeline.issues import next_issue
            from pipeline.store import Store
            from pipeline.tokens import Tokens

            tokens = Tokens(SECRET)
            from pipeline.config import load_settings

            base = load_settings(ROOT / "config.toml").web_base_url + "/unsubscribe/"  # the project's own links
            csv_path = work / "subscribers.csv"
            # Subscriber n of the CSV gets id n + 1 in flygblad's fresh database: the same links.
            subscribers_csv(csv_path, args.messages, lambda n: base + tokens.unsubscribe(n + 1, "nyhetsbrev"))
            recipients = [f"reader{n}@example.org" for n in range(args.messages)]
            settings = make_project(work / "sample", sink.port, args.connections, csv_path)
            with Store.open(settings.storage_url) as store:
                sample = next_issue(settings, store, settings.lists[0]).as_issue()  # what the send will freeze
            outbox = Outbox(settings, settings.lists[0], sample, date=datetime.now(UTC))
            data = outbox.message(1, "reader1@example.org", "Läsare 1").data
            template = mailmerge_template(outbox)
            ceiling = sink.ceiling(data, args.messages, max(4, args.connections * 2))
            bare, ours, theirs = [], [], []
            for repeat in range(args.repeats):
                bare.append(bare_loop(sink.port, data, recipients, args.connections))
                fresh = make_project(work / f"run{repeat}", sink.port, args.connections, csv_path)
                ours.append(flygblad_send(fresh, args.messages))
                if has_mailmerge:
                    theirs.append(
                        mailmerge_run(work, sink.port, csv_path, template, min(args.messages, args.mailmerge_messages))
                    )
    finally:
        sink.stop()
    mailmerge = statistics.median(theirs) if theirs else None
    result = {
        "what": f"send {args.messages} personalised messages to Postfix smtp-sink over {args.connections} connections",
        "message_bytes": len(data),
        "sink_ceiling_msgs_per_s": round(ceiling),
        "sink_ceiling_how": f"Postfix smtp-source, {max(4, args.connections * 2)} sessions, the same message",
        "bare_smtplib_msgs_per_s": round(statistics.median(bare)),
        "flygblad_msgs_per_s": round(statistics.median(ours)),
        "mailmerge_msgs_per_s": round(mailmerge) if mailmerge else None,
        "ratio": round(statistics.median(ours) / statistics.median(bare), 3),
        "over_mailmerge": round(statistics.median(ours) / mailmerge, 1) if mailmerge else None,
        "goal_ratio": 0.9,
        "goal_over_mailmerge": 4,
        "mailmerge_version": package_version("mailmerge"),
        "mailmerge_messages": min(args.messages, args.mailmerge_messages) if theirs else 0,
        "repeats": {
            "bare": [round(x) for x in bare],
            "flygblad": [round(x) for x in ours],
            "mailmerge": [round(x) for x in theirs],
        },
    }
    write_result("send", result)
    print(
        f"sink ceiling (smtp-source) {result['sink_ceiling_msgs_per_s']} msg/s; "
        f"bare smtplib {result['bare_smtplib_msgs_per_s']} msg/s; flygblad send {result['flygblad_msgs_per_s']} msg/s; "
        f"ratio {result['ratio']} (goal >= 0.9); mailmerge {result['mailmerge_msgs_per_s']} msg/s "
        f"(flygblad {result['over_mailmerge']} x, goal >= 4)"
    )


if __name__ == "__main__":
    main()

"""Sending to a relay that takes its time: 20,000 messages, DATA answered after 50 ms, 20 connections.

``python -m bench.relay [--messages 20000] [--connections 20] [--delay-ms 50]``. The relay is aiosmtpd on
loopback in a process of its own, answering every DATA after the delay (``asyncio.sleep``: Postfix's
``smtp-sink -w`` only takes whole seconds), as a provider's SMTP endpoint some way off does. Interleaved
in one run: a bare ``smtplib`` thread pool with one reused connection per thread sending one pre-built
message, and ``flygblad``'s send of a fresh issue over the same number of connections, ledger included.
The ideal is connections / delay (20 / 0.05 s = 400 msg/s).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import free_port, subscribers_csv, timed_threads, write_result
from bench.send import ROOT, flygblad_send, make_project


def _serve(port: int, delay: float) -> None:
    from aiosmtpd.controller import Controller

    class Slow:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            await asyncio.sleep(delay)
            return "250 2.0.0 Ok: queued"

    controller = Controller(Slow(), hostname="127.0.0.1", port=port, data_size_limit=10_000_000)
    controller.start()
    stopped = False

    def stop(*_args: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    while not stopped:
        time.sleep(0.2)
    controller.stop()


def _bare_pool(port: int, data: bytes, recipients: list[str], connections: int) -> float:
    """Messages a second of a plain smtplib thread pool: one reused connection per thread, one message's bytes."""
    import smtplib
    import threading

    shares = [recipients[i::connections] for i in range(connections)]
    sent = [0] * connections

    def run(n: int) -> None:
        smtp = smtplib.SMTP("127.0.0.1", port)
        for recipient in shares[n]:
            smtp.sendmail("nyhetsbrev@produktionslyftet.example", [recipient], data)
            sent[n] += 1
        smtp.quit()

    elapsed = timed_threads([threading.Thread(target=run, args=(n,)) for n in range(connections)])
    if sum(sent) != len(recipients):
        raise SystemExit(f"the bare pool sent {sum(sent)} of {len(recipients)}")
    return len(recipients) / elapsed


def _wait(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the relay did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "DELAY_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], args.serve[1] / 1000)
        return
    port = free_port()
    relay = subprocess.Popen([sys.executable, "-m", "bench.relay", "--serve", str(port), str(args.delay_ms)], cwd=ROOT)
    try:
        _wait(port)
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            csv_path = work / "subscribers.csv"
            subscribers_csv(csv_path, args.messages)
            settings = make_project(work / "project", port, args.connections, csv_path)
            # The bare loop sends a message of the issue's size: the sample issue's HTML, once.
            from pipeline.issues import next_issue
            from pipeline.store import Store

            with Store.open(settings.storage_url) as store:
                made = next_issue(settings, store, settings.lists[0])
                assert made is not None
            from pipeline.jobs import preview

            data = preview(settings, made).eml  # the whole message as a subscriber gets it
            recipients = [f"reader{n}@example.org" for n in range(args.messages)]
            bare = _bare_pool(port, data, recipients, args.connections)
            flygblad = flygblad_send(settings, args.messages)
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=15)
    ideal = args.connections / (args.delay_ms / 1000)
    result = {
        "what": (
            f"{args.messages:,} messages to a relay answering DATA after {args.delay_ms} ms, "
            f"{args.connections} connections"
        ),
        "flygblad_msg_s": round(flygblad, 1),
        "bare_msg_s": round(bare, 1),
        "ideal_msg_s": ideal,
        "of_ideal": round(flygblad / ideal, 3),
        "over_bare": round(flygblad / bare, 3),
    }
    write_result("relay", result)
    print(result)


if __name__ == "__main__":
    main()

"""Sending to a relay that takes its time: 20,000 messages, DATA answered after 50 ms, 20 connections.

``python -m bench.relay [--messages 20000] [--connections 20] [--delay-ms 50] [--repeats 3]``. The relay is aiosmtpd on
loopback in a process of its own, answering every DATA after the delay (``asyncio.sleep``: Postfix's
``smtp-sink -w`` only takes whole seconds), as a provider's SMTP endpoint some way off does; in
:data:`RELAY_PROCESSES` processes on one port, as such an endpoint has more than one core. Interleaved
in one run, ``--repeats`` times each, taking turns: a bare ``smtplib`` thread pool with one reused connection
per thread sending one pre-built message, and ``flygblad``'s send of a fresh issue over the same number of
connections, ledger included; the medians are compared (two single runs of each on one machine differed by
6 %). The ideal is connections / delay (20 / 0.05 s = 400 msg/s).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import free_port, subscribers_csv, timed_threads, write_result
from bench.send import ROOT, flygblad_send, make_project

#: Processes the stand-in relay runs in, sharing its port (SO_REUSEPORT: the kernel spreads the connections).
#: One aiosmtpd process reads DATA a line at a time in Python and, at 320 messages a second of 45 KB, used
#: 0.9 of a core: on a 2-core machine it, not the client, set the pace of the bare pool and of flygblad
#: alike. A relay some way off has cores of its own.
RELAY_PROCESSES = 2


def _serve(port: int, delay: float) -> None:
    """One of the relay's processes: aiosmtpd's SMTP on a shared port, every DATA answered after *delay*."""
    from aiosmtpd.smtp import SMTP

    class Slow:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            await asyncio.sleep(delay)
            return "250 2.0.0 Ok: queued"

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Slow(), data_size_limit=10_000_000), "127.0.0.1", port, reuse_port=True
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(run())


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "DELAY_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], args.serve[1] / 1000)
        return
    port = free_port()
    relays = [
        subprocess.Popen([sys.executable, "-m", "bench.relay", "--serve", str(port), str(args.delay_ms)], cwd=ROOT)
        for _ in range(RELAY_PROCESSES)
    ]
    try:
        _wait(port)
        time.sleep(1)  # every process listening before the first connection
        bare: list[float] = []
        flygblad: list[float] = []
        recipients = [f"reader{n}@example.org" for n in range(args.messages)]
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                work = Path(folder)
                csv_path = work / "subscribers.csv"
                subscribers_csv(csv_path, args.messages)
                # A fresh project each turn: the store allows an item in one issue of a list only.
                settings = make_project(work / "project", port, args.connections, csv_path)
                # The bare loop sends a message of the issue's size: the sample issue's HTML, once.
                from pipeline.issues import next_issue
                from pipeline.store import Store

                with Store.open(settings.storage_url) as store:
                    made = next_issue(settings, store, settings.lists[0])
                    assert made is not None
                from pipeline.jobs import preview

                data = preview(settings, made).eml  # the whole message as a subscriber gets it
                bare.append(_bare_pool(port, data, recipients, args.connections))
                flygblad.append(flygblad_send(settings, args.messages))
            print(f"bare pool {bare[-1]:.1f} msg/s, flygblad {flygblad[-1]:.1f} msg/s", flush=True)
    finally:
        for relay in relays:
            relay.send_signal(signal.SIGTERM)
        for relay in relays:
            relay.wait(timeout=15)
    ideal = args.connections / (args.delay_ms / 1000)
    ours, theirs = statistics.median(flygblad), statistics.median(bare)
    result = {
        "what": (
            f"{args.messages:,} messages to a relay answering DATA after {args.delay_ms} ms, "
            f"{args.connections} connections, median of {args.repeats} interleaved runs"
        ),
        "flygblad_msg_s": round(ours, 1),
        "bare_msg_s": round(theirs, 1),
        "ideal_msg_s": ideal,
        "of_ideal": round(ours / ideal, 3),
        "over_bare": round(ours / theirs, 3),
        "runs": {"flygblad": [round(v, 1) for v in flygblad], "bare": [round(v, 1) for v in bare]},
    }
    write_result("relay", result)
    print(result)


if __name__ == "__main__":
    main()

"""Soak: 20,000 recipients through a hostile relay, with the sender killed three times. Nobody twice, nobody lost.

Run: ``.venv/bin/python -m bench.soak [--recipients N] [--kills K] [--seed S]``.

The relay (aiosmtpd on 127.0.0.1, in this process) answers ``451`` to 5 % of
RCPT commands (a fresh draw on every attempt), ``550`` to 1 % of recipients
(always), and drops 1 % of connections during DATA: half of those after it
queued the message (the client never hears "250"), half before. ``flygblad
send --wait`` runs in a subprocess and is SIGKILLed at *K* random moments (a
seeded draw of how many messages the relay has taken), then started again,
until a run ends with the issue done.

Then the relay's log is held against the ledger:

* duplicates: recipients the relay queued more than one copy for (goal 0);
* lost: recipients neither queued, nor bounced, nor listed uncertain (goal 0);
* every ``sent`` in the ledger was queued by the relay, and everything queued
  but not ``sent`` is ``uncertain`` (the kills and the drops after DATA).

Results go to ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import SECRET, free_port, sample_project, subscribers_csv, write_result

ROOT = Path(__file__).resolve().parent.parent


class HostileRelay:
    """An SMTP server that refuses, bounces and drops as the module says; it keeps what it queued."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.queued: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.faults: Counter[str] = Counter()
        self.draws = random.Random(seed)

    def _bucket(self, address: str, salt: str) -> float:
        digest = hashlib.blake2b(f"{self.seed}:{salt}:{address}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self._bucket(address, "550") < 0.01:
            self.faults["550"] += 1
            return "550 5.1.1 No such user here"
        with self.lock:
            temporary = self.draws.random() < 0.05
        if temporary:
            self.faults["451"] += 1
            return "451 4.7.1 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            draw = self.draws.random()
        if draw < 0.005:  # dropped before the message was queued
            self.faults["drop before queue"] += 1
            server.transport.close()
            return "421 gone"
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.queued[recipient] += 1
        if draw < 0.01:  # queued, but the client never hears so
            self.faults["drop after queue"] += 1
            server.transport.close()
        return "250 2.0.0 Ok: queued"

    def total(self) -> int:
        with self.lock:
            return sum(self.queued.values())


def _flygblad(work: Path, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "FLYGBLAD_SECRET": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=work,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def soak(recipients: int, kills: int, seed: int) -> dict[str, Any]:
    from aiosmtpd.controller import Controller

    from pipeline.config import load_settings
    from pipeline.store import Store

    relay = HostileRelay(seed)
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port, data_size_limit=10_000_000)
    controller.start()
    rng = random.Random(seed)
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            sample_project(work, smtp_port=port)
            config = work / "config.toml"
            config.write_text(
                config.read_text(encoding="utf-8").replace(
                    "connections = 2",
                    "connections = 2\nretry_base_seconds = 0.2\nmax_retries = 8\ntimeout = 10",
                ),
                encoding="utf-8",
            )
            subscribers_csv(work / "subs.csv", recipients)
            for command in (("collect",), ("subscribers", "import", "--list", "nyhetsbrev", "subs.csv")):
                done = _flygblad(work, *command)
                out, err = done.communicate()
                if done.returncode != 0:
                    raise SystemExit(f"flygblad {' '.join(command)}: {err}")
            moments = sorted(rng.randint(recipients // 10, recipients * 9 // 10) for _ in range(kills))
            started = time.perf_counter()
            runs, killed_at = 0, []
            last_out = last_err = ""
            while True:
                runs += 1
                sending = _flygblad(work, "send", "--wait")
                target = moments[len(killed_at)] if len(killed_at) < len(moments) else None
                while target is not None and sending.poll() is None and relay.total() < target:
                    time.sleep(0.005)
                if target is not None and sending.poll() is None:
                    sending.send_signal(signal.SIGKILL)
                    sending.wait()
                    killed_at.append(relay.total())
                    continue
                last_out, last_err = sending.communicate()
                if target is not None:
                    killed_at.append(None)  # the run ended before the moment came
                if "(done)" in last_out or runs > kills + 10:
                    break
            seconds = time.perf_counter() - started
            settings = load_settings(config)
            with Store.open(settings.storage_url) as store:
                issue = store.issue("nyhetsbrev", 1)
                assert issue is not None
                rows = store.outbox_rows(issue.id)
                issues = len(store.issues("nyhetsbrev"))
    finally:
        controller.stop()
    ledger = {r.email: r.status for r in rows}
    statuses = Counter(ledger.values())
    queued = relay.queued
    duplicates = sorted(e for e, n in queued.items() if n > 1)
    accounted = set(queued) | {e for e, s in ledger.items() if s in ("bounced", "uncertain")}
    everyone = {f"reader{n}@example.org" for n in range(recipients)}
    lost = sorted(everyone - accounted)
    sent_not_queued = sorted(e for e, s in ledger.items() if s == "sent" and e not in queued)
    queued_not_recorded = sorted(e for e in queued if ledger.get(e) not in ("sent", "uncertain"))
    return {
        "recipients": recipients,
        "seed": seed,
        "kills": [k for k in killed_at if k is not None],
        "runs": runs,
        "seconds": round(seconds, 1),
        "issues": issues,
        "ledger": dict(statuses),
        "relay_faults": dict(relay.faults),
        "queued_recipients": len(queued),
        "duplicates": len(duplicates),
        "lost": len(lost),
        "sent_but_not_queued": len(sent_not_queued),
        "queued_but_not_sent_or_uncertain": len(queued_not_recorded),
        "examples": {"duplicates": duplicates[:5], "lost": lost[:5]},
        "last_run": (last_out.strip().splitlines() or [""])[-1],
        "last_run_stderr_tail": last_err.strip().splitlines()[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    args = parser.parse_args()
    result = soak(args.recipients, args.kills, args.seed)
    write_result("soak", result)
    print(
        f"soak: {result['recipients']:,} recipients, {len(result['kills'])} kills, {result['runs']} runs, "
        f"{result['seconds']} s: ledger {result['ledger']}; duplicates {result['duplicates']}, "
        f"lost {result['lost']}"
    )


if __name__ == "__main__":
    main()

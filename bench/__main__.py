"""``python -m bench [--quick]``: run every benchmark, print one table, keep the JSON.

Results go to ``bench/results/`` (``bench/results/quick/`` with ``--quick``).

Each row runs as its own process (so one row's imports and caches do not help
another) and writes ``bench/results/<name>.json``; this runner reads them back
and prints the table. A row whose prerequisite is missing (Postfix's smtp-sink
for the sending rows, PostgreSQL for the workers row) is shown with the reason
instead of a number. ``--quick`` uses smaller sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import results_dir, write_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = results_dir()

#: (name, arguments, arguments with --quick, what it needs, how to show its result)
ROWS = [
    (
        "render",
        [],
        ["--repeats", "20"],
        None,
        lambda r: (
            f"{r['median_ms']} ms for 20 items; {r['message_per_recipient_us']} µs a recipient",
            "< 20 ms; <= 50 µs",
        ),
    ),
    ("feeds", [], ["--repeats", "2"], None, lambda r: (f"{r['median_ms']} ms", "<= 500 ms")),
    (
        "collect",
        [],
        ["--pages", "60"],
        None,
        lambda r: (f"second run {r['second_s']} s / first {r['first_s']} s = {r['ratio']}", "<= 0.1"),
    ),
    (
        "unsubscribe",
        [],
        ["--seconds", "3"],
        None,
        lambda r: (f"{r['requests_per_s']} req/s, p99 {r['p99_ms']} ms", ">= 500 req/s, p99 <= 50 ms"),
    ),
    (
        "send",
        [],
        ["--messages", "3000", "--repeats", "1"],
        "smtp-sink",
        lambda r: (
            f"{r['flygblad_msgs_per_s']} vs bare smtplib {r['bare_smtplib_msgs_per_s']} msg/s = {r['ratio']}",
            ">= 0.8",
        ),
    ),
    (
        "workers",
        [],
        ["--messages", "3000", "--repeats", "1"],
        "postgresql",
        lambda r: (
            f"4 workers {r['workers_msgs_per_s']} vs 1 sender {r['one_sender_msgs_per_s']} msg/s = {r['ratio']}",
            "> 1",
        ),
    ),
]


def _missing(need: str | None) -> str | None:
    if need == "smtp-sink" and not (shutil.which("smtp-sink") or Path("/usr/sbin/smtp-sink").exists()):
        return "needs Postfix's smtp-sink (apt-get install postfix)"
    if need == "postgresql":
        url = os.environ.get("FLYGBLAD_TEST_DATABASE_URL")
        if not url:
            return "needs FLYGBLAD_TEST_DATABASE_URL (a PostgreSQL database)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    args = parser.parse_args()
    global RESULTS
    if args.quick:  # a first look must not overwrite the measured results
        RESULTS = RESULTS / "quick"
        os.environ["FLYGBLAD_BENCH_RESULTS"] = str(RESULTS)
    table = []
    for name, full, quick, need, show in ROWS:
        reason = _missing(need)
        if reason:
            table.append((name, f"not run: {reason}", ""))
            continue
        command = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"running {name} …", flush=True)
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            table.append((name, f"failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}", ""))
            continue
        result = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
        value, goal = show(result)
        table.append((name, value, goal))
    width = max(len(row[1]) for row in table)
    print(f"\n{'row':<12} {'result':<{width}}  goal")
    for name, value, goal in table:
        print(f"{name:<12} {value:<{width}}  {goal}")
    write_result("summary", {"rows": [{"row": n, "result": v, "goal": g} for n, v, g in table], "quick": args.quick})


if __name__ == "__main__":
    main()

"""Fuzz: the property-based tests run far longer than in the test suite. Nothing may crash.

Run: ``.venv/bin/python -m bench.fuzz [--examples N]``.

``tests/test_properties.py`` holds one property per entry point that takes
what the world sends: the date parser, the page and feed extractors, the config
loader, the CSV importer, the MIME builder and the public web side (under
waitress, on 127.0.0.1). The suite runs each with 200 generated examples; this
row runs each with *N* (default 5,000) and reports, per property, how many
examples passed and how many failed (goal: 0 failures; a failure prints the
smallest input hypothesis found, to be made a test).

Needs the test extras (``pip install -e '.[test]'``). Results go to
``bench/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import write_result

ROOT = Path(__file__).resolve().parent.parent
PROPERTIES = "tests/test_properties.py"


def run(examples: int) -> dict[str, object]:
    """Run the properties with *examples* each; per property, the examples that passed and failed."""
    env = {**os.environ, "FLYGBLAD_HYPOTHESIS_PROFILE": "fuzz", "FLYGBLAD_FUZZ_EXAMPLES": str(examples)}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "--hypothesis-show-statistics",
            PROPERTIES,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    properties: dict[str, dict[str, int]] = {}
    current = None
    for line in done.stdout.splitlines():
        name = re.match(r"^tests/test_properties\.py::(\w+):", line.strip())
        if name:
            current = name.group(1)
            properties.setdefault(current, {"passed": 0, "failed": 0})
            continue
        counts = re.search(r"(\d+) passing, (\d+) failing", line)
        if counts and current:
            properties[current]["passed"] += int(counts.group(1))
            properties[current]["failed"] += int(counts.group(2))
    failed_tests = re.findall(r"^FAILED (\S+)", done.stdout, re.M)
    return {
        "examples_per_property": examples,
        "properties": properties,
        "examples": sum(p["passed"] + p["failed"] for p in properties.values()),
        "failures": sum(p["failed"] for p in properties.values()) + len(failed_tests),
        "failed_tests": failed_tests,
        "pytest_exit": done.returncode,
        "seconds": round(seconds, 1),
        "output_tail": done.stdout.strip().splitlines()[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5000, help="examples per property (the suite runs 200)")
    args = parser.parse_args()
    result = run(args.examples)
    write_result("fuzz", result)
    if result["pytest_exit"] not in (0, 1) or not result["properties"]:
        print("\n".join(result["output_tail"]), file=sys.stderr)  # type: ignore[arg-type]
        raise SystemExit(f"the properties did not run (pytest exit {result['pytest_exit']})")
    print(
        f"fuzz: {result['examples']:,} examples over {len(result['properties'])} properties "  # type: ignore[arg-type]
        f"in {result['seconds']} s, {result['failures']} failures"
    )


if __name__ == "__main__":
    main()

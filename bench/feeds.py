"""Feeds for 1,000 items (RSS + Atom + JSON): build and write, median of repeats.

Run: ``.venv/bin/python -m bench.feeds [--items N] [--repeats R]``. The goal
(issue 7) is under 500 ms. Results go to ``bench/results/feeds.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import sample_project, write_result
from pipeline.collect import collect
from pipeline.config import load_settings
from pipeline.feeds import build_feeds, write_feeds
from pipeline.store import Store

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        settings = load_settings(sample_project(work, replace={"max_items = 50": f"max_items = {args.items}"}))
        with Store.open(settings.storage_url) as store:
            collect(settings, store)
            base = store.items()
            start = datetime(2020, 1, 1, tzinfo=UTC)
            for n in range(args.items - len(base)):
                model = base[n % len(base)].item
                store.save_item(
                    replace(
                        model,
                        id=f"{model.id}-{n}",
                        url=f"{model.url}-{n}",
                        title=f"{model.title} {n}",
                        published=start + timedelta(hours=n),
                    )
                )
            timings = []
            for repeat in range(args.repeats):
                out = work / f"feeds-{repeat}"
                began = time.perf_counter()
                files = build_feeds(settings, store)
                write_feeds(out, files)
                timings.append((time.perf_counter() - began) * 1000)
    result = {
        "what": f"build and write RSS + Atom + JSON for {args.items} items (all feed plus one per source)",
        "median_ms": round(statistics.median(timings), 1),
        "goal_ms": 500,
        "bytes": sum(len(f.content) for f in files),
        "repeats_ms": [round(t, 1) for t in timings],
    }
    write_result("feeds", result)
    print(f"feeds for {args.items} items: median {result['median_ms']} ms (goal <= 500 ms)")


if __name__ == "__main__":
    main()

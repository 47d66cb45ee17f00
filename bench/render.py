"""Rendering an issue of 20 items: Jinja2 + MJML + CSS inlining + text part + content checks.

Run: ``.venv/bin/python -m bench.render [--repeats N]``. Prints the median and
writes ``bench/results/render.json``. The goal (issue 3) is under 20 ms.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import write_result
from pipeline.collect import collect
from pipeline.config import load_settings
from pipeline.render import RecipientValues, render_issue
from pipeline.render.mime import MessageTemplate, mailbox
from pipeline.store import Store, StoredItem

ROOT = Path(__file__).resolve().parent.parent


def twenty_items(settings) -> list[StoredItem]:
    """The sample site's 8 items, plus 12 more made from them: 4 leaders and 16 articles."""
    with Store.open(settings.storage_url) as store:
        collect(settings, store)
        base = store.items()
    items = list(base)
    n = 0
    while len(items) < 20:
        source = base[n % len(base)]
        n += 1
        item = replace(
            source.item,
            id=f"{source.item.id}-{n}",
            url=f"{source.item.url}-{n}",
            title=f"{source.item.title} ({n})",
            published=(source.item.published or datetime.now(UTC)) - timedelta(days=n),
            category="article" if len([i for i in items if i.item.category == "leader"]) >= 4 else source.item.category,
        )
        items.append(replace(source, item=item))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        shutil.copytree(ROOT / "examples" / "site", work / "examples" / "site")
        shutil.copy(ROOT / "config.toml", work / "config.toml")
        settings = load_settings(work / "config.toml")
        items = twenty_items(settings)
        mailing_list = settings.lists[0]
        date = datetime.now(UTC)
        render_issue(settings, mailing_list, items, date=date, number=1)  # warm: templates compiled once per process
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            rendered = render_issue(settings, mailing_list, items, date=date, number=1)
            timings.append((time.perf_counter() - start) * 1000)
        template = MessageTemplate(rendered, sender=mailing_list.from_, date=date)
        values = RecipientValues(
            "Hej Anna!",
            "Anna",
            "anna@example.org",
            f"{settings.web_base_url}/archive/x/1",
            f"{settings.web_base_url}/unsubscribe/{'x' * 60}",
        )
        count = 20000
        start = time.perf_counter()
        for i in range(count):
            template.message(to=mailbox(f"anna{i}@example.org", "Anna Berg"), message_id=f"{i}.1@x", values=values)
        per_message_us = (time.perf_counter() - start) / count * 1e6
    result = {
        "what": "render an issue of 20 items (Jinja2 + MJML + inlining + text + checks)",
        "items": len(items),
        "repeats": args.repeats,
        "median_ms": round(statistics.median(timings), 2),
        "min_ms": round(min(timings), 2),
        "goal_ms": 20,
        "html_bytes": len(rendered.html.encode("utf-8")),
        "message_per_recipient_us": round(per_message_us, 1),
    }
    write_result("render", result)
    print(
        f"render 20 items: median {result['median_ms']} ms (min {result['min_ms']} ms, goal < 20 ms), "
        f"{result['html_bytes'] / 1024:.0f} KB HTML; one recipient's message: {result['message_per_recipient_us']} µs"
    )


if __name__ == "__main__":
    main()

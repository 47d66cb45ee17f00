"""Rendering an issue of 20 items, and the cost of each recipient's message.

Run: ``.venv/bin/python -m bench.render [--repeats N]``; writes ``bench/results/render.json``.

* **render**: Jinja2 + MJML + CSS inlining + text part + content checks, median
  over repeats (goal, issue 3: <= 20 ms). Interleaved with it, the MJML step
  alone: mjml-python + css-inline against node's ``mjml`` (warm, in one node
  process, timed inside node) on the same MJML, when node and
  ``bench/node/node_modules/mjml`` are there (``python -m bench`` installs it).
* **per recipient**: flygblad's whole message for one recipient (signed
  unsubscribe link, headers, both parts by substitution into bytes encoded
  once) against the usual way, an ``EmailMessage`` filled and serialised per
  recipient; blocks interleaved, medians (goal: <= 50 µs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pipeline.render as render_module
from bench.common import SECRET, sample_project, write_result
from pipeline.collect import collect
from pipeline.config import load_settings
from pipeline.delivery.send import Outbox
from pipeline.issues import draft, freeze
from pipeline.render import RecipientValues, render_issue
from pipeline.render.mime import mailbox
from pipeline.store import Store, StoredItem

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "bench" / "node"


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


def node_mjml() -> subprocess.Popen | None:
    """node's mjml, warm in one process (bench/node/compile.js), or None when node or mjml is missing."""
    node = shutil.which("node")
    if not node or not (NODE / "node_modules" / "mjml").is_dir():
        return None
    return subprocess.Popen(
        [node, str(NODE / "compile.js")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=NODE
    )


def node_compile(process: subprocess.Popen, path: Path) -> float:
    """ms node's mjml2html took for the MJML in *path* (timed inside node)."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps({"path": str(path)}) + "\n")
    process.stdin.flush()
    answer = json.loads(process.stdout.readline())
    _wait_until_idle(process.pid)
    return answer["ms"]


def _wait_until_idle(pid: int) -> None:
    """Wait until node has stopped using the CPU (its collector runs on after it answers).

    On a 2-core machine its garbage collection would otherwise run during the
    next Python timing, and the comparison would measure the two competing.
    """
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        time.sleep(0.2)
        return
    last = None
    for _ in range(200):
        fields = stat.read_text().rpartition(")")[2].split()
        used = int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
        if used == last:
            return
        last = used
        time.sleep(0.02)


def email_message(rendered, sender: str, date: datetime, to: str, message_id: str, values: RecipientValues) -> bytes:
    """The usual way: one EmailMessage per recipient, filled and serialised."""
    html, text = rendered.fill(values)
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{message_id}>"
    message["List-Unsubscribe"] = f"<{values.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message.as_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--recipients", type=int, default=2000, help="recipients per timed block of the cost row")
    args = parser.parse_args()
    os.environ.setdefault("FLYGBLAD_SECRET", SECRET)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        settings = load_settings(sample_project(work))
        items = twenty_items(settings)
        mailing_list = settings.lists[0]
        date = datetime.now(UTC)

        # The MJML that Jinja2 produced for this issue, kept for node's mjml.
        sources: list[str] = []
        real_compile = render_module.compile_mjml

        def keep_source(source: str, name: str) -> str:
            sources.append(source)
            return real_compile(source, name)

        render_module.compile_mjml = keep_source
        render_issue(settings, mailing_list, items, date=date, number=1)  # warm: templates compiled once per process
        render_module.compile_mjml = real_compile
        mjml_path = work / "issue.mjml"
        mjml_path.write_text(sources[-1], encoding="utf-8")
        node = node_mjml()

        # Interleaved: the whole render, flygblad's MJML step, node's mjml on the same MJML.
        timings, compile_ms, node_ms = [], [], []
        if node is not None:
            node_compile(node, mjml_path)  # warm node's modules and JIT
        for _ in range(args.repeats):
            start = time.perf_counter()
            rendered = render_issue(settings, mailing_list, items, date=date, number=1)
            timings.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            real_compile(sources[-1], "issue.mjml")
            compile_ms.append((time.perf_counter() - start) * 1000)
            if node is not None:
                node_ms.append(node_compile(node, mjml_path))
        if node is not None:
            node.terminate()

        # Cost per recipient, interleaved in blocks: flygblad's whole per-recipient message
        # (signed unsubscribe link, headers, both parts by substitution) vs an EmailMessage.
        with Store.open(settings.storage_url) as store:
            issue = freeze(store, draft(settings, store, mailing_list, store.items()))
        outbox = Outbox(settings, mailing_list, issue, date=date)
        plain = outbox.rendered
        ours_us, theirs_us = [], []
        n = args.recipients
        for _ in range(5):
            start = time.perf_counter()
            for i in range(n):
                outbox.message(i, f"anna{i}@example.org", "Anna Berg")
            ours_us.append((time.perf_counter() - start) / n * 1e6)
            start = time.perf_counter()
            for i in range(n):
                values = RecipientValues(
                    "Hej Anna Berg!",
                    "Anna Berg",
                    f"anna{i}@example.org",
                    outbox.view_url,
                    outbox.unsubscribe_base + outbox.tokens.unsubscribe(i, mailing_list.name),
                )
                email_message(
                    plain, mailing_list.from_, date, mailbox(f"anna{i}@example.org", "Anna Berg"), f"{i}.1@x", values
                )
            theirs_us.append((time.perf_counter() - start) / n * 1e6)
        size = len(outbox.message(1, "anna1@example.org", "Anna Berg").data)
    result = {
        "what": "render an issue of 20 items (Jinja2 + MJML + inlining + text + checks)",
        "items": len(items),
        "repeats": args.repeats,
        "median_ms": round(statistics.median(timings), 2),
        "min_ms": round(min(timings), 2),
        "goal_ms": 20,
        "html_bytes": len(rendered.html.encode("utf-8")),
        "mjml_python_and_inlining_ms": round(statistics.median(compile_ms), 2),
        "node_mjml_ms": round(statistics.median(node_ms), 2) if node_ms else None,
        "node_mjml_version": _node_mjml_version(),
        "node_over_flygblad_mjml": round(statistics.median(node_ms) / statistics.median(compile_ms), 1)
        if node_ms
        else None,
        "message_per_recipient_us": round(statistics.median(ours_us), 1),
        "email_message_per_recipient_us": round(statistics.median(theirs_us), 1),
        "email_message_over_flygblad": round(statistics.median(theirs_us) / statistics.median(ours_us), 1),
        "message_bytes": size,
        "goal_per_recipient_us": 50,
        "blocks": {"flygblad_us": [round(x, 1) for x in ours_us], "email_message_us": [round(x, 1) for x in theirs_us]},
    }
    write_result("render", result)
    node_text = (
        f"node mjml {result['node_mjml_ms']} ms vs mjml-python + css-inline {result['mjml_python_and_inlining_ms']} ms "
        f"({result['node_over_flygblad_mjml']} x)"
        if node_ms
        else "node mjml not installed (python -m bench installs it in bench/node)"
    )
    print(
        f"render 20 items: median {result['median_ms']} ms (min {result['min_ms']} ms, goal <= 20 ms), "
        f"{result['html_bytes'] / 1024:.0f} KB HTML; {node_text}\n"
        f"one recipient's message ({size} bytes): {result['message_per_recipient_us']} µs vs an EmailMessage "
        f"{result['email_message_per_recipient_us']} µs (goal <= 50 µs)"
    )


def _node_mjml_version() -> str | None:
    try:
        return json.loads((NODE / "node_modules" / "mjml" / "package.json").read_text())["version"]
    except OSError:
        return None


if __name__ == "__main__":
    main()

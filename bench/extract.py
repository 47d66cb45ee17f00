"""Extraction on real pages nobody here wrote: flygblad vs bare trafilatura vs readability-lxml, in one run.

Run: ``.venv/bin/python -m bench.extract [--corpus PATH] [--repeats N] [--pages N] [--json-pages]``.

The corpus is ``../shared/corpora/readability-test-pages.tar.xz`` (130 pages saved by mozilla/readability,
each with ``source.html``, ``expected.html`` and ``expected-metadata.json``), unpacked into a temporary
folder. Per page, interleaved, each tool reads the same bytes:

* flygblad: :func:`pipeline.sources.extract.extract_page` (what ``collect`` runs on an item page);
* bare trafilatura: ``trafilatura.extract(html, include_comments=False)``, the corpus README's reference;
  its metadata (title, author, date) from ``trafilatura.bare_extraction(html, with_metadata=True)``, not timed;
* readability-lxml: ``Document(html).summary()`` and ``.short_title()``.

Scores, as the article-extraction benchmarks and the corpus README define them:

* **body F1**: the expected text and each tool's, split on white space into bags of tokens (HTML read as a
  reader sees it: blocks apart, inline elements running on); precision, recall and F1 of the bags; the mean
  over pages, a page that yields nothing counting 0;
* **title**: the expected title and the tool's agree when one, lower-cased, contains the other;
* **author**: on pages whose expected byline names someone, the tool's author agrees when each of its words is
  in the byline;
* **date**: on pages with an expected ``publishedTime``, the same instant when it gives a time, else the same day;
* **CPU per page**: process time, the mean over the corpus, the median of ``--repeats`` runs.

The expected values are what Readability.js extracts (not human labels): a disagreement is a question.
Results go to ``bench/results/extract.json`` (``--json-pages`` adds every page's scores).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import ROOT, package_version, write_result

CORPUS = ROOT.parent / "shared" / "corpora" / "readability-test-pages.tar.xz"
#: Where the saved pages pretend to live (the URL Readability.js's tests use).
PAGE_URL = "http://fakehost/test/page.html"
STOCKHOLM = ZoneInfo("Europe/Stockholm")


def html_tokens(html: str | None) -> list[str]:
    """The words of an HTML fragment as a reader sees them (blocks apart, inline elements running on)."""
    if not html or not html.strip():
        return []
    import lxml.html

    from pipeline.sources.extract import element_text

    try:
        root = lxml.html.fragment_fromstring(html, create_parent="div")
    except Exception:  # noqa: BLE001 - a tool's output that lxml cannot read has no words
        return []
    return element_text(root).split()


def f1(expected: list[str], got: list[str]) -> float:
    """The F1 of two bags of tokens (0 when either is empty)."""
    if not expected or not got:
        return 0.0
    common = sum((Counter(expected) & Counter(got)).values())
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _norm(text: str | None) -> str:
    return " ".join((text or "").lower().split())


def title_agrees(expected: str | None, got: str | None) -> bool:
    """One title, lower-cased and with space collapsed, contains the other."""
    a, b = _norm(expected), _norm(got)
    return bool(a and b) and (a in b or b in a)


def author_agrees(byline: str | None, got: str | None) -> bool:
    """Every word of the author is in the expected byline (case and punctuation aside)."""
    words = [w.strip(".,;:()") for w in _norm(got).split()]
    expected = _norm(byline)
    return bool(words) and all(w in expected for w in words if w)


def date_agrees(expected: str, got: datetime | None) -> bool:
    """The same instant when the expected date has a time, else the same calendar day."""
    if got is None:
        return False
    from pipeline.sources.dates import parse_date

    want = parse_date(expected, STOCKHOLM)
    if want is None:
        return False
    if "T" in expected or ":" in expected:
        return abs((want - got).total_seconds()) < 1
    return want.date() == got.astimezone(want.tzinfo).date()


def _cpu(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    began = time.process_time()
    try:
        value = call(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - a tool that fails on a page scores 0 there
        value = err
    return value, time.process_time() - began


def run(folder: Path, repeats: int, limit: int | None) -> dict[str, Any]:
    """Score the three tools on every page under *folder*."""
    import trafilatura
    from readability import Document

    from pipeline.sources.extract import extract_page

    logging.disable(logging.CRITICAL)  # trafilatura and readability log per page
    pages = sorted(p for p in folder.rglob("source.html"))[:limit]
    rows: dict[str, dict[str, Any]] = {}
    cpu: dict[str, list[float]] = {"flygblad": [], "trafilatura": [], "readability": []}
    for repeat in range(repeats):
        spent = {name: 0.0 for name in cpu}
        for source in pages:
            raw = source.read_bytes()
            text = raw.decode("utf-8", errors="replace")
            flyg, spent_flyg = _cpu(extract_page, raw, PAGE_URL, tz=STOCKHOLM)
            traf, spent_traf = _cpu(trafilatura.extract, text, include_comments=False)
            read, spent_read = _cpu(Document, text)
            summary, spent_summary = _cpu(read.summary) if not isinstance(read, Exception) else ("", 0.0)
            spent["flygblad"] += spent_flyg
            spent["trafilatura"] += spent_traf
            spent["readability"] += spent_read + spent_summary
            if repeat:
                continue
            meta = json.loads((source.parent / "expected-metadata.json").read_text(encoding="utf-8"))
            expected = html_tokens((source.parent / "expected.html").read_text(encoding="utf-8"))
            traf_meta, _ = _cpu(trafilatura.bare_extraction, text, with_metadata=True)
            ok = not isinstance(flyg, Exception)
            row: dict[str, Any] = {
                "words": len(expected),
                "flygblad_f1": f1(expected, html_tokens(flyg.body_html) if ok else []),
                "trafilatura_f1": f1(expected, (traf or "").split() if isinstance(traf, str) else []),
                "readability_f1": f1(expected, html_tokens(summary) if isinstance(summary, str) else []),
                "flygblad_body_from": flyg.body_from if ok else f"error: {flyg}",
            }
            traf_doc = traf_meta if not isinstance(traf_meta, Exception) and traf_meta is not None else None
            short_title = read.short_title() if not isinstance(read, Exception) else None
            row["title"] = {
                "flygblad": title_agrees(meta.get("title"), flyg.title if ok else None),
                "trafilatura": title_agrees(meta.get("title"), traf_doc.title if traf_doc else None),
                "readability": title_agrees(meta.get("title"), short_title),
            }
            if meta.get("byline") and any(ch.isalpha() for ch in meta["byline"]):
                row["author"] = {
                    "flygblad": author_agrees(meta["byline"], flyg.author if ok else None),
                    "trafilatura": author_agrees(meta["byline"], traf_doc.author if traf_doc else None),
                }
            if meta.get("publishedTime"):
                traf_date = None
                if traf_doc and traf_doc.date:
                    try:
                        traf_date = datetime.fromisoformat(traf_doc.date).replace(tzinfo=STOCKHOLM)
                    except ValueError:
                        traf_date = None
                row["date"] = {
                    "expected": meta["publishedTime"],
                    "flygblad": date_agrees(meta["publishedTime"], flyg.published if ok else None),
                    "flygblad_value": flyg.published.isoformat() if ok and flyg.published else None,
                    # trafilatura gives a day without a time or zone: agreement is the same day only
                    "trafilatura": bool(traf_date) and date_agrees(meta["publishedTime"][:10], traf_date),
                }
            rows[source.parent.name] = row
        for name in cpu:
            cpu[name].append(spent[name] / len(pages) * 1000)
    return {"rows": rows, "cpu_ms": {name: round(statistics.median(values), 1) for name, values in cpu.items()}}


def summarise(found: dict[str, Any]) -> dict[str, Any]:
    """The row's numbers from every page's scores."""
    rows = found["rows"]
    count = len(rows)

    def mean(key: str) -> float:
        return round(sum(row[key] for row in rows.values()) / count, 4)

    def share(field: str, tool: str) -> dict[str, Any]:
        having = [row[field][tool] for row in rows.values() if field in row]
        return {"agree": sum(having), "of": len(having), "share": round(sum(having) / max(1, len(having)), 3)}

    lost = sorted(name for name, row in rows.items() if row["trafilatura_f1"] >= 0.8 and row["flygblad_f1"] < 0.5)
    cpu = found["cpu_ms"]
    return {
        "pages": count,
        "body_f1": {tool: mean(f"{tool}_f1") for tool in ("flygblad", "trafilatura", "readability")},
        "title": {tool: share("title", tool) for tool in ("flygblad", "trafilatura", "readability")},
        "author": {tool: share("author", tool) for tool in ("flygblad", "trafilatura")},
        "date": {tool: share("date", tool) for tool in ("flygblad", "trafilatura")},
        "cpu_ms_per_page": cpu,
        "cpu_over_trafilatura": round(cpu["flygblad"] / cpu["trafilatura"], 2),
        "lost_where_trafilatura_reads": lost,
        "body_from": dict(Counter(row["flygblad_body_from"] for row in rows.values()).most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the .tar.xz (or an unpacked folder)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs over the corpus (scores from the first)")
    parser.add_argument("--pages", type=int, default=None, help="only the first N pages")
    parser.add_argument("--json-pages", action="store_true", help="keep every page's scores in the result")
    args = parser.parse_args()
    if not args.corpus.exists():
        raise SystemExit(f"{args.corpus}: not found (the shared corpora are at ../shared/corpora/)")
    with tempfile.TemporaryDirectory() as folder:
        root = args.corpus
        if root.is_file():
            with tarfile.open(root) as archive:
                archive.extractall(folder, filter="data")
            root = Path(folder)
        found = run(root, args.repeats, args.pages)
    result = {
        "what": "article pages of mozilla/readability's test corpus: flygblad vs bare trafilatura vs readability-lxml",
        **summarise(found),
        "versions": {name: package_version(name) for name in ("trafilatura", "readability-lxml", "lxml")},
        "goal": "body F1 >= 0.95 and >= trafilatura's; none lost where trafilatura reads; dates >= 0.95; "
        "CPU <= 1.5 x trafilatura",
    }
    if args.json_pages:
        result["per_page"] = found["rows"]
    path = write_result("extract", result)
    body, cpu = result["body_f1"], result["cpu_ms_per_page"]
    print(
        f"body F1 flygblad {body['flygblad']} trafilatura {body['trafilatura']} readability {body['readability']}; "
        f"dates {result['date']['flygblad']['agree']}/{result['date']['flygblad']['of']}; "
        f"CPU {cpu['flygblad']} vs {cpu['trafilatura']} ms ({result['cpu_over_trafilatura']} x) -> {path}"
    )


if __name__ == "__main__":
    main()

"""Reading real pages and feeds nobody here wrote: flygblad vs bare trafilatura vs readability-lxml, and
flygblad's feed reading vs feedparser's own parse of the same bytes.

Run: ``.venv/bin/python -m bench.extract [--corpus PATH] [--feeds PATH] [--repeats N] [--pages N] [--json-pages]``.

**Pages.**

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

**Feeds.** ``../shared/corpora/real-feeds.tar.xz`` (64 RSS and Atom feeds kept as test fixtures by
NetNewsWire and rss-parser), one ``[[sources]]`` table each, collected by ``flygblad``'s own collect into a
fresh store, then compared entry by entry with feedparser's parse of the same file:

* **entries**: feedparser's distinct entries (by the id rule: guid, else link, else enclosure, else a hash)
  and how many of them the store has for that source;
* **dates**: the instant of each dated entry (published, else updated) against feedparser's; a date with no
  zone is read in the site's time zone (flygblad's rule; feedparser reads it as UTC) and a date before 1990 or
  ahead of tomorrow is no publication date: those differ by rule and are counted apart;
* **titles and links**: equal after white space (a title marked text/html compared as the text it shows); an
  entry without a title is a note titled by its first words, one without an http(s) link is linked by its
  guid or enclosure: by rule, counted apart. Every difference is listed.

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


#: Elements that start a new line: their text never runs on into the text around them.
BLOCKS = frozenset(
    "address article aside blockquote br caption dd details div dl dt figcaption figure footer form h1 h2 h3 h4 h5 "
    "h6 header hr li main nav ol p pre section summary table tbody td tfoot th thead tr ul".split()
)


def html_tokens(html: str | None) -> list[str]:
    """The words of an HTML fragment as a reader sees them (blocks apart, inline elements running on).

    The bench's own reading, not flygblad's: the measuring stick is not the code it measures.
    """
    if not html or not html.strip():
        return []
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.fragment_fromstring(html, create_parent="div")
    except Exception:  # noqa: BLE001 - a tool's output that lxml cannot read has no words
        return []
    parts: list[str] = []
    for event, node in etree.iterwalk(root, events=("start", "end")):
        if not isinstance(node.tag, str):
            continue
        if event == "start":
            parts.append(" " if node.tag in BLOCKS else "")
            if node.text and node.tag not in ("script", "style"):
                parts.append(node.text)
        else:
            parts.append(" " if node.tag in BLOCKS else "")
            if node.tail and node is not root:
                parts.append(node.tail)
    return "".join(parts).split()


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
                "flygblad_body_from": getattr(flyg, "body_from", "") if ok else f"error: {flyg}",
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


FEEDS = ROOT.parent / "shared" / "corpora" / "real-feeds.tar.xz"
FEED_SUFFIXES = (".rss", ".atom", ".xml", ".rdf")


def _unpacked(archive: Path, into: Path) -> Path:
    if archive.is_dir():
        return archive
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def _shown_title(entry: Any) -> str | None:
    """The title feedparser read, as a reader sees it: text as written, HTML as the text it shows."""
    from pipeline.text import clean_text

    title = entry.get("title")
    if not title:
        return None
    if (entry.get("title_detail") or {}).get("type") in ("text/html", "application/xhtml+xml"):
        return clean_text(html_text(title))
    return clean_text(title)


def html_text(fragment: str) -> str:
    """The text an HTML fragment shows (entities decoded, tags gone)."""
    return " ".join(html_tokens(fragment)) if "<" in fragment or "&" in fragment else fragment


def _serve(folder: Path) -> Any:
    """The feeds over HTTP on loopback (as a feed reader fetches them: relative links resolve against the URL)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        extensions_map = {
            **http.server.SimpleHTTPRequestHandler.extensions_map,
            ".rss": "application/rss+xml",
            ".atom": "application/atom+xml",
            ".xml": "application/xml",
            ".rdf": "application/rdf+xml",
        }

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def feeds_row(folder: Path, tz_name: str = "Europe/Stockholm") -> dict[str, Any]:
    """Collect every feed under *folder* with flygblad and compare each entry with feedparser's parse."""
    import calendar

    import feedparser

    from pipeline.collect import collect
    from pipeline.config import load_settings
    from pipeline.sources.dates import parse_date, plausible
    from pipeline.sources.feed import _entry_hash
    from pipeline.store import Store

    logging.disable(logging.CRITICAL)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in FEED_SUFFIXES)
    names = {f"f{n:03d}": path for n, path in enumerate(files)}
    server = _serve(folder)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    urls = {name: f"{origin}/{path.relative_to(folder).as_posix()}" for name, path in names.items()}
    work = folder / "project"
    work.mkdir()
    tables = "".join(
        f'\n[[sources]]\nname = "{name}"\nkind = "feed"\nurl = "{urls[name]}"\ncategory = "article"\nmax_items = 1000\n'
        for name in names
    )
    (work / "config.toml").write_text(
        f'[site]\ntitle = "Bench"\nbase_url = "https://bench.example"\ntimezone = "{tz_name}"\n{tables}'
        "\n[http]\ndelay_seconds = 0\nrespect_robots = false\n",
        encoding="utf-8",
    )
    settings = load_settings(work / "config.toml")
    tz = settings.site.tz
    counts = Counter()
    differences: list[dict[str, Any]] = []
    began = time.process_time()
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        seconds = time.process_time() - began
        for name, path in names.items():
            stored = {s.item.id: s.item for s in store.items(source=name)}
            parsed = feedparser.parse(path.read_bytes(), response_headers={"content-location": urls[name]})
            seen: set[str] = set()
            for entry in parsed.entries:
                enclosure = next((e.get("href") for e in entry.get("links", []) if e.get("rel") == "enclosure"), None)
                key = entry.get("id") or entry.get("link") or enclosure or _entry_hash(entry)
                if key in seen:
                    continue
                seen.add(key)
                counts["entries"] += 1
                item = stored.get(key)
                where = {"feed": path.name, "entry": key[:120]}
                if item is None:
                    link = entry.get("link") or ""
                    if not (entry.get("title") or entry.get("summary") or entry.get("content")) and not link.startswith(
                        ("http://", "https://")
                    ):
                        counts["empty_by_rule"] += 1  # an empty <entry/>: nothing to show, left out with a line
                    else:
                        differences.append({**where, "what": "entry not stored"})
                    continue
                counts["stored"] += 1
                # dates
                struct = entry.get("published_parsed") or entry.get("updated_parsed")
                raw = entry.get("published") or entry.get("updated")
                if struct:
                    counts["dated"] += 1
                    theirs = datetime.fromtimestamp(calendar.timegm(struct), tz=ZoneInfo("UTC"))
                    if item.published is not None and abs((item.published - theirs).total_seconds()) < 1:
                        counts["dates_equal"] += 1
                    elif plausible(theirs) is None and item.published is None:
                        counts["dates_by_rule"] += 1  # before 1990 or ahead of tomorrow: no publication date
                    elif raw and parse_date(raw, ZoneInfo("UTC")) == theirs and parse_date(raw, tz) == item.published:
                        counts["dates_by_rule"] += 1  # no zone written: the site's zone, where feedparser says UTC
                    else:
                        differences.append({**where, "what": "date", "feedparser": theirs.isoformat(),
                                            "flygblad": item.published.isoformat() if item.published else None,
                                            "raw": raw})  # fmt: skip
                # titles
                title = _shown_title(entry)
                if title is None:
                    counts["titles_by_rule"] += 1 if getattr(item, "note", False) else 0
                    if not getattr(item, "note", False):
                        differences.append({**where, "what": "title", "feedparser": None, "flygblad": item.title})
                elif title == item.title:
                    counts["titles_equal"] += 1
                else:
                    differences.append({**where, "what": "title", "feedparser": title, "flygblad": item.title})
                # links
                link = entry.get("link")
                if link and link.startswith(("http://", "https://")):
                    if link == item.url:
                        counts["links_equal"] += 1
                    else:
                        differences.append({**where, "what": "link", "feedparser": link, "flygblad": item.url})
                else:
                    counts["links_by_rule"] += 1  # no http(s) link: the guid or the enclosure links it
    server.shutdown()
    return {
        "feeds": len(names),
        "sources_failed": [line for line in report.problems() if "skipped" not in line],
        "entries": counts["entries"],
        "stored": counts["stored"],
        "empty_by_rule": counts["empty_by_rule"],
        "stored_share": round(counts["stored"] / max(1, counts["entries"] - counts["empty_by_rule"]), 4),
        "dated": counts["dated"],
        "dates_equal": counts["dates_equal"],
        "dates_by_rule": counts["dates_by_rule"],
        "titles_equal": counts["titles_equal"],
        "titles_by_rule": counts["titles_by_rule"],
        "links_equal": counts["links_equal"],
        "links_by_rule": counts["links_by_rule"],
        "differences": differences,
        "collect_cpu_s": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the .tar.xz (or an unpacked folder)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs over the corpus (scores from the first)")
    parser.add_argument("--pages", type=int, default=None, help="only the first N pages")
    parser.add_argument("--feeds", type=Path, default=FEEDS, help="the feeds' .tar.xz (or an unpacked folder)")
    parser.add_argument("--json-pages", action="store_true", help="keep every page's scores in the result")
    args = parser.parse_args()
    for corpus in (args.corpus, args.feeds):
        if not corpus.exists():
            raise SystemExit(f"{corpus}: not found (the shared corpora are at ../shared/corpora/)")
    with tempfile.TemporaryDirectory() as folder:
        found = run(_unpacked(args.corpus, Path(folder) / "pages"), args.repeats, args.pages)
        feeds = feeds_row(_unpacked(args.feeds, Path(folder) / "feeds"))
    result = {
        "what": "article pages of mozilla/readability's test corpus: flygblad vs bare trafilatura vs readability-lxml",
        **summarise(found),
        "versions": {name: package_version(name) for name in ("trafilatura", "readability-lxml", "lxml", "feedparser")},
        "goal": "body F1 >= 0.95 and >= trafilatura's; none lost where trafilatura reads; dates >= 0.95; "
        "CPU <= 1.5 x trafilatura",
        "feeds": {
            **feeds,
            "goal": ">= 99.5 % of entries stored; every date, title and link equal to feedparser's or different "
            "by rule",
        },
    }
    if args.json_pages:
        result["per_page"] = found["rows"]
    path = write_result("extract", result)
    body, cpu = result["body_f1"], result["cpu_ms_per_page"]
    print(
        f"body F1 flygblad {body['flygblad']} trafilatura {body['trafilatura']} readability {body['readability']}; "
        f"dates {result['date']['flygblad']['agree']}/{result['date']['flygblad']['of']}; "
        f"CPU {cpu['flygblad']} vs {cpu['trafilatura']} ms ({result['cpu_over_trafilatura']} x); "
        f"feeds: {feeds['stored']}/{feeds['entries']} entries, {len(feeds['differences'])} differences -> {path}"
    )


if __name__ == "__main__":
    main()

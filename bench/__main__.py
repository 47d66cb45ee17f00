"""``python -m bench [--quick] [--no-install] [--only ROW ...]``: every benchmark, one table, the JSON kept.

Results go to ``bench/results/`` (``bench/results/quick/`` with ``--quick``,
which uses smaller sizes and must not overwrite the measured results).

Each row runs as its own process (one row's imports and caches do not help
another) and writes ``bench/results/<name>.json``, with the machine's CPU
count, Python and package versions; this runner reads them back, prints the
table and writes ``summary.json``. Within a row, flygblad and what it is
compared with run interleaved in the same process run, and medians over the
repeats are reported.

What the rows compare with is installed first when missing (``--no-install``
to skip; a row whose prerequisite is still missing says so instead of a
number): Postfix's ``smtp-sink`` and ``smtp-source`` and the load generator
``wrk`` (``apt-get install postfix wrk``, as root), mailmerge (``pip install
mailmerge``, the ``bench`` extra), node's ``mjml`` (``npm ci`` in
``bench/node``, when node is there).
The workers and PostgreSQL scale rows use the PostgreSQL database in ``FLYGBLAD_TEST_DATABASE_URL``
or, without it, ``postgres@127.0.0.1:5432/test``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import results_dir, write_result

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "bench" / "node"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

Result = dict[str, Any]


@dataclass(frozen=True)
class Row:
    name: str  # the row's label in the table
    module: str  # bench.<module> writes results/<module>.json
    full: tuple[str, ...]
    quick: tuple[str, ...]
    need: str | None
    show: Callable[[Result], str]
    goal: str
    met: Callable[[Result], bool] | None  # None: shown for information, no goal


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _send(r: Result) -> str:
    text = f"{_n(r['flygblad_msgs_per_s'])} msg/s vs bare smtplib {_n(r['bare_smtplib_msgs_per_s'])} = {r['ratio']}"
    if r.get("mailmerge_msgs_per_s"):
        text += f"; mailmerge {_n(r['mailmerge_msgs_per_s'])} msg/s ({r['over_mailmerge']} x)"
    else:
        text += "; mailmerge not installed"
    return text + f"; sink ceiling {_n(r['sink_ceiling_msgs_per_s'])} (smtp-source)"


def _render(r: Result) -> str:
    text = f"{r['median_ms']} ms"
    if r.get("node_mjml_ms"):
        text += (
            f"; MJML step {r['mjml_python_and_inlining_ms']} ms vs node mjml {r['node_mjml_ms']} ms "
            f"({r['node_over_flygblad_mjml']} x)"
        )
    else:
        text += "; node mjml not installed"
    return text


def _scale(r: Result) -> str:
    big, small = r["large"], r["small"]
    return (
        f"{_n(big['subscribers'])}: import {big['import_s']} s, outbox + messages {big['outbox_and_messages_s']} s, "
        f"peak RSS {_peak(big):.0f} MB; {_n(small['subscribers'])}: "
        f"{small['outbox_and_messages_s']} s, {_peak(small):.0f} MB "
        f"(time x {r['time_growth']}, RSS x {r['rss_growth']})"
    )


def _peak(part: Result) -> float:
    return max(part["send_rss_mb"], part["import_rss_mb"])


def _pages(r: Result) -> str:
    body, date, cpu = r["body_f1"], r["date"]["flygblad"], r["cpu_ms_per_page"]
    return (
        f"body F1 {body['flygblad']} vs bare trafilatura {body['trafilatura']}, readability-lxml "
        f"{body['readability']}; dates {date['agree']}/{date['of']}; {len(r['lost_where_trafilatura_reads'])} lost "
        f"where trafilatura reads; CPU {cpu['flygblad']} vs {cpu['trafilatura']} ms ({r['cpu_over_trafilatura']} x)"
    )


def _feeds(r: Result) -> str:
    f = r["feeds"]
    return (
        f"{f['stored']:,} of {f['entries'] - f['empty_by_rule']:,} entries stored ({f['empty_by_rule']} empty, by "
        f"rule); dates {f['dates_equal']:,}/{f['dated']:,} equal to feedparser's; {len(f['differences'])} titles, "
        f"links or dates differing beyond the rules ({f['titles_by_rule']} notes, {f['links_by_rule']} links by rule)"
    )


def _hosts(r: Result) -> str:
    return (
        f"first {r['flygblad_first_s']} s ({r['first_over_sequential']} of one request at a time, "
        f"{r['sequential_s']} s), second {r['flygblad_second_s']} s ({r['second_over_first']}); "
        f"{r['feeds_per_s']['flygblad']} vs reader's {r['feeds_per_s']['reader']} feeds/s; "
        f"default delay {r['polite_s']} s vs {r['per_host_minimum_s']} s; per host at once: {r['peak_per_host']} "
        f"(reader {r['reader_peak_per_host']})"
    )


ROWS = [
    Row(
        "article text of 130 real pages",
        "extract",
        (),
        ("--repeats", "1", "--pages", "40"),
        None,
        _pages,
        "F1 >= 0.95 and >= trafilatura; none lost; dates >= 0.95; CPU <= 1.5 x",
        lambda r: (
            r["body_f1"]["flygblad"] >= max(0.95, r["body_f1"]["trafilatura"])
            and not r["lost_where_trafilatura_reads"]
            and r["date"]["flygblad"]["share"] >= 0.95
            and r["cpu_over_trafilatura"] <= 1.5
        ),
    ),
    Row(
        "reading 64 real feeds",
        "extract",
        (),
        ("--repeats", "1", "--pages", "40"),
        None,
        _feeds,
        ">= 99.5 % stored; 0 differences beyond the rules",
        lambda r: r["feeds"]["stored_share"] >= 0.995 and not r["feeds"]["differences"],
    ),
    Row(
        "send 10,000 to an SMTP sink",
        "send",
        (),
        ("--messages", "2000", "--repeats", "1", "--mailmerge-messages", "200"),
        "postfix",
        _send,
        ">= 0.9 of bare; >= 4 x mailmerge",
        lambda r: r["ratio"] >= 0.9 and (r.get("over_mailmerge") or 0) >= 4,
    ),
    Row(
        "cost per recipient",
        "render",
        (),
        ("--repeats", "10", "--recipients", "500"),
        None,
        lambda r: (
            f"{r['message_per_recipient_us']} µs vs an EmailMessage {r['email_message_per_recipient_us']} µs "
            f"({r['email_message_over_flygblad']} x)"
        ),
        "<= 50 µs",
        lambda r: r["message_per_recipient_us"] <= 50,
    ),
    Row(
        "1,000,000 subscribers",
        "scale",
        (),
        ("--sizes", "10000", "50000", "--repeats", "1"),
        None,
        _scale,
        "<= 120 s; <= 200 MB and <= 1.2 x",
        lambda r: r["large"]["outbox_and_messages_s"] <= 120 and _peak(r["large"]) <= 200 and r["rss_growth"] <= 1.2,
    ),
    Row(
        "collect 400 feeds on 100 slow hosts",
        "hosts",
        (),
        ("--hosts", "20"),
        None,
        _hosts,
        "first <= 0.15 x sequential and >= reader's feeds/s; default delay <= 1.2 x per-host minimum; "
        "second <= 0.5 x first; 1 request per host at once",
        lambda r: (
            r["first_over_sequential"] <= 0.15
            and r["feeds_per_s"]["flygblad"] >= r["feeds_per_s"]["reader"]
            and r["polite_s"] <= 1.2 * r["per_host_minimum_s"]
            and r["second_over_first"] <= 0.5
            and r["peak_per_host"] == 1
        ),
    ),
    Row(
        "send 20,000 to a relay 50 ms away",
        "relay",
        (),
        ("--messages", "2000", "--repeats", "1"),
        None,
        lambda r: (
            f"{r['flygblad_msg_s']} msg/s, {r['of_ideal']} of the ideal {r['ideal_msg_s']:.0f}; "
            f"a bare smtplib pool {r['bare_msg_s']} ({r['over_bare']} x)"
        ),
        ">= 0.9 of the ideal and >= the bare pool",
        lambda r: r["of_ideal"] >= 0.9 and r["over_bare"] >= 1.0,
    ),
    Row(
        "1,000,000 subscribers on PostgreSQL",
        "scale_postgresql",
        ("--repeats", "1"),
        ("--sizes", "10000", "50000", "--repeats", "1"),
        "postgresql",
        _scale,
        "outbox + messages <= 150 s; <= 200 MB",
        lambda r: r["large"]["outbox_and_messages_s"] <= 150 and _peak(r["large"]) <= 200,
    ),
    Row("render an issue of 20 items", "render", (), (), None, _render, "<= 20 ms", lambda r: r["median_ms"] <= 20),
    Row(
        "feeds for 1,000 items",
        "feeds",
        (),
        ("--repeats", "2"),
        None,
        lambda r: f"{r['median_ms']} ms (RSS + Atom + JSON)",
        "<= 500 ms",
        lambda r: r["median_ms"] <= 500,
    ),
    Row(
        "collect 200 pages twice",
        "collect",
        (),
        ("--pages", "60", "--repeats", "1"),
        None,
        lambda r: f"second {r['second_s']} s / first {r['first_s']} s = {r['ratio']}",
        "<= 0.1",
        lambda r: r["ratio"] <= 0.1,
    ),
    Row(
        "unsubscribe under load",
        "unsubscribe",
        (),
        ("--seconds", "2", "--repeats", "1"),
        None,
        lambda r: f"{_n(r['requests_per_s'])} req/s, p99 {r['p99_ms']} ms",
        ">= 500 req/s, p99 <= 50 ms",
        lambda r: r["requests_per_s"] >= 500 and r["p99_ms"] <= 50,
    ),
    Row(
        "soak: 20,000 through a hostile relay, sender killed 3 times",
        "soak",
        (),
        ("--recipients", "2000"),
        None,
        lambda r: (
            f"{r['ledger'].get('sent', 0):,} sent, {r['ledger'].get('bounced', 0)} bounced, "
            f"{r['ledger'].get('uncertain', 0)} uncertain, {r['ledger'].get('failed', 0)} failed; "
            f"{r['duplicates']} duplicates, {r['lost']} lost ({len(r['kills'])} kills, {r['runs']} runs, {r['seconds']} s)"
        ),
        "0 duplicates, 0 lost",
        lambda r: r["duplicates"] == 0 and r["lost"] == 0 and r["sent_but_not_queued"] == 0,
    ),
    Row(
        "20,000 through Postmark's API at 200 ms; then 5 % of answers after the timeout",
        "providers",
        (),
        ("--recipients", "5000"),
        None,
        lambda r: (
            f"{_n(r['msgs_per_s'])} msg/s ({r['of_ideal']} of the ideal {_n(r['ideal_msgs_per_s'])} for one request "
            f"in flight; a bare requests loop posting the same bodies {_n(r['bare_requests_msgs_per_s'])}, "
            f"{r['of_bare']} of it); {_n(r['bytes_per_recipient'])} bytes uploaded per recipient; late answers: "
            f"{r['late_requests']}, {r['faults']['ledger'].get('uncertain', 0)} uncertain, {r['duplicates']} "
            f"duplicates, {r['lost']} lost"
        ),
        "≥ 0.9 of the ideal, ≤ 2 KB a recipient; 0 duplicates, 0 lost",
        lambda r: r["of_ideal"] >= 0.9 and r["bytes_per_recipient"] <= 2048 and r["duplicates"] == 0 and r["lost"] == 0,
    ),
    Row(
        "start-up: flygblad --help",
        "startup",
        (),
        ("--repeats", "3"),
        None,
        lambda r: (
            f"--help {r['median_s']['help']} s, items {r['median_s']['items']} s "
            f"(bare python {r['median_s']['bare_python']} s, python + import click {r['median_s']['import_click']} s)"
        ),
        "--help <= 0.4 s",
        lambda r: r["help_s"] <= 0.4,
    ),
    Row(
        "200 idle connections + 8 clients for 20 s",
        "abuse",
        (),
        ("--seconds", "5"),
        None,
        lambda r: (
            f"p99 {r['attacked']['p99_ms']} ms (quiet {r['quiet']['p99_ms']} ms), "
            f"{_n(r['attacked']['requests_per_s'])} req/s (quiet {_n(r['quiet']['requests_per_s'])}); /healthz missed "
            f"{r['attacked']['health_missed']} of {r['attacked']['health_probes']}; {r['attacked']['errors']} errors; "
            f"RSS +{r['rss_growth_mb']} MB"
        ),
        "0 missed, 0 errors, RSS <= +100 MB",
        lambda r: bool(r["met"]),
    ),
    Row(
        "fuzz: every property x 5,000 generated inputs",
        "fuzz",
        (),
        ("--examples", "300"),
        None,
        lambda r: (
            f"{len(r['properties'])} properties: {_n(r['examples'])} examples ({r['examples_per_property']:,} per "
            f"property) in {r['seconds']} s, "
            f"{r['failures']} failures"
        ),
        "0 failures",
        lambda r: r["failures"] == 0 and r["examples"] > 0,
    ),
    Row(
        "send --workers 4 (PostgreSQL)",
        "workers",
        (),
        ("--messages", "3000", "--repeats", "1"),
        "postgresql",
        lambda r: f"{_n(r['workers_msgs_per_s'])} vs one sender {_n(r['one_sender_msgs_per_s'])} msg/s = {r['ratio']}",
        "(information: 2 cores shared with PostgreSQL and the sink)",
        None,
    ),
]


def _run(command: list[str], **kwargs: Any) -> bool:
    print(f"installing: {' '.join(command)}", flush=True)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)
    if done.returncode != 0:
        print(f"  failed ({done.returncode}): {done.stderr.strip()[-400:]}", flush=True)
    return done.returncode == 0


def _has_postfix() -> bool:
    return all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in ("smtp-sink", "smtp-source"))


def install() -> None:
    """What the rows compare with, where it is missing and can be installed from here."""
    debian = [p for p, present in (("postfix", _has_postfix()), ("wrk", shutil.which("wrk"))) if not present]
    if debian and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "install", "-y", "-qq", *debian], env=env)
    if not Path(sys.executable).with_name("mailmerge").exists():
        _run([sys.executable, "-m", "pip", "install", "-q", "mailmerge>=2.3,<3"])
    if shutil.which("node") and shutil.which("npm") and not (NODE / "node_modules" / "mjml").is_dir():
        _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE)


def _missing(need: str | None) -> str | None:
    if need == "postfix" and not _has_postfix():
        return "needs Postfix's smtp-sink and smtp-source (apt-get install postfix)"
    if need == "postgresql":
        url = os.environ.get("FLYGBLAD_TEST_DATABASE_URL", DEFAULT_DATABASE)
        try:
            from sqlalchemy import create_engine, text

            with create_engine(url).connect() as connection:
                connection.execute(text("select 1"))
        except Exception as err:  # noqa: BLE001 - any failure to connect means: not available here
            return f"needs a PostgreSQL database in FLYGBLAD_TEST_DATABASE_URL ({type(err).__name__})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    parser.add_argument("--no-install", action="store_true", help="do not install what the comparisons need")
    parser.add_argument("--only", nargs="+", metavar="MODULE", help="run only these (send, render, scale, ...)")
    args = parser.parse_args()
    results = results_dir()
    if args.quick:  # a first look must not overwrite the measured results
        results = results / "quick"
        os.environ["FLYGBLAD_BENCH_RESULTS"] = str(results)
    if not args.no_install:
        install()
    ran: dict[str, str | None] = {}  # module -> why it has no result (None: it ran)
    for row in ROWS:
        if row.module in ran or (args.only and row.module not in args.only):
            continue
        reason = _missing(row.need)
        if reason is None:
            command = [sys.executable, "-m", f"bench.{row.module}", *(row.quick if args.quick else row.full)]
            print(f"running {row.module} …", flush=True)
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                reason = f"failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
            else:
                print(f"  {done.stdout.strip().splitlines()[-1]}", flush=True)
        ran[row.module] = reason
    table: list[tuple[str, str, str, str]] = []
    for row in ROWS:
        path = results / f"{row.module}.json"
        reason = ran.get(row.module)  # a row left out by --only shows its last result, if any
        if reason is not None or not path.exists():
            table.append((row.name, reason or "no result", row.goal, ""))
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        met = "" if row.met is None else "yes" if row.met(result) else "NO"
        table.append((row.name, row.show(result), row.goal, met))
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    header = ("what", "flygblad (and what it is compared with)", "goal", "met")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=False)]
    print()
    for line in (header, *table):
        print(f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {line[2]:<{widths[2]}}  {line[3]}")
    write_result(
        "summary",
        {"rows": [{"what": n, "result": v, "goal": g, "met": m} for n, v, g, m in table], "quick": args.quick},
    )


if __name__ == "__main__":
    main()

"""Schedules: cron in a time zone, one firing = at most one issue, late firings skipped, never sent late."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError
from pipeline.schedule import cron_trigger, next_runs, run_firing
from pipeline.store import Store
from pipeline.subscribers import ImportReport, candidate
from tests.conftest import postgres_schema

STHLM = ZoneInfo("Europe/Stockholm")
SECRET = "schedule-secret-0123456789abcdef-0123456789"


def _with_schedule(settings: Settings, cron: str = "30 7 * * 4", extra: str = "") -> Settings:
    text = settings.path.read_text(encoding="utf-8")
    text += f'\n[[schedules]]\nname = "torsdag"\nlist = "nyhetsbrev"\ncron = "{cron}"\nsend_deadline = "6h"\n{extra}'
    settings.path.write_text(text, encoding="utf-8")
    return load_settings(settings.path)


def test_next_runs_keep_local_time_across_daylight_saving(example_settings) -> None:
    settings = _with_schedule(example_settings)
    runs = next_runs(settings, settings.schedules[0], 3, now=datetime(2027, 3, 20, tzinfo=STHLM))
    assert [r.isoformat() for r in runs] == [
        "2027-03-25T07:30:00+01:00",  # Thursday, winter time
        "2027-04-01T07:30:00+02:00",  # Thursday, summer time: still 07:30 in Stockholm
        "2027-04-08T07:30:00+02:00",
    ]


@pytest.mark.parametrize(
    ("cron", "weekdays"),
    [("0 9 * * 0", {6}), ("0 9 * * 7", {6}), ("0 9 * * 1-5", {0, 1, 2, 3, 4}), ("0 9 * * 6,0", {5, 6})],
)
def test_crontab_day_numbers(cron: str, weekdays: set[int]) -> None:
    trigger = cron_trigger(cron, STHLM)
    moment, previous, seen = datetime(2027, 1, 1, tzinfo=STHLM), None, set()
    for _ in range(14):
        moment = previous = trigger.get_next_fire_time(previous, moment)
        seen.add(moment.weekday())
    assert seen == weekdays


@pytest.mark.parametrize(
    ("cron", "extra", "message"),
    [
        ("30 7 * *", "", r"schedules\[1\]\.cron: a cron line has five fields"),
        ("61 7 * * 4", "", r"schedules\[1\]\.cron: not a valid cron line"),
        ("30 7 * * 4", 'send_deadline = "soon"\n', r"schedules\[1\]\.send_deadline: must be a duration"),
    ],
)
def test_bad_schedules(example_settings, cron: str, extra: str, message: str) -> None:
    text = example_settings.path.read_text(encoding="utf-8")
    text += f'\n[[schedules]]\nname = "torsdag"\nlist = "nyhetsbrev"\ncron = "{cron}"\n{extra}'
    example_settings.path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(example_settings.path)


def _issues(settings: Settings) -> list[int]:
    with Store.open(settings.storage_url) as store:
        return [i.number for i in store.issues("nyhetsbrev")]


def test_a_firing_builds_one_issue_and_only_when_there_is_news(example_settings, monkeypatch) -> None:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    settings = _with_schedule(example_settings)
    config = str(settings.path)
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers("nyhetsbrev", [candidate("a@example.org")], report=ImportReport())
    due = datetime(2026, 11, 26, 7, 30, tzinfo=STHLM)
    assert run_firing(config, "torsdag", due=due, now=due + timedelta(seconds=3)) == "done"
    assert _issues(settings) == [1]
    assert run_firing(config, "torsdag", due=due, now=due + timedelta(minutes=1)) == "taken", (
        "a restart at the due time"
    )
    assert _issues(settings) == [1]
    later = due + timedelta(days=7)
    assert run_firing(config, "torsdag", due=later, now=later) == "no-news", "nothing new: no issue"
    assert _issues(settings) == [1]
    with Store.open(settings.storage_url) as store:
        statuses = [(f["due"].astimezone(STHLM), f["status"], f["issue_number"]) for f in store.firings("torsdag")]
    assert statuses == [(later, "no-news", None), (due, "done", 1)]
    assert len(list(settings.outbox_dir.glob("nyhetsbrev.1.*.eml"))) == 1


def test_downtime_past_the_deadline_is_skipped_not_sent_late(example_settings, monkeypatch) -> None:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    settings = _with_schedule(example_settings)
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers("nyhetsbrev", [candidate("a@example.org")], report=ImportReport())
    due = datetime(2026, 11, 26, 7, 30, tzinfo=STHLM)
    assert run_firing(str(settings.path), "torsdag", due=due, now=due + timedelta(hours=7)) == "skipped"
    assert _issues(settings) == []
    with Store.open(settings.storage_url) as store:
        [firing] = store.firings("torsdag")
    assert firing["status"] == "skipped" and "7.0 h late" in firing["detail"]


def test_two_schedulers_on_one_postgres_database_make_one_issue(example_settings) -> None:
    """Two processes reach the same firing at once (as two `serve`s would): one issue."""
    with postgres_schema() as url:
        settings, env = _every_minute_on(example_settings, url)
        job = f"from pipeline.schedule import run_firing; print(run_firing({str(settings.path)!r}, 'torsdag'))"
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", job],
                cwd=settings.base_dir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = sorted(run.communicate(timeout=120)[0].strip() for run in runs)
        with Store.open(settings.storage_url) as store:
            issues = store.issues("nyhetsbrev")
            firings = store.firings("torsdag")
    if "taken" in outputs:
        assert outputs == ["done", "taken"]
    else:  # the minute turned between the two starts: two firings, but the second has no news
        assert outputs == ["done", "no-news"]
    assert len(issues) == 1, "never two issues"
    assert {f["status"] for f in firings} <= {"done", "no-news"}
    assert datetime.now(UTC) - issues[0].created < timedelta(minutes=5)


def _every_minute_on(settings: Settings, database: str) -> tuple[Settings, dict[str, str]]:
    """The bundled default on *database* with a schedule due every minute, one subscriber, and a clean env."""
    text = settings.path.read_text(encoding="utf-8").replace('url = "sqlite:///var/flygblad.db"', f'url = "{database}"')
    settings.path.write_text(text, encoding="utf-8")
    settings = _with_schedule(load_settings(settings.path), cron="* * * * *")
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers("nyhetsbrev", [candidate("a@example.org")], report=ImportReport())
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    env["FLYGBLAD_SECRET"] = SECRET
    return settings, env


def test_schedule_command(example_settings) -> None:
    settings = _with_schedule(example_settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "schedule", "-n", "2"],
        cwd=settings.base_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "torsdag: 30 7 * * 4 (list nyhetsbrev, min_items 1, send_deadline 6h)"
    assert len(lines) == 3 and all(re.match(r"  next \d{4}-\d\d-\d\dT07:30:00\+0[12]:00$", line) for line in lines[1:])


def test_the_scheduler_keeps_its_jobs_in_the_store(example_settings) -> None:
    from sqlalchemy import inspect

    from pipeline.schedule import start_scheduler

    settings = _with_schedule(example_settings)
    scheduler = start_scheduler(settings)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"flygblad:torsdag", "flygblad:send-at"}, "the schedule, and the one-off sends' poll"
        job = jobs["flygblad:torsdag"]
        assert job.coalesce and job.misfire_grace_time == 6 * 3600
        assert job.next_run_time == next_runs(settings, settings.schedules[0], 1)[0]
    finally:
        scheduler.shutdown(wait=False)
    with Store.open(settings.storage_url) as store:
        assert "apscheduler_jobs" in inspect(store.engine).get_table_names(), "jobs persist in the store"
    again = start_scheduler(settings)  # a restart replaces the job instead of adding a second
    try:
        assert len(again.get_jobs()) == 2
    finally:
        again.shutdown(wait=False)


def test_two_serve_schedulers_and_a_send_at_the_same_moment_make_one_issue(example_settings) -> None:
    """The real thing: two `flygblad serve` on one PostgreSQL database with a firing every minute, and a
    `flygblad send` started at that minute: one issue, and each of 2,000 subscribers gets it once."""
    import signal
    import time
    from collections import Counter

    import requests

    from tests.smtp_sink import Sink, free_port
    from tests.test_jobs import project, subscribe

    with postgres_schema() as url, Sink() as sink:
        settings = project(example_settings, port=sink.port, storage=url)
        emails = subscribe(settings, 2000)  # collects the sample site too: the send has news to freeze
        settings, env = _every_minute_on(settings, url)
        ports = [free_port(), free_port()]
        serves = [
            subprocess.Popen(
                [sys.executable, "-m", "pipeline", "serve", "--port", str(port)],
                cwd=settings.base_dir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for port in ports
        ]
        try:
            for port in ports:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                            break
                    except requests.ConnectionError:
                        time.sleep(0.2)
            now = datetime.now()
            time.sleep(max(0.0, 60 - now.second - now.microsecond / 1e6 - 1.0))  # send starts up in ~1 s
            send = subprocess.run(
                [sys.executable, "-m", "pipeline", "send"],
                cwd=settings.base_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert send.returncode == 0, send.stderr
            deadline = time.monotonic() + 120
            finished: list[dict[str, object]] = []
            while time.monotonic() < deadline and not finished:
                with Store.open(settings.storage_url) as store:
                    finished = [f for f in store.firings("torsdag") if f["status"] not in ("running",)]
                    unfinished = store.unfinished_issues("nyhetsbrev")
                if unfinished:
                    finished = []
                time.sleep(0.5)
            time.sleep(3)  # let the other scheduler reach the same firing
            with Store.open(settings.storage_url) as store:
                issues = store.issues("nyhetsbrev")
                firings = store.firings("torsdag")
            counts = sink.handler.count()
        finally:
            for serve in serves:
                serve.send_signal(signal.SIGTERM)
            for serve in serves:
                serve.wait(30)
    assert finished, "the schedule fired within two minutes"
    assert [i.number for i in issues] == [1], "two schedulers and a send, one issue"
    assert counts == Counter({e: 1 for e in [*emails, "a@example.org"]}), "each subscriber exactly once"
    assert {f["status"] for f in firings} <= {"done", "no-news"}, firings

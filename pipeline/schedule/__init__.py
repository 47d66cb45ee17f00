"""Scheduling: ``[[schedules]]`` fired by APScheduler 3 inside ``flygblad serve``.

Interface of this stage:

* :func:`cron_trigger` turns a five-field cron line (crontab's own day
  numbering: 0 and 7 are Sunday) into an APScheduler trigger in a time zone,
  so daylight-saving changes keep "07:30 Stockholm time" at 07:30;
* :func:`next_runs` lists a schedule's coming firings (``flygblad schedule``);
* :func:`run_firing` is the scheduler's job: :func:`pipeline.jobs.fire_schedule`
  at the firing's due time (collect, publish, and unless ``collect_only`` send
  the list as ``flygblad send`` would, freezing a new issue only when at least
  ``min_items`` are new);
* :func:`start_scheduler` starts a background scheduler whose jobs persist in
  the store (SQLAlchemyJobStore), coalesced, with a misfire grace equal to the
  schedule's ``send_deadline``.

Each firing is recorded under the unique key (schedule, due time) *before* it
acts: a second instance on the same database, or a restart, that reaches the
same firing finds it taken and does nothing. A firing that could not run within
``send_deadline`` of its due time is recorded as ``skipped``, never sent late.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

log = logging.getLogger(__name__)

_DOW_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _crontab_day_of_week(field: str) -> str:
    """Crontab numbers days 0-7 from Sunday; APScheduler 3 numbers them from Monday. Names are unambiguous."""

    def name(match: re.Match[str]) -> str:
        number = int(match.group(0))
        if number > 7:
            raise ValueError(f"day of week {number} is not 0-7")
        return _DOW_NAMES[number]

    # Step values (*/2, 1-5/2) keep their numbers after the slash.
    parts = []
    for part in field.split(","):
        base, slash, step = part.partition("/")
        parts.append(re.sub(r"\d+", name, base) + slash + step)
    return ",".join(parts)


#: How often ``serve`` looks for one-off sends whose time has come.
SEND_AT_POLL_SECONDS = 30


def cron_trigger(expression: str, timezone: str | tzinfo) -> CronTrigger:
    """A five-field cron line (minute hour day month day-of-week) in *timezone*; ValueError saying what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron line has five fields (minute hour day month day-of-week), got {expression!r}")
    minute, hour, day, month, day_of_week = fields
    zone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_day_of_week(day_of_week), timezone=zone
        )
    except ValueError as err:
        raise ValueError(f"not a valid cron line {expression!r}: {err}") from None


def schedule_zone(settings: Any, schedule: Any) -> ZoneInfo:
    """A schedule's time zone: its own, else the site's."""
    return ZoneInfo(schedule.timezone or settings.site.timezone)


def next_runs(settings: Any, schedule: Any, count: int = 5, now: datetime | None = None) -> list[datetime]:
    """The schedule's next *count* firings, in its time zone."""
    zone = schedule_zone(settings, schedule)
    trigger = cron_trigger(schedule.cron, zone)
    moment = (now or datetime.now(UTC)).astimezone(zone)
    out: list[datetime] = []
    previous = None
    while len(out) < count:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        out.append(fire)
        previous, moment = fire, fire
    return out


def latest_due(settings: Any, schedule: Any, now: datetime) -> datetime | None:
    """The most recent firing time at or before *now* (within the last 35 days)."""
    from datetime import timedelta

    zone = schedule_zone(settings, schedule)
    trigger = cron_trigger(schedule.cron, zone)
    moment, previous, found = (now - timedelta(days=35)).astimezone(zone), None, None
    while True:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None or fire > now:
            return found
        found, previous, moment = fire, fire, fire


def run_firing(config: str, name: str, due: datetime | None = None, now: datetime | None = None) -> str:
    """The scheduler's job: one firing of schedule *name* at its latest due time (:func:`pipeline.jobs.fire_schedule`).

    Two schedulers reach the same due time, and only one of them acts on it.
    Returns the status recorded (or ``taken``).
    """
    from pipeline.config import load_settings
    from pipeline.jobs import fire_schedule

    settings = load_settings(config)
    schedule = settings.schedule(name)
    now = now or datetime.now(UTC)
    due = due or latest_due(settings, schedule, now) or now
    return fire_schedule(settings, name, due=due, now=now).status


def run_due_sends(config: str) -> int:
    """The scheduler's job for one-off sends (``send --at``): fire those whose time has come; returns how many."""
    from pipeline.config import load_settings
    from pipeline.jobs import fire_due_sends

    return len(fire_due_sends(load_settings(config)))


def _missed(event: Any, config: str) -> None:
    """APScheduler gave up on a firing (past its grace): record it as skipped."""
    from pipeline.config import load_settings
    from pipeline.store import Store

    settings = load_settings(config)
    name = event.job_id.removeprefix("flygblad:")
    with Store.open(settings.storage_url) as store:
        store.take_firing(
            name,
            event.scheduled_run_time.astimezone(UTC),
            status="skipped",
            detail="missed its send_deadline while flygblad was not running",
        )


def start_scheduler(settings: Any) -> Any:
    """A running background scheduler with one persistent job per ``[[schedules]]`` table, and one for one-off sends."""
    from apscheduler.events import EVENT_JOB_MISSED
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    config = str(settings.path)
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=settings.storage_url, tablename="apscheduler_jobs")},
        timezone=settings.site.tz,
    )
    for schedule in settings.schedules:
        scheduler.add_job(
            "pipeline.schedule:run_firing",
            trigger=cron_trigger(schedule.cron, schedule_zone(settings, schedule)),
            args=[config, schedule.name],
            id=f"flygblad:{schedule.name}",
            name=schedule.name,
            replace_existing=True,
            coalesce=True,
            misfire_grace_time=int(schedule.deadline_seconds),
            max_instances=1,
        )
    # One-off sends (send --at) are rows in the store that any process may add: looked for twice a minute.
    scheduler.add_job(
        "pipeline.schedule:run_due_sends",
        trigger=IntervalTrigger(seconds=SEND_AT_POLL_SECONDS),
        args=[config],
        id="flygblad:send-at",
        name="one-off sends",
        next_run_time=datetime.now(UTC),  # at start too: a send that fell due while serve was down goes now
        replace_existing=True,
        coalesce=True,
        max_instances=1,
    )
    scheduler.add_listener(lambda event: _missed(event, config), EVENT_JOB_MISSED)
    scheduler.start()
    return scheduler


__all__ = ["cron_trigger", "latest_due", "next_runs", "run_due_sends", "run_firing", "start_scheduler"]

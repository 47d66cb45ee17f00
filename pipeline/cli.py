"""The ``flygblad`` command: parse, call the library, report.

Thin on purpose: each command calls the same functions the scheduler and the
web side call. Exit codes: 0 all went well, 1 something failed (one line per
failure names what), 2 a usage or config error.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console

from pipeline import ENV_CONFIG, __version__
from pipeline.errors import ConfigError, FlygbladError
from pipeline.types import STATUSES


class _LazyModule:
    """A module imported on first attribute access (``jobs.send_list``), not when the CLI starts."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)


# Everything else is imported where it is used: `flygblad --help` and `flygblad items` must not pay for
# the extractor, DKIM, the renderer or the web framework (tests/test_install.py pins this).
if TYPE_CHECKING:
    from rich.progress import Progress

    from pipeline import jobs
    from pipeline.collect import CollectReport
    from pipeline.config import ListSettings, Settings
    from pipeline.delivery.send import Progress as SendProgress
    from pipeline.issues import Draft
    from pipeline.jobs import PublishReport
    from pipeline.store import Store
    from pipeline.subscribers import ImportReport
    from pipeline.types import Issue
else:
    jobs = _LazyModule("pipeline.jobs")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Libraries whose log lines are theirs to keep unless -v is given.
QUIET_LIBRARIES = ("trafilatura", "htmldate", "justext", "courlan", "charset_normalizer")

err_console = Console(stderr=True, highlight=False)


class Context:
    """What every command gets: the config path, loaded on first use."""

    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from pipeline.config import load_settings

            self._settings = load_settings(self.config)
        return self._settings

    def store(self) -> Store:
        from pipeline.store import Store

        return Store.open(self.settings.storage_url)


def _fail(message: str, code: int) -> NoReturn:
    err_console.print(f"flygblad: {message}", markup=False, soft_wrap=True)
    sys.exit(code)


def _sqlalchemy_error() -> type[Exception]:
    """SQLAlchemy's base error, imported only when an exception is being matched."""
    from sqlalchemy.exc import SQLAlchemyError

    return SQLAlchemyError


@contextmanager
def _errors() -> Iterator[None]:
    """Turn flygblad's own errors into one line and an exit code."""
    try:
        yield
    except ConfigError as err:
        _fail(f"config error: {err}", EXIT_USAGE)
    except FlygbladError as err:
        _fail(str(err), EXIT_FAILED)
    except _sqlalchemy_error() as err:  # a read that found the database locked or gone: one line, no traceback
        from pipeline.store.base import database_trouble

        _fail(database_trouble(err).replace("could not be written", "could not be read"), EXIT_FAILED)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config",
    metavar="PATH",
    envvar=ENV_CONFIG,
    default=None,
    help="The config file [default: ./config.toml; env FLYGBLAD_CONFIG].",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="flygblad")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: int) -> None:
    """flygblad: collect leaders and articles, publish them as feeds and newsletters."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # The extractor's libraries log their own doubts ("discarding data: …") at WARNING; flygblad reports what
    # failed in its own words, so theirs reach the terminal only when asked for with -v.
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(level if verbose else logging.CRITICAL + 1)
    ctx.obj = Context(config)


# ---------------------------------------------------------------- init


@cli.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--site", metavar="URL", help="Your site's home page: its feeds and sections become sources.")
@click.option("--name", metavar="NAME", help="The organisation's name [default: from the site].")
@click.option("--language", type=click.Choice(["sv", "en"]), default="sv", show_default=True)
def init_command(folder: Path, site: str | None, name: str | None, language: str) -> None:
    """Start a project in FOLDER: config.toml, templates/, .gitignore and a secret; never overwrites a file."""
    from pipeline.project import init_project

    report = init_project(folder, site=site, name=name, language=language)
    if report.note:
        err_console.print(f"flygblad: {report.note}", markup=False, soft_wrap=True)
    for path in report.written:
        click.echo(f"wrote {path}{'/' if path.is_dir() else ''}")
    for path in report.kept:
        click.echo(f"kept  {path} (it exists: not overwritten)")
    where = "the bundled sample site (offline)" if report.offline else site
    click.echo(f"init: {len(report.sources)} sources from {where}:")
    for source in report.sources:
        click.echo(f"  {source.name:<12} {source.kind:<4} {source.category:<7} {source.url}")
    click.echo(f"next: cd {folder} && flygblad run && flygblad preview && flygblad check")


@cli.command("check")
@click.option("--send-test", "send_test", metavar="ADDRESS", help="Also send the next issue to ADDRESS, marked [TEST].")
@click.option("--json", "as_json", is_flag=True, help="The checks as JSON.")
@click.pass_obj
def check_command(ctx: Context, send_test: str | None, as_json: bool) -> None:
    """Is this project ready to send? One line per check: ✓ ready, ✗ not (and what to do), – does not apply."""
    from pipeline.readiness import run_checks

    with _errors():
        checks = run_checks(ctx.settings, send_test=send_test, nameserver=os.environ.get("FLYGBLAD_NAMESERVER"))
    ready = not any(c.state == "fail" for c in checks)
    if as_json:
        click.echo(json.dumps({"ready": ready, "checks": [c.as_dict() for c in checks]}, ensure_ascii=False, indent=2))
    else:
        for check in checks:
            click.echo(check.line())
        failed = sum(c.state == "fail" for c in checks)
        click.echo("check: ready to send" if ready else f"check: not ready ({failed} to fix)")
    sys.exit(EXIT_OK if ready else EXIT_FAILED)


# ---------------------------------------------------------------- collect


def _run_collect(
    ctx: Context, sources: tuple[str, ...], *, publish: bool = False, refresh: bool = False
) -> PublishReport:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    settings = ctx.settings
    chosen = [settings.source(name).name for name in sources] if sources else [s.name for s in settings.sources]
    with ctx.store() as store:
        if not sys.stderr.isatty():
            return jobs.collect_and_publish(settings, store, only=chosen, publish=publish, refresh=refresh)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            tasks = {name: bar.add_task(f"collecting {name}", total=None) for name in chosen}

            def advance(source: str, _url: str, _outcome: str, expected: int | None) -> None:
                bar.update(tasks[source], advance=1, total=expected)

            return jobs.collect_and_publish(
                settings, store, only=chosen, progress=advance, publish=publish, refresh=refresh
            )


def _print_collect(report: CollectReport) -> None:
    for line in report.problems():
        err_console.print(f"flygblad: {line}", markup=False, soft_wrap=True)
    for line in report.images_missing:  # not a failure: the card goes without its picture
        err_console.print(f"flygblad: warning: {line} (shown without it)", markup=False, soft_wrap=True)
    click.echo(report.summary())


@cli.command("collect")
@click.option("--source", "-s", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option(
    "--refresh",
    is_flag=True,
    help="Ask every article page again now (an unchanged listing's pages are otherwise asked once a day).",
)
@click.pass_obj
def collect_command(ctx: Context, sources: tuple[str, ...], refresh: bool) -> None:
    """Collect new and changed leaders and articles from every source."""
    with _errors():
        report = _run_collect(ctx, sources, refresh=refresh).collected
    _print_collect(report)
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


# ---------------------------------------------------------------- feeds


@cli.command("feeds")
@click.pass_obj
def feeds_command(ctx: Context) -> None:
    """Write the RSS, Atom and JSON feeds from the store."""
    from pipeline.collect import CollectReport
    from pipeline.jobs import PublishReport

    with _errors():
        with ctx.store() as store:
            report = PublishReport(CollectReport())
            report.feed_files, report.rewritten = jobs.write_feeds_and_archive(ctx.settings, store)
    click.echo(report.feeds_summary(ctx.settings.feeds_dir))


# ---------------------------------------------------------------- run


@cli.command("run")
@click.pass_obj
def run_command(ctx: Context) -> None:
    """The main job: collect, write the feeds, then send each list's new issue."""
    with _errors():
        published = _run_collect(ctx, (), publish=True)
        report = published.collected
        _print_collect(report)
        click.echo(published.feeds_summary(ctx.settings.feeds_dir))
        sent: list[jobs.ListSendReport] = []
        for mailing_list in ctx.settings.lists:
            sent.append(_send_list(ctx, mailing_list))
            if sent[-1].interrupted:
                break
        if any(s.sends for s in sent):
            with ctx.store() as store:
                jobs.write_feeds_and_archive(ctx.settings, store)  # the issue just sent joins the archive
    interrupted = next((s.interrupted for s in sent if s.interrupted), None)
    if interrupted:
        sys.exit(128 + interrupted)
    sys.exit(EXIT_OK if report.ok and all(s.ok for s in sent) else EXIT_FAILED)


# ---------------------------------------------------------------- items


@cli.command("items")
@click.option("--source", "-s", metavar="NAME", help="Only items of this source.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def items_command(ctx: Context, source: str | None, limit: int | None, as_json: bool) -> None:
    """List collected items, newest first."""
    with _errors():
        if source is not None:
            ctx.settings.source(source)
        with ctx.store() as store:
            stored = store.items(source=source, limit=limit)
            listed_by = store.item_sources([s.item.id for s in stored]) if as_json else {}
    tz = ctx.settings.site.tz
    if as_json:
        rows = [
            {
                "id": s.item.id,
                "source": s.item.source,
                "sources": listed_by.get(s.item.id, [s.item.source]),
                "category": s.item.category,
                "note": s.item.note,
                "title": s.item.title,
                "author": s.item.author,
                "role": s.item.author_role,
                "published": s.item.published.astimezone(tz).isoformat() if s.item.published else None,
                "updated": s.updated.astimezone(tz).isoformat(),
                "first_seen": s.first_seen.astimezone(tz).isoformat(),
                "url": s.item.url,
                "summary": s.item.summary,
                "image": s.item.image,
            }
            for s in stored
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("published", "source", "title", "author"):
        table.add_column(column)
    for s in stored:
        published = s.item.published.astimezone(tz).date().isoformat() if s.item.published else "?"
        table.add_row(published, s.item.source, s.item.title, s.item.author or "")
    Console(highlight=False).print(table)


def main() -> None:
    """Entry point of the ``flygblad`` console script."""
    cli(prog_name="flygblad")


# ---------------------------------------------------------------- issues


def _preview_files(settings: Settings, draft: Draft, out: Path) -> list[Path]:
    preview = jobs.preview(settings, draft)
    for warning in preview.warnings:
        err_console.print(f"flygblad: warning: {warning}", markup=False, soft_wrap=True)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "issue.html", out / "issue.txt", out / "issue.eml"]
    paths[0].write_text(preview.html, encoding="utf-8")
    paths[1].write_text(preview.text, encoding="utf-8")
    paths[2].write_bytes(preview.eml)
    return paths


@cli.command("preview")
@click.option("--list", "-l", "list_name", metavar="NAME", help="The list [default: the first in the config].")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("preview"),
    show_default=True,
    help="Folder for issue.html, issue.txt and issue.eml.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open issue.html in a web browser.")
@click.pass_obj
def preview_command(ctx: Context, list_name: str | None, out: Path, open_browser: bool) -> None:
    """Render the list's next issue to files, exactly as it would be sent, without freezing it."""
    with _errors():
        mailing_list = _chosen_list(ctx, list_name)
        with ctx.store() as store:
            draft = jobs.next_draft(ctx.settings, store, mailing_list)
        if draft is None:
            click.echo(f"preview: no new items for list {mailing_list.name!r}: there is no next issue yet")
            return
        paths = _preview_files(ctx.settings, draft, out)
    for warning in draft.rendered.warnings:
        err_console.print(f"flygblad: warning: {warning}", markup=False, soft_wrap=True)
    for path in paths:
        click.echo(str(path))
    click.echo(
        f"preview: issue {draft.number} of {mailing_list.name!r}, {len(draft.items)} items"
        f"{f' ({draft.left_out} more left out by max_items)' if draft.left_out else ''}: {draft.rendered.subject}"
    )
    if open_browser:
        click.launch(str(paths[0]))


@cli.command("build")
@click.option("--list", "-l", "list_name", metavar="NAME", help="The list [default: the first in the config].")
@click.pass_obj
def build_command(ctx: Context, list_name: str | None) -> None:
    """Freeze the list's next issue: what is sent later is exactly these bytes."""
    with _errors():
        mailing_list = _chosen_list(ctx, list_name)
        with ctx.store() as store:
            frozen = jobs.freeze_next(ctx.settings, store, mailing_list)
    issue = frozen.issue
    if issue is None:
        click.echo(f"build: {frozen.reason}: no issue built")
        return
    if not frozen.created:
        click.echo(f"build: {frozen.reason}: no new issue until it is (flygblad send sends it)")
        return
    for warning in frozen.warnings:
        err_console.print(f"flygblad: warning: {warning}", markup=False, soft_wrap=True)
    click.echo(f"build: issue {issue.number} of {issue.list!r} frozen, {len(issue.item_ids)} items: {issue.subject}")


@cli.group("issues", invoke_without_command=True)
@click.option("--list", "-l", "list_name", metavar="NAME", help="Only issues of this list.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_context
def issues_command(click_ctx: click.Context, list_name: str | None, as_json: bool) -> None:
    """List frozen issues, newest first; an unfinished one says why. `issues show N`: one issue's delivery log."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: Context = click_ctx.obj
    with _errors():
        if list_name is not None:
            ctx.settings.mailing_list(list_name)
        with ctx.store() as store:
            found = store.issues(list_name)
            sends = {i.id: store.outbox_counts(i.id) for i in found}
            due = {i.id: store.next_due(i.id) for i in found if i.unfinished}
    tz = ctx.settings.site.tz

    def why(i: Issue) -> str | None:
        """Why an issue is not yet sent to everyone, in words."""
        if not i.unfinished:
            return None
        if i.paused:
            return i.paused
        counts = sends[i.id]
        if i.status == "frozen":
            return "frozen: flygblad send sends it"
        waiting = counts.get("pending", 0) + counts.get("sending", 0)
        if waiting:
            return f"{waiting} not yet sent: flygblad send resumes it"
        when = due[i.id]
        at = f", the first due {when.astimezone(tz):%Y-%m-%d %H:%M}" if when else ""
        return f"{counts.get('deferred', 0)} deferred{at}: a later flygblad send retries them"

    if as_json:
        rows = [
            {
                "list": i.list,
                "number": i.number,
                "subject": i.subject,
                "preheader": i.preheader,
                "created": i.created.astimezone(tz).isoformat(),
                "status": i.status,
                "items": list(i.item_ids),
                "html_bytes": len(i.html.encode("utf-8")),
                "recipients": sends[i.id],
                "unfinished": why(i),
            }
            for i in found
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("list", "number", "created", "status", "items", "subject"):
        table.add_column(column)
    for i in found:
        created = i.created.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        status = i.status + (f" ({why(i)})" if i.unfinished else "")
        table.add_row(i.list, str(i.number), created, status, str(len(i.item_ids)), i.subject)
    Console(highlight=False).print(table)


@issues_command.command("show")
@click.argument("number", type=click.IntRange(min=1))
@click.option("--list", "-l", "list_name", metavar="NAME", help="The list [default: the first in the config].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.pass_obj
def issues_show(ctx: Context, number: int, list_name: str | None, as_json: bool) -> None:
    """One issue and its delivery log: recipients by status, and who bounced, failed or is uncertain, and why."""
    with _errors():
        mailing_list = _chosen_list(ctx, list_name)
        with ctx.store() as store:
            log = jobs.delivery_log(store, mailing_list.name, number)
    issue = log.issue
    tz = ctx.settings.site.tz
    if as_json:
        record = {
            "list": issue.list,
            "number": issue.number,
            "subject": issue.subject,
            "status": issue.status,
            "created": issue.created.astimezone(tz).isoformat(),
            "items": list(issue.item_ids),
            "recipients": log.counts,
            "problems": [{"email": e, "status": st, "reason": r} for e, st, r in log.problems],
            "left_since": log.left,
            "clicks": [{"url": u, "clicks": n} for u, n in log.clicks],
        }
        click.echo(json.dumps(record, ensure_ascii=False, indent=2))
        return
    click.echo(f"issue {issue.number} of {issue.list!r}: {issue.subject}")
    click.echo(f"  {issue.status}, frozen {issue.created.astimezone(tz):%Y-%m-%d %H:%M}, {len(issue.item_ids)} items")
    counts = ", ".join(f"{n} {status}" for status, n in sorted(log.counts.items(), key=lambda kv: -kv[1]))
    click.echo(f"  {log.total} recipients" + (f": {counts}" if counts else ""))
    if log.left:
        click.echo("  since: " + ", ".join(f"{n} {status}" for status, n in sorted(log.left.items())))
    for email, status, reason in log.problems:
        click.echo(f"  {status:<9} {email}  {reason}".rstrip())
    for url, clicks in log.clicks:
        click.echo(f"  {clicks:>6} clicks  {url}")


def _chosen_list(ctx: Context, name: str | None) -> ListSettings:
    settings = ctx.settings
    if name is not None:
        return settings.mailing_list(name)
    if not settings.lists:
        raise ConfigError("no [[lists]] configured", path=str(settings.path), key="lists")
    return settings.lists[0]


# ---------------------------------------------------------------- the communicator's draft

_LIST_OPTION = click.option(
    "--list", "-l", "list_name", metavar="NAME", help="The list [default: the first in the config]."
)


@cli.group("draft")
def draft_group() -> None:
    """The list's next issue before it is frozen: note, subject, items, approval."""


def _print_draft(ctx: Context, mailing_list: ListSettings, view: jobs.DraftView) -> None:
    choices = view.choices
    made = view.draft
    state = (
        f"approved by {choices.approved_by} {choices.approved_at.astimezone(ctx.settings.site.tz):%Y-%m-%d %H:%M}"
        if choices.approved and choices.approved_at
        else "not approved" + (" (approval = required)" if mailing_list.approval == "required" else "")
    )
    click.echo(f"draft of {mailing_list.name!r}: issue {made.number if made else '-'}, {state}")
    click.echo(f"  subject:   {made.rendered.subject if made else '-'}{' (set)' if choices.subject else ''}")
    click.echo(f"  preheader: {made.rendered.preheader if made else '-'}{' (set)' if choices.preheader else ''}")
    if choices.note:
        click.echo("  note:      " + " ".join(choices.note.split())[:200])
    for n, stored in enumerate(view.items, start=1):
        item = stored.item
        shortened = " (summary shortened)" if (c := choices.items.get(item.id)) and c.summary else ""
        click.echo(f"  {n:>3}. {item.category:<7} {item.title}{shortened}  [{item.id}]")
    for stored in view.excluded:
        click.echo(f"    -  left out: {stored.item.title}  [{stored.item.id}]")
    if view.left_out:
        click.echo(f"  ({len(view.left_out)} more new items beyond max_items = {mailing_list.max_items})")


@draft_group.command("show")
@_LIST_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def draft_show(ctx: Context, list_name: str | None, as_json: bool) -> None:
    """Show the next issue as it stands: subject, preheader, note, items in order, what is left out."""
    with _errors():
        mailing_list = _chosen_list(ctx, list_name)
        with ctx.store() as store:
            view = jobs.draft_view(ctx.settings, store, mailing_list)
    if as_json:
        c = view.choices
        record = {
            "list": mailing_list.name,
            "number": view.draft.number if view.draft else None,
            "subject": view.draft.rendered.subject if view.draft else None,
            "preheader": view.draft.rendered.preheader if view.draft else None,
            "note": c.note,
            "approved": c.approved,
            "approved_by": c.approved_by,
            "items": [{"id": s.item.id, "title": s.item.title, "category": s.item.category} for s in view.items],
            "excluded": [s.item.id for s in view.excluded],
            "left_out": len(view.left_out),
        }
        click.echo(json.dumps(record, ensure_ascii=False, indent=2))
        return
    _print_draft(ctx, mailing_list, view)


def _text_or_file(text: str | None, file: Path | None, clear: bool, what: str) -> str | None:
    if clear:
        return None
    if file is not None:
        return file.read_text(encoding="utf-8")
    if text is None:
        _fail(f"give the {what}, --file FILE or --clear", EXIT_USAGE)
    return text


for _field, _help in (
    ("note", "The editor's note, in Markdown, shown after the greeting."),
    ("subject", "The issue's subject (instead of the list's subject template)."),
    ("preheader", "The line inboxes show after the subject (instead of the count and first titles)."),
):

    def _make(field: str, help_text: str) -> None:
        @draft_group.command(field, help=help_text)
        @_LIST_OPTION
        @click.argument("text", required=False)
        @click.option("--file", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Read it from FILE.")
        @click.option("--clear", is_flag=True, help="Back to the default.")
        @click.pass_obj
        def command(ctx: Context, list_name: str | None, text: str | None, file: Path | None, clear: bool) -> None:
            with _errors():
                mailing_list = _chosen_list(ctx, list_name)
                value = _text_or_file(text, file, clear, field)
                with ctx.store() as store:
                    jobs.edit_draft(store, mailing_list, **{field: value})
            click.echo(f"draft {field}: {'cleared' if value is None else 'set'} for {mailing_list.name!r}")

    _make(_field, _help)


def _choose(ctx: Context, list_name: str | None, item: str, done: str, **choice: object) -> None:
    """One choice about one item of the draft, and a line saying what was done."""
    with _errors():
        mailing_list = _chosen_list(ctx, list_name)
        with ctx.store() as store:
            stored = jobs.choose_item(ctx.settings, store, mailing_list, item, **choice)
    click.echo(f"draft: {done} {stored.item.title!r}")


@draft_group.command("exclude")
@_LIST_OPTION
@click.argument("item")
@click.pass_obj
def draft_exclude(ctx: Context, list_name: str | None, item: str) -> None:
    """Leave ITEM (its number in `draft show`, its id or URL) out of the next issue; it is passed over."""
    _choose(ctx, list_name, item, "left out", excluded=True)


@draft_group.command("include")
@_LIST_OPTION
@click.argument("item")
@click.pass_obj
def draft_include(ctx: Context, list_name: str | None, item: str) -> None:
    """Put ITEM (an id or URL, or a number) in the next issue: one left out, or an older one."""
    _choose(ctx, list_name, item, "put in", included=True)


@draft_group.command("move")
@_LIST_OPTION
@click.argument("item")
@click.option("--to", "to", type=click.IntRange(min=1), required=True, help="Its new position (1 = first).")
@click.pass_obj
def draft_move(ctx: Context, list_name: str | None, item: str, to: int) -> None:
    """Move ITEM to position N among the issue's items (leaders still come before articles)."""
    with _errors():
        mailing_list = _chosen_list(ctx, list_name)
        with ctx.store() as store:
            stored = jobs.move_item(ctx.settings, store, mailing_list, item, to)
    click.echo(f"draft: {stored.item.title!r} moved to {to}")


@draft_group.command("summary")
@_LIST_OPTION
@click.argument("item")
@click.argument("text")
@click.pass_obj
def draft_summary(ctx: Context, list_name: str | None, item: str, text: str) -> None:
    """Give ITEM a shorter summary in this issue."""
    _choose(ctx, list_name, item, "shortened the summary of", summary=" ".join(text.split()))


@draft_group.command("approve")
@_LIST_OPTION
@click.option("--by", default=None, help="Who approves [default: the user running flygblad].")
@click.pass_obj
def draft_approve(ctx: Context, list_name: str | None, by: str | None) -> None:
    """Approve the next issue as it stands: the next send or firing freezes exactly this."""
    import getpass

    with _errors():
        mailing_list = _chosen_list(ctx, list_name)
        with ctx.store() as store:
            view = jobs.approve_draft(ctx.settings, store, mailing_list, by or getpass.getuser())
    _print_draft(ctx, mailing_list, view)


# ---------------------------------------------------------------- subscribers


@cli.group("subscribers")
def subscribers_group() -> None:
    """Add, import, list and remove a list's subscribers."""


def _print_import(report: ImportReport) -> None:
    for line in report.problems:
        err_console.print(f"flygblad: {line}", markup=False, soft_wrap=True)


def _print_confirmations(added: jobs.SubscribersAdded) -> None:
    """The confirmations an add or import queued and sent (double opt-in lists)."""
    if added.mail is not None:
        click.echo(f"{added.confirmations} confirmations queued; {added.mail.summary()}")
        if added.mail.paused:
            err_console.print(f"flygblad: confirmations paused: {added.mail.paused}", markup=False, soft_wrap=True)


@subscribers_group.command("add")
@click.option("--list", "-l", "list_name", required=True, metavar="NAME", help="The list.")
@click.option("--name", "-n", default=None, help="The subscriber's name.")
@click.option("--language", default=None, help="The subscriber's language (sv, en …).")
@click.option(
    "--status",
    type=click.Choice(["active", "unconfirmed"]),
    default="active",
    show_default=True,
    help="active: you vouch for their consent; unconfirmed: they must confirm first.",
)
@click.argument("email")
@click.pass_obj
def subscribers_add(
    ctx: Context, list_name: str, name: str | None, language: str | None, status: str, email: str
) -> None:
    """Add one address to a list (or update its name)."""
    from pipeline.subscribers import SubscriberError

    with _errors():
        mailing_list = ctx.settings.mailing_list(list_name)
        with ctx.store() as store:
            try:
                added = jobs.add_subscriber(
                    ctx.settings, store, mailing_list, email, name=name, language=language, status=status
                )
            except SubscriberError as err:
                _fail(str(err), EXIT_FAILED)
        report = added.report
        _print_confirmations(added)
    click.echo(f"subscribers add: {report.summary()}")


@subscribers_group.command("import")
@click.option("--list", "-l", "list_name", required=True, metavar="NAME", help="The list.")
@click.option(
    "--status",
    type=click.Choice(["active", "unconfirmed"]),
    default="active",
    show_default=True,
    help="The status of new subscribers.",
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def subscribers_import(ctx: Context, list_name: str, status: str, file: Path) -> None:
    """Import a CSV file with the header email,name[,language]; bad rows are reported and skipped."""
    with _errors():
        mailing_list = ctx.settings.mailing_list(list_name)
        with ctx.store() as store:
            added = jobs.import_subscribers(ctx.settings, store, mailing_list, file, status=status)
        report = added.report
        _print_confirmations(added)
    _print_import(report)
    click.echo(f"subscribers import: {report.summary()}")
    sys.exit(EXIT_FAILED if report.problems else EXIT_OK)


@subscribers_group.command("list")
@click.option("--list", "-l", "list_name", required=True, metavar="NAME", help="The list.")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only subscribers with this status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array, streamed) instead of lines.")
@click.pass_obj
def subscribers_list(ctx: Context, list_name: str, status: str | None, as_json: bool) -> None:
    """List a list's subscribers, oldest first."""
    with _errors():
        ctx.settings.mailing_list(list_name)
        tz = ctx.settings.site.tz
        with ctx.store() as store:
            rows = store.iter_subscribers(list_name, status=status)
            if as_json:
                click.echo("[", nl=False)
                for n, s in enumerate(rows):
                    record = {
                        "email": s.email,
                        "name": s.name,
                        "language": s.language,
                        "status": s.status,
                        "created": s.created.astimezone(tz).isoformat(),
                        "changed": s.changed.astimezone(tz).isoformat(),
                    }
                    click.echo(("," if n else "") + "\n  " + json.dumps(record, ensure_ascii=False), nl=False)
                click.echo("\n]")
                return
            for s in rows:
                click.echo(f"{s.email}\t{s.name or ''}\t{s.status}")


@subscribers_group.command("export")
@click.option("--list", "-l", "list_name", required=True, metavar="NAME", help="The list.")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only subscribers with this status.")
@click.pass_obj
def subscribers_export(ctx: Context, list_name: str, status: str | None) -> None:
    """Write a list's subscribers as CSV to standard output (email,name,language,status,created), streamed.

    The file imports again as it is (`subscribers import`); suppressed addresses stay suppressed.
    """
    with _errors():
        mailing_list = ctx.settings.mailing_list(list_name)
        with ctx.store() as store:
            jobs.export_subscribers(ctx.settings, store, mailing_list, sys.stdout, status=status)


@subscribers_group.command("remove")
@click.option("--list", "-l", "list_name", required=True, metavar="NAME", help="The list.")
@click.argument("email")
@click.pass_obj
def subscribers_remove(ctx: Context, list_name: str, email: str) -> None:
    """Delete an address from a list (its data is gone; a later import adds it again)."""
    with _errors():
        ctx.settings.mailing_list(list_name)
        with ctx.store() as store:
            removed = store.remove_subscriber(list_name, email.strip())
    if not removed:
        _fail(f"{email} is not on list {list_name!r}", EXIT_FAILED)
    click.echo(f"subscribers remove: {email} removed from {list_name!r}")


# ---------------------------------------------------------------- send


def _progress_for(issue: Issue) -> tuple[Progress, SendProgress]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task(f"sending issue {issue.number} of {issue.list}", total=None, rate="")
    started = time.monotonic()

    def advance(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-6)
        bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} msg/s")

    return bar, advance


def _send_list(
    ctx: Context,
    mailing_list: ListSettings,
    *,
    number: int | None = None,
    resend_uncertain: bool = False,
    wait: bool = False,
    workers: int = 1,
    since: datetime | None = None,
) -> jobs.ListSendReport:
    """Send one list as the send policy says, and print what happened."""
    bars: list[Progress] = []

    def progress(issue: Issue) -> SendProgress | None:
        if not sys.stderr.isatty():
            return None
        for old in bars:
            old.stop()
        bar, advance = _progress_for(issue)
        bar.start()
        bars.append(bar)
        return advance

    with ctx.store() as store:
        mail = jobs.deliver_mail(ctx.settings, store)  # confirmations waiting in the queue go first
        if mail.counts:
            click.echo(mail.summary())
        try:
            report = jobs.send_list(
                ctx.settings,
                store,
                mailing_list,
                number=number,
                resend_uncertain=resend_uncertain,
                wait=wait,
                workers=workers,
                progress=progress,
                since=since,
            )
        finally:
            for bar in bars:
                bar.stop()
    for send in report.sends:
        for email in send.uncertain:
            err_console.print(
                f"flygblad: uncertain: {email} (it may or may not have gone: the connection or the run ended "
                f"before the answer; send --issue {send.number} --resend-uncertain sends it again)",
                markup=False,
                soft_wrap=True,
            )
        click.echo(send.summary())
        if send.paused:
            err_console.print(f"flygblad: {send.paused}", markup=False, soft_wrap=True)
    if report.note:
        click.echo(f"send: {report.note}" + ("" if report.sends else ": nothing to send"))
    return report


@cli.command("send")
@click.option("--list", "-l", "list_name", metavar="NAME", help="The list [default: the first in the config].")
@click.option("--issue", "number", type=click.IntRange(min=1), metavar="N", help="Send (or resume) issue N only.")
@click.option("--dry-run", is_flag=True, help="Render and count recipients; send nothing, freeze nothing.")
@click.option(
    "--test",
    "test_address",
    metavar="ADDRESS",
    help="Send the next issue to this one address only, subject marked [TEST]; freezes nothing, touches no ledger.",
)
@click.option("--resend-uncertain", is_flag=True, help="Send again to recipients whose fate a crash left unknown.")
@click.option(
    "--wait", is_flag=True, help="Stay until deferred recipients are retried, instead of leaving them to a later run."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Sending processes sharing the outbox (PostgreSQL only).",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%d %H:%M"]),
    metavar="DATE",
    help="A new issue takes only what was published since DATE (site time), once; older new items are skipped.",
)
@click.option(
    "--at",
    "at",
    type=click.DateTime(formats=["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]),
    metavar="'YYYY-MM-DD HH:MM'",
    help="Send once at this time (site time) instead of now; `serve` sends it. `flygblad schedule` lists it.",
)
@click.option(
    "--cancel-at",
    "cancel_at",
    type=click.DateTime(formats=["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]),
    metavar="'YYYY-MM-DD HH:MM'",
    help="Cancel the one-off send at this time.",
)
@click.pass_obj
def send_command(
    ctx: Context,
    list_name: str | None,
    number: int | None,
    dry_run: bool,
    test_address: str | None,
    resend_uncertain: bool,
    wait: bool,
    workers: int,
    since: datetime | None,
    at: datetime | None,
    cancel_at: datetime | None,
) -> None:
    """Send the list: unfinished issues first (oldest first), then a new issue of what is new."""
    from pipeline.subscribers import SubscriberError, check_address

    with _errors():
        settings = ctx.settings
        mailing_list = _chosen_list(ctx, list_name)
        if since is not None:
            since = since.replace(tzinfo=settings.site.tz)
        if at is not None or cancel_at is not None:
            with ctx.store() as store:
                if cancel_at is not None:
                    jobs.cancel_send(store, mailing_list, cancel_at.replace(tzinfo=settings.site.tz))
                    click.echo(f"send: the send of {mailing_list.name!r} at {cancel_at:%Y-%m-%d %H:%M} is cancelled")
                    return
                assert at is not None
                when = jobs.schedule_send(store, mailing_list, at.replace(tzinfo=settings.site.tz))
            local = when.astimezone(settings.site.tz)
            click.echo(
                f"send: the next issue of {mailing_list.name!r} goes out at {local:%Y-%m-%d %H:%M %Z} "
                "(while `flygblad serve` runs; `flygblad schedule` lists it)"
            )
            return
        if dry_run:
            with ctx.store() as store:
                found = jobs.dry_run(settings, store, mailing_list, since=since)
            if found is None:
                click.echo(f"send: no new items for list {mailing_list.name!r}: nothing to send")
                return
            issue = found.issue
            click.echo(
                f"send --dry-run: issue {issue.number} of {mailing_list.name!r} "
                f"({len(issue.item_ids)} items, {issue.subject!r}) would go to {found.recipients} recipients; "
                "nothing sent"
            )
            return
        if test_address is not None:
            try:
                address = check_address(test_address)
            except SubscriberError as err:
                _fail(str(err), EXIT_USAGE)
            with ctx.store() as store:
                tried = jobs.send_test(settings, store, mailing_list, address, since=since)
            if tried is None:
                click.echo(f"send: no new items for list {mailing_list.name!r}: nothing to send")
                return
            issue, result = tried
            click.echo(
                f"send --test: issue {issue.number} of {mailing_list.name!r} to {address}: "
                f"{result.status} {result.reply}".rstrip()
            )
            sys.exit(EXIT_OK if result.status == "sent" else EXIT_FAILED)
        report = _send_list(
            ctx,
            mailing_list,
            number=number,
            resend_uncertain=resend_uncertain,
            wait=wait,
            workers=workers,
            since=since,
        )
    if report.interrupted:
        sys.exit(128 + report.interrupted)  # as a shell reports a command stopped by that signal
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


# ---------------------------------------------------------------- serve


@cli.command("serve")
@click.option("--host", default=None, help="Address to listen on [default: [web] host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port [default: [web] port, 8080].")
@click.pass_obj
def serve_command(ctx: Context, host: str | None, port: int | None) -> None:
    """Run the public web side (subscribe, confirm, unsubscribe, archive, feeds) under waitress."""
    from pipeline.web import serve

    with _errors():
        settings = ctx.settings
        from pipeline.schedule import start_scheduler

        scheduler = start_scheduler(settings)  # the schedules, and one-off sends (send --at) whenever they are due
        if settings.schedules:
            click.echo(f"serve: {len(settings.schedules)} schedules running (flygblad schedule shows when)")
        click.echo(
            f"serve: http://{host or settings.web.host}:{port or settings.web.port}/ "
            f"(public address {settings.web_base_url})"
        )
        try:
            serve(settings, host, port)
        finally:
            scheduler.shutdown(wait=False)


# ---------------------------------------------------------------- admin accounts


@cli.group("admin")
def admin_group() -> None:
    """Accounts of the admin web app (serve's /admin/)."""


def _new_password(password_stdin: bool) -> str:
    """A password from standard input (one line) or asked twice at the terminal, never echoed."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


_PASSWORD_STDIN = click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line) instead of asking."
)


@admin_group.command("add")
@click.argument("email")
@_PASSWORD_STDIN
@click.pass_obj
def admin_add(ctx: Context, email: str, password_stdin: bool) -> None:
    """Make an account for EMAIL; it signs in at /admin/ with the password given here."""
    from pipeline.accounts import add_admin

    with _errors():
        password = _new_password(password_stdin)
        with ctx.store() as store:
            address = add_admin(store, email, password)
    click.echo(f"admin add: {address} can sign in at {ctx.settings.web_base_url}/admin/")


@admin_group.command("password")
@click.argument("email")
@_PASSWORD_STDIN
@click.pass_obj
def admin_password(ctx: Context, email: str, password_stdin: bool) -> None:
    """Give EMAIL's account a new password (its browsers are signed out)."""
    from pipeline.accounts import set_password

    with _errors():
        password = _new_password(password_stdin)
        with ctx.store() as store:
            set_password(store, email, password)
    click.echo(f"admin password: changed for {email}")


@admin_group.command("remove")
@click.argument("email")
@click.pass_obj
def admin_remove(ctx: Context, email: str) -> None:
    """Delete EMAIL's account."""
    from pipeline.accounts import remove_admin

    with _errors():
        with ctx.store() as store:
            remove_admin(store, email)
    click.echo(f"admin remove: {email} removed")


@admin_group.command("list")
@click.pass_obj
def admin_list(ctx: Context) -> None:
    """The accounts, one address a line."""
    with _errors():
        with ctx.store() as store:
            for address in store.admin_emails():
                click.echo(address)


# ---------------------------------------------------------------- schedule


@cli.command("schedule")
@click.option("--count", "-n", type=click.IntRange(1, 100), default=5, show_default=True, help="Firings per schedule.")
@click.option("--run", "run_name", metavar="NAME", help="Fire this schedule now (as serve would at its time).")
@click.pass_obj
def schedule_command(ctx: Context, count: int, run_name: str | None) -> None:
    """Show each schedule's next firings in its time zone, and the last ones recorded."""
    from pipeline.schedule import next_runs

    with _errors():
        settings = ctx.settings
        if run_name is not None:
            settings.schedule(run_name)
            fired = jobs.fire_schedule(settings, run_name, due=datetime.now(UTC))  # now, as documented
            click.echo(f"schedule: {run_name} fired: {fired.status}" + (f": {fired.detail}" if fired.detail else ""))
            sys.exit(
                EXIT_OK if fired.status in ("done", "no-news", "no-subscribers", "deferred", "waiting") else EXIT_FAILED
            )
        with ctx.store() as store:
            for one in jobs.scheduled_sends(store):
                assert isinstance(one["due"], datetime)
                moment = one["due"].astimezone(settings.site.tz).isoformat()
                click.echo(
                    f"send --at {moment} list {one['list']}: {one['status']}"
                    + (f": {one['detail']}" if one["detail"] else "")
                )
        if not settings.schedules:
            click.echo("schedule: no [[schedules]] configured")
            return
        with ctx.store() as store:
            for schedule in settings.schedules:
                what = (
                    "collect only" if schedule.collect_only else f"list {schedule.list}, min_items {schedule.min_items}"
                )
                click.echo(f"{schedule.name}: {schedule.cron} ({what}, send_deadline {schedule.send_deadline})")
                for when in next_runs(settings, schedule, count):
                    click.echo(f"  next {when.isoformat()}")
                for firing in jobs.recent_firings(store, schedule.name):
                    assert isinstance(firing["due"], datetime)
                    due = firing["due"].astimezone(settings.site.tz).isoformat()
                    click.echo(f"  last {due} {firing['status']}: {firing['detail'] or ''}".rstrip())

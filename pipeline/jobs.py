"""The use cases: the one place where flygblad decides what to do.

Each function here is something a person or a timer starts: collect and
publish, draft the next issue, freeze it, send a list, fire a schedule. Each
takes the settings and a store, returns a typed report, and raises
flygblad's own errors. The CLI, the scheduler and the web side call these and
decide nothing themselves (sqlite-utils' ``cli.py`` over ``db.py``).

The send policy, once:

1. An unfinished issue of the list (frozen, or sent to some but not all) is
   resumed first, the oldest first; only when it is done does the list get a
   new one.
2. A new issue is frozen inside the list's turn (:meth:`Store.list_turn`):
   "what is new" and the next number are decided while holding the list's
   lock, and the database refuses a second open issue of a list and an item
   in two issues of a list. A second process finds the open issue and joins
   its outbox instead of freezing its own.
3. No issue is frozen for a list without active subscribers: it would use up
   its items on nobody.
"""

from __future__ import annotations

import builtins
import logging
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from pipeline.collect import CollectReport, collect
from pipeline.collect import Progress as CollectProgress
from pipeline.config import ListSettings, ScheduleSettings, Settings
from pipeline.delivery import Message, SendResult
from pipeline.delivery.send import Progress as SendProgress
from pipeline.delivery.send import SenderBusy, SendReport
from pipeline.delivery.transactional import MailReport
from pipeline.errors import ConfigError, FlygbladError
from pipeline.issues import Draft, draft, frozen_content, new_items, next_issue, versions_for, window_start
from pipeline.store import Store
from pipeline.tokens import tokens_for
from pipeline.types import Candidate, DraftChoices, ImportReport, Issue, StoredItem

log = logging.getLogger(__name__)

#: A sign-up mails an address at most this often.
CONFIRMATION_INTERVAL = timedelta(hours=1)


# ---------------------------------------------------------------- collect and publish


@dataclass
class PublishReport:
    """A collect, and the feeds and archive written after it."""

    collected: CollectReport
    feed_files: int = 0
    rewritten: int = 0

    def feeds_summary(self, feeds_dir: object) -> str:
        """``feeds: 12 files in feeds, 3 rewritten, 9 unchanged``."""
        return (
            f"feeds: {self.feed_files} files in {feeds_dir}, {self.rewritten} rewritten, "
            f"{self.feed_files - self.rewritten} unchanged"
        )


def write_feeds_and_archive(settings: Settings, store: Store) -> tuple[int, int]:
    """The feeds and the static archive from the store; (files, files rewritten)."""
    from pipeline.feeds import build_feeds, write_feeds
    from pipeline.web import write_archive

    files = build_feeds(settings, store)
    write_archive(settings, store)
    written = write_feeds(settings.feeds_dir, files)
    return len(files), len(written)


def collect_and_publish(
    settings: Settings,
    store: Store,
    *,
    only: list[str] | None = None,
    progress: CollectProgress | None = None,
    publish: bool = True,
    refresh: bool = False,
) -> PublishReport:
    """Collect every source (or *only* some), then write the feeds and the archive (*refresh*: ask every
    article page again, not only those whose listing changed or that were last confirmed a day ago)."""
    report = PublishReport(collect(settings, store, only=only, progress=progress, refresh=refresh))
    if publish:
        report.feed_files, report.rewritten = write_feeds_and_archive(settings, store)
    return report


# ---------------------------------------------------------------- draft and freeze


@dataclass(frozen=True)
class Frozen:
    """What :func:`freeze_next` found or made."""

    issue: Issue | None
    created: bool = False
    reason: str = ""  # why there is no new issue, in words
    #: Why, for a program: "no-subscribers", "no-news", or "" (an issue was found or made).
    why: str = ""
    left_out: int = 0
    warnings: tuple[str, ...] = ()


def next_draft(
    settings: Settings, store: Store, mailing_list: ListSettings, *, since: datetime | None = None
) -> Draft | None:
    """The list's next issue rendered, frozen nowhere (``preview``); None when nothing is new."""
    return next_issue(settings, store, mailing_list, since=since)


def _window_text(settings: Settings, store: Store, mailing_list: ListSettings, since: datetime | None) -> str:
    """``2026-11-23, the first issue's window (first_issue_days = 14)`` or ``--since 2026-12-01``."""
    start = window_start(settings, store, mailing_list, since=since)
    day = start.astimezone(settings.site.tz).date().isoformat() if start else "?"
    if since is not None:
        return f"--since {day}"
    return f"{day}, the first issue's window (first_issue_days = {mailing_list.first_issue_days})"


def freeze_next(
    settings: Settings,
    store: Store,
    mailing_list: ListSettings,
    *,
    min_items: int = 1,
    need_subscribers: bool = False,
    now: datetime | None = None,
    since: datetime | None = None,
    approval: str | None = None,
) -> Frozen:
    """Freeze the list's next issue, or find the one that is still unfinished.

    Decided in the list's turn, so two processes never freeze two issues with
    the same items: the second finds the first's issue (``created`` False).
    """
    name = mailing_list.name
    with store.list_turn(name) as turn:
        current = turn.open_issue()
        if current is not None:
            return Frozen(
                current, reason=f"issue {current.number} of {name!r} is {current.status}, not yet sent to everyone"
            )
        if need_subscribers and not store.count_subscribers(name, "active"):
            return Frozen(None, reason=f"list {name!r} has no active subscribers", why="no-subscribers")
        choices = store.draft_choices(name)
        if (approval or mailing_list.approval) == "required" and not choices.approved:
            return Frozen(
                None,
                reason=f"the next issue of {name!r} waits for approval (flygblad draft approve --list {name})",
                why="waiting",
            )
        new = new_items(settings, store, mailing_list, since=since, choices=choices)
        chosen, left_out = new.chosen, new.left_out
        if not chosen:
            reason = f"no new items for list {name!r}"
            if new.too_old:
                reason += f" ({len(new.too_old)} published before {_window_text(settings, store, mailing_list, since)})"
            return Frozen(None, reason=reason, why="no-news")
        if len(chosen) + len(left_out) < min_items:
            return Frozen(
                None, reason=f"{len(chosen) + len(left_out)} new items, min_items is {min_items}", why="no-news"
            )
        made = draft(
            settings,
            store,
            mailing_list,
            chosen,
            left_out=left_out,
            too_old=new.too_old + new.excluded,
            now=now,
            choices=choices,
        )
        # Each language the list's subscribers read gets its own rendering of the same issue.
        versions = versions_for(settings, store, made, store.subscriber_languages(name), now=now, choices=choices)
        number = turn.freeze(**frozen_content(made, now=now), versions=versions)
        store.clear_draft(name, turn.connection)  # the frozen issue is the draft as approved: its choices are spent
    issue = store.issue(name, number)
    assert issue is not None
    return Frozen(issue, created=True, left_out=made.left_out, warnings=made.rendered.warnings)


# ---------------------------------------------------------------- the communicator's draft


@dataclass(frozen=True)
class DraftView:
    """A list's next issue as the communicator shapes it: the choices, and the items as they stand now."""

    choices: DraftChoices
    items: builtins.list[StoredItem]  # in the issue, in its order
    left_out: builtins.list[StoredItem]  # new, but beyond max_items
    excluded: builtins.list[StoredItem]  # left out by hand
    draft: Draft | None  # rendered (subject, preheader); None when there is nothing to send


def draft_view(settings: Settings, store: Store, mailing_list: ListSettings) -> DraftView:
    """The list's open draft: choices, items, and the rendering the next freeze would make."""
    choices = store.draft_choices(mailing_list.name)
    new = new_items(settings, store, mailing_list, choices=choices)
    made = next_issue(settings, store, mailing_list) if new.chosen else None
    return DraftView(choices, new.chosen, new.left_out, new.excluded, made)


def _item_ref(view: DraftView, ref: str) -> StoredItem:
    """An item of the draft by its number in ``draft show`` (1, 2 …), its id or its URL."""
    every = view.items + view.left_out + view.excluded
    if ref.isdigit() and 1 <= int(ref) <= len(view.items):
        return view.items[int(ref) - 1]
    for stored in every:
        if ref in (stored.item.id, stored.item.url):
            return stored
    raise FlygbladError(f"no item {ref!r} in the draft (give its number in `flygblad draft show`, its id or its URL)")


def edit_draft(store: Store, mailing_list: ListSettings, **values: str | None) -> None:
    """Set the draft's note (Markdown), subject or preheader; None or "" puts the default back."""
    store.edit_draft(mailing_list.name, **{k: (v if v and v.strip() else None) for k, v in values.items()})


def choose_item(settings: Settings, store: Store, mailing_list: ListSettings, ref: str, **choice: object) -> StoredItem:
    """Leave an item out (``excluded=True``), put it back or in (``included=True``), or shorten its summary."""
    view = draft_view(settings, store, mailing_list)
    try:
        stored = _item_ref(view, ref)
    except FlygbladError:
        found = store.items_by_id([ref]) if not ref.isdigit() else []
        if not found or not choice.get("included"):
            raise
        stored = found[0]  # an item that is not new: put in by hand
    if choice.get("included"):
        choice.setdefault("excluded", False)
    store.edit_draft_item(mailing_list.name, stored.item.id, **choice)
    return stored


def move_item(
    settings: Settings, store: Store, mailing_list: ListSettings, ref: str, to: int | None = None, *, by: int = 0
) -> StoredItem:
    """Place an item at position *to* (1 = first) among the draft's items, or *by* places from where it is
    (-1: one up); the others keep their order."""
    view = draft_view(settings, store, mailing_list)
    stored = _item_ref(view, ref)
    if to is None:
        ids = [s.item.id for s in view.items]
        if stored.item.id not in ids:
            raise FlygbladError(f"{stored.item.title!r} is not among the draft's items (put it back first)")
        to = max(1, ids.index(stored.item.id) + 1 + by)
    order = [s.item.id for s in view.items if s.item.id != stored.item.id]
    order.insert(max(0, min(to - 1, len(order))), stored.item.id)
    store.place_draft_items(mailing_list.name, order)
    return stored


def approve_draft(settings: Settings, store: Store, mailing_list: ListSettings, by: str) -> DraftView:
    """Approve the draft as it stands; FlygbladError when there is nothing to approve."""
    view = draft_view(settings, store, mailing_list)
    if view.draft is None:
        raise FlygbladError(f"list {mailing_list.name!r} has no next issue to approve: no new items")
    # The approved issue is exactly what was approved: its items are pinned in their order, and what a
    # collect adds after this waits for the next issue.
    store.place_draft_items(mailing_list.name, [s.item.id for s in view.items])
    store.approve_draft(mailing_list.name, by)
    return draft_view(settings, store, mailing_list)


# ---------------------------------------------------------------- send


@dataclass
class ListSendReport:
    """What sending a list did: the issues it worked on, and why it stopped where it did."""

    list: str
    sends: builtins.list[SendReport] = field(default_factory=builtins.list)
    note: str = ""  # e.g. "no new items for list 'nyhetsbrev'"
    #: Why nothing was sent, for a program: "no-news", "no-subscribers", "elsewhere" (another
    #: sender has the issue, or it waits behind the open one), or "".
    idle: str = ""
    frozen: Issue | None = None  # the issue this run froze, if it froze one

    @property
    def ok(self) -> bool:
        """False when a send stopped before its end (paused, login refused)."""
        return not any(s.paused for s in self.sends)

    @property
    def interrupted(self) -> int | None:
        """The signal that stopped the send, if one did."""
        return next((s.interrupted for s in self.sends if s.interrupted), None)

    @property
    def uncertain(self) -> builtins.list[str]:
        return [email for s in self.sends for email in s.uncertain]


def _send_one(
    settings: Settings,
    store: Store,
    issue: Issue,
    *,
    resend_uncertain: bool,
    wait: bool,
    workers: int,
    progress: SendProgress | None,
) -> SendReport | str:
    """Send (or resume) one issue; a string says why it could not be worked on here."""
    from pipeline.delivery import sender_for
    from pipeline.delivery.send import finish_report, run_worker, send_issue

    if issue.status == "held":
        if not store.reopen_held(issue.id):
            return f"issue {issue.number} of {issue.list!r} waits for the list's open issue"
        issue = store.issue(issue.list, issue.number) or issue
    sender = sender_for(settings)
    extra: list[multiprocessing.process.BaseProcess] = []
    if workers > 1:
        store.start_outbox(issue.id, issue.list)  # before the workers start: they share these rows
        context = multiprocessing.get_context("spawn")
        extra = [
            context.Process(target=run_worker, args=(str(settings.path), issue.list, issue.number, wait))
            for _ in range(workers - 1)
        ]
        for process in extra:
            process.start()
    try:
        report = send_issue(
            settings, store, issue, sender, resend_uncertain=resend_uncertain, progress=progress, wait=wait
        )
    except SenderBusy as busy:
        return f"issue {issue.number} of {issue.list!r} is being sent by another flygblad send ({busy.holder}): it carries on there"
    finally:
        for process in extra:
            process.join()
    if extra:
        finish_report(store, issue, report)
    return report


def send_list(
    settings: Settings,
    store: Store,
    mailing_list: ListSettings,
    *,
    number: int | None = None,
    resend_uncertain: bool = False,
    wait: bool = False,
    workers: int = 1,
    min_items: int = 1,
    progress: Callable[[Issue], SendProgress | None] | None = None,
    since: datetime | None = None,
    approval: str | None = None,
) -> ListSendReport:
    """Send the list: its unfinished issues first (oldest first), then a new issue if there is news.

    *number* sends that issue only (``send --issue N``). *progress* is asked
    for a progress callback per issue. *approval* overrides the list's (a schedule's own).
    """
    if workers > 1 and store.engine.dialect.name != "postgresql":
        raise ConfigError(
            '--workers needs PostgreSQL ([storage] url = "postgresql+psycopg://…"): SQLite allows one sender at a time',
            path=str(settings.path),
            key="storage.url",
        )
    tokens_for(settings)  # a missing or weak secret stops the send before anything is frozen or sent
    name = mailing_list.name
    report = ListSendReport(name)

    def one(issue: Issue, again: bool) -> bool:
        """Work on one issue; True when it is done and the run may go on to the next."""
        done = _send_one(
            settings,
            store,
            issue,
            resend_uncertain=again,
            wait=wait,
            workers=workers,
            progress=progress(issue) if progress else None,
        )
        if isinstance(done, str):
            report.note, report.idle = done, "elsewhere"
            return False
        report.sends.append(done)
        return done.finished

    if number is not None:
        issue = store.issue(name, number)
        if issue is None:
            raise FlygbladError(f"list {name!r} has no issue {number}")
        if issue.status == "sent" and not (resend_uncertain and store.outbox_counts(issue.id).get("uncertain")):
            report.note = f"issue {number} of {name!r} is sent to everyone already"
            return report
        one(issue, resend_uncertain)
        return report

    tried: set[int] = set()
    while True:
        waiting = [i for i in store.unfinished_issues(name) if i.id not in tried]
        if not waiting:
            break
        tried.add(waiting[0].id)
        if not one(waiting[0], resend_uncertain):
            return report
    if resend_uncertain:
        latest = store.issue(name)
        if latest is not None and latest.id not in tried and store.outbox_counts(latest.id).get("uncertain"):
            one(latest, True)
            return report
    frozen = freeze_next(
        settings, store, mailing_list, min_items=min_items, need_subscribers=True, since=since, approval=approval
    )
    if frozen.issue is None:
        if not report.sends:  # after a resumed issue, "nothing new" is the ordinary end
            report.note, report.idle = frozen.reason, frozen.why
        return report
    if frozen.created:
        report.frozen = frozen.issue
    one(frozen.issue, resend_uncertain)
    return report


def send_and_publish(settings: Settings, store: Store, mailing_list: ListSettings, **options: Any) -> ListSendReport:
    """Send the list (:func:`send_list`, with its *options*); an issue that went out joins the static archive."""
    sent = send_list(settings, store, mailing_list, **options)
    if sent.sends:
        write_feeds_and_archive(settings, store)
    return sent


def _issue_to_try(
    settings: Settings, store: Store, mailing_list: ListSettings, since: datetime | None = None
) -> Issue | None:
    """What a send would work on next, frozen or not: the oldest unfinished issue, else the next draft."""
    waiting = store.unfinished_issues(mailing_list.name)
    if waiting:
        return waiting[0]
    upcoming = next_issue(settings, store, mailing_list, since=since)
    return upcoming.as_issue() if upcoming else None


@dataclass(frozen=True)
class DryRun:
    """What ``send --dry-run`` found: the issue a send would work on and how many it would go to."""

    issue: Issue
    recipients: int


def dry_run(
    settings: Settings, store: Store, mailing_list: ListSettings, *, since: datetime | None = None
) -> DryRun | None:
    """Render and count, send nothing, freeze nothing; None when there is nothing to send."""
    issue = _issue_to_try(settings, store, mailing_list, since)
    if issue is None:
        return None
    if issue.status == "sending":
        counts = store.outbox_counts(issue.id)
        recipients = sum(counts.get(s, 0) for s in ("pending", "deferred"))
    else:
        recipients = store.count_subscribers(mailing_list.name, "active")
    return DryRun(issue, recipients)


#: Who a preview is addressed to: a name that shows where the greeting goes.
PREVIEW_NAME = "Förnamn Efternamn"
PREVIEW_EMAIL = "mottagare@example.org"
#: The preview recipient's subscriber id: no stored subscriber has it (ids start at 1), so its signed
#: unsubscribe link is a real one that the web side answers with a page saying it was a preview.
PREVIEW_SUBSCRIBER_ID = 0


@dataclass(frozen=True)
class Preview:
    """A draft as one recipient gets it: the filled HTML and text, and the whole message."""

    html: str
    text: str
    eml: bytes
    warnings: tuple[str, ...] = ()


def preview(settings: Settings, next_issue_draft: Draft) -> Preview:
    """The draft's message to a preview recipient, built exactly as a send builds the first subscriber's.

    The same :class:`~pipeline.delivery.send.Outbox` makes it: every header (List-Id,
    List-Unsubscribe, List-Unsubscribe-Post, DKIM when configured) and a signed unsubscribe link,
    which the web side answers with a page saying it belongs to a preview.
    """
    import secrets

    from pipeline.delivery.send import Outbox
    from pipeline.render.templates import strings
    from pipeline.tokens import Tokens

    warnings: tuple[str, ...] = ()
    try:
        tokens = tokens_for(settings)
    except ConfigError as err:  # a preview is for looking: it still shows, and says what a send needs
        tokens = Tokens(secrets.token_urlsafe(48))
        warnings = (f"the preview's unsubscribe link is signed with a throwaway key: {err}",)
    issue = next_issue_draft.as_issue()

    def message_to_preview(sign: bool) -> Message:
        outbox = Outbox(settings, next_issue_draft.list, issue, date=datetime.now(UTC), tokens=tokens, sign=sign)
        # A name in the list's language, so the greeting reads as a subscriber's would ("Hello Firstname Lastname,").
        texts = strings(settings.templates_dir, next_issue_draft.rendered.language)
        return outbox.message(PREVIEW_SUBSCRIBER_ID, PREVIEW_EMAIL, texts.get("sample_name", PREVIEW_NAME))

    try:
        message = message_to_preview(sign=True)
    except ConfigError as err:
        if not (err.key or "").startswith("dkim"):
            raise
        warnings = (*warnings, f"the preview is not DKIM-signed: {err}")
        message = message_to_preview(sign=False)
    assert message.parts is not None  # an Outbox message always carries its parts
    html, text = message.parts()
    return Preview(html, text, message.data, warnings)


def send_test(
    settings: Settings,
    store: Store,
    mailing_list: ListSettings,
    address: str,
    *,
    since: datetime | None = None,
    subject_prefix: str = "[TEST] ",
) -> tuple[Issue, SendResult] | None:
    """The issue a send would work on, to one address, subject marked ``[TEST]``; no ledger, nothing frozen."""
    from pipeline.delivery import sender_for
    from pipeline.delivery.send import Outbox

    issue = _issue_to_try(settings, store, mailing_list, since)
    if issue is None:
        return None
    outbox = Outbox(settings, mailing_list, issue, date=datetime.now(UTC), subject_prefix=subject_prefix)
    message = outbox.message(0, address, None)
    with sender_for(settings) as sender:
        [result] = sender.send([message])
    return issue, result


def notify_editors(settings: Settings, store: Store, mailing_list: ListSettings) -> int:
    """Mail the list's editors the issue that waits for their approval, once per state of the draft.

    Returns how many were mailed (0: no editors, already told about this draft, or nothing to show).
    """
    from pipeline.render.templates import strings

    if not mailing_list.editors:
        return 0
    choices = store.draft_choices(mailing_list.name)
    if choices.notified_at is not None and (choices.changed is None or choices.notified_at >= choices.changed):
        return 0
    prefix = strings(settings.templates_dir, settings.list_language(mailing_list))["approval_prefix"] + " "
    mailed = 0
    for editor in mailing_list.editors:
        tried = send_test(settings, store, mailing_list, editor, subject_prefix=prefix)
        if tried is None:
            return 0
        if tried[1].status == "sent":
            mailed += 1
        else:
            log.warning(
                "list %s: editor %s not told: %s %s", mailing_list.name, editor, tried[1].status, tried[1].reply
            )
    if mailed:
        store.mark_notified(mailing_list.name)
    return mailed


@dataclass(frozen=True)
class DeliveryLog:
    """What became of one issue: recipients by status, and each that did not get it, with the reason."""

    issue: Issue
    counts: dict[str, int]
    problems: builtins.list[tuple[str, str, str]]  # (email, status, what the server or provider said)
    #: Subscribers who left after this issue, before the next: unsubscribed, bounced, complained.
    left: dict[str, int] = field(default_factory=dict)
    #: (URL, clicks) for a list with track_clicks: counted per link, never per person.
    clicks: builtins.list[tuple[str, int]] = field(default_factory=builtins.list)

    @property
    def total(self) -> int:
        """Recipients in the issue's outbox."""
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Recipients whose outcome is final (sent, bounced, failed, uncertain): what is left is still to go."""
        from pipeline.delivery.send import FINAL

        return sum(n for status, n in self.counts.items() if status in FINAL)


#: The outcomes a communicator needs to see one by one (sent ones are only counted).
PROBLEM_STATUSES = ("bounced", "failed", "uncertain", "deferred")


def delivery_log(store: Store, list_name: str, number: int) -> DeliveryLog:
    """Issue *number* of a list with its delivery log; FlygbladError when there is no such issue."""
    issue = store.issue(list_name, number)
    if issue is None:
        raise FlygbladError(f"list {list_name!r} has no issue {number}")
    problems = [
        (row.email, row.status, row.last_reply or "")
        for status in PROBLEM_STATUSES
        for row in store.outbox_rows(issue.id, status)
    ]
    following = store.issue(list_name, number + 1)
    left = store.status_changes(list_name, issue.created, following.created if following else None)
    return DeliveryLog(issue, store.outbox_counts(issue.id), problems, left, store.clicks(list_name, number))


# ---------------------------------------------------------------- subscribers


@dataclass(frozen=True)
class Subscribed:
    """What a sign-up did. The web answers the same whatever it says (no enumeration)."""

    status: str | None  # the subscriber's status now
    confirmation_queued: bool = False


def subscribe(settings: Settings, store: Store, mailing_list: ListSettings, who: Candidate) -> Subscribed:
    """A sign-up on the web: the address joins unconfirmed (double opt-in) and a confirmation is queued.

    Nothing is sent inside the request: the queue is delivered by ``serve``'s
    mail pump (and by ``send`` and ``run``), with retries, so a relay that is
    down loses nothing and the answer takes the same time for every address.
    """
    double = mailing_list.double_opt_in
    store.upsert_subscribers(
        mailing_list.name, [who], status="unconfirmed" if double else "active", report=ImportReport(), vouched=False
    )
    subscriber = store.subscriber(mailing_list.name, who.email)
    if subscriber is None:
        return Subscribed(None)
    queued = False
    recently = datetime.now(UTC) - CONFIRMATION_INTERVAL
    if double and subscriber.status == "unconfirmed" and not store.mailed_since("confirm", subscriber.id, recently):
        # At most one confirmation an hour to an address, whoever asks how often: the form cannot be
        # used to flood someone's inbox.
        queued = store.enqueue_mail("confirm", mailing_list.name, subscriber.id, subscriber.email, subscriber.name)
    return Subscribed(subscriber.status, queued)


def known_language(settings: Settings) -> Callable[[str], str]:
    """Turns a subscriber's language tag into one the templates have, or raises ValueError naming those."""
    from pipeline.render.templates import known_language as known

    return lambda tag: known(settings.templates_dir, tag)


@dataclass
class SubscribersAdded:
    """What adding or importing subscribers did, and the confirmations it queued (double opt-in lists)."""

    report: ImportReport
    confirmations: int = 0
    mail: MailReport | None = None


def add_subscriber(
    settings: Settings,
    store: Store,
    mailing_list: ListSettings,
    email: str,
    *,
    name: str | None = None,
    language: str | None = None,
    status: str = "active",
) -> SubscribersAdded:
    """The communicator adds one address (``active``: they vouch for its consent); SubscriberError if bad."""
    from pipeline.subscribers import candidate

    row = candidate(email, name, language, known=known_language(settings))
    report = ImportReport()
    store.upsert_subscribers(mailing_list.name, [row], status=status, report=report)
    queued, mail = confirm_new_subscribers(settings, store, mailing_list)
    return SubscribersAdded(report, queued, mail)


def import_subscribers(
    settings: Settings, store: Store, mailing_list: ListSettings, path: Path, *, status: str = "active"
) -> SubscribersAdded:
    """Import a CSV file; bad rows are reported by line in ``report.problems`` and skipped."""
    from pipeline.subscribers import batches, read_csv

    report = ImportReport()
    for batch in batches(read_csv(path, report.problems, known=known_language(settings))):
        store.upsert_subscribers(mailing_list.name, batch, status=status, report=report)
    queued, mail = confirm_new_subscribers(settings, store, mailing_list)
    return SubscribersAdded(report, queued, mail)


EXPORT_HEADER = ("email", "name", "language", "status", "created")


def export_subscribers(
    settings: Settings, store: Store, mailing_list: ListSettings, out: TextIO, *, status: str | None = None
) -> int:
    """Write the list's subscribers to *out* as CSV that imports again as it is; returns how many."""
    from csv import writer

    tz = settings.site.tz
    rows = writer(out, lineterminator="\n")
    rows.writerow(EXPORT_HEADER)
    count = 0
    for s in store.iter_subscribers(mailing_list.name, status=status):
        rows.writerow([s.email, s.name or "", s.language or "", s.status, s.created.astimezone(tz).isoformat()])
        count += 1
    return count


def suppress_subscriber(store: Store, mailing_list: ListSettings, email: str) -> bool:
    """Put an address on the list's suppression list (it left by other means: a phone call, a letter)."""
    if store.subscriber(mailing_list.name, email.strip()) is None:
        return False
    store.suppress(email.strip(), "unsubscribed", list_name=mailing_list.name)
    return True


def confirm(store: Store, subscriber_id: int, list_name: str) -> bool:
    """Double opt-in: the signed link's POST makes the subscriber active; False when unknown or suppressed."""
    return store.confirm_subscriber(subscriber_id, list_name)


def unsubscribe(store: Store, subscriber_id: int, list_name: str) -> bool:
    """The signed link's POST (or RFC 8058's one-click POST): the subscriber leaves; False when unknown."""
    return store.unsubscribe(subscriber_id, list_name)


def confirm_new_subscribers(
    settings: Settings, store: Store, mailing_list: ListSettings
) -> tuple[int, MailReport | None]:
    """After an import or add: each unconfirmed subscriber who never had a confirmation is sent one now.

    Returns how many were queued and, when any were, what delivering the queue did.
    """
    queued = store.queue_confirmations(mailing_list.name) if mailing_list.double_opt_in else 0
    return queued, (deliver_mail(settings, store) if queued else None)


def deliver_mail(settings: Settings, store: Store) -> MailReport:
    """Send the transactional mail that is due (confirmations), recording every outcome."""
    from pipeline.delivery.transactional import deliver_queue

    return deliver_queue(settings, store)


# ---------------------------------------------------------------- schedules


@dataclass(frozen=True)
class FiringReport:
    """How a firing ended: its status as recorded, and what it did."""

    status: str  # done, no-news, no-subscribers, waiting (for approval), paused, deferred, skipped, failed, taken
    detail: str = ""
    issue_number: int | None = None


def fire_schedule(settings: Settings, name: str, *, due: datetime, now: datetime | None = None) -> FiringReport:
    """One firing of schedule *name*, due at *due*: collect, publish, then send the list as ``send`` would.

    Recorded under (schedule, due) before it acts, so two schedulers never act
    on one firing; a firing later than its ``send_deadline`` is skipped.
    """
    schedule = settings.schedule(name)
    now = now or datetime.now(UTC)
    due = due.astimezone(UTC)
    with Store.open(settings.storage_url) as store:
        store.abandon_firings(now=now)
        late = (now - due).total_seconds()
        if late > schedule.deadline_seconds:
            detail = f"{late / 3600:.1f} h late; send_deadline is {schedule.send_deadline}"
            if store.take_firing(name, due, status="skipped", detail=detail, now=now):
                log.warning("schedule %s: firing due %s skipped (%.0f s late)", name, due, late)
                return FiringReport("skipped", detail)
            return FiringReport("taken")
        if not store.take_firing(name, due, now=now):
            return FiringReport("taken")
        return _run_firing(settings, store, schedule, due, what=f"schedule {name}")


def _run_firing(
    settings: Settings, store: Store, schedule: ScheduleSettings, due: datetime, *, what: str
) -> FiringReport:
    """A firing of *schedule* that this process has taken: do it, and record how it ended."""
    mailing_list = None if schedule.collect_only else settings.mailing_list(schedule.list or "")
    result = _fire(settings, store, mailing_list, min_items=schedule.min_items, approval=schedule.approval, what=what)
    store.finish_firing(schedule.name, due, result.status, result.detail, issue_number=result.issue_number)
    return result


def _fire(
    settings: Settings,
    store: Store,
    mailing_list: ListSettings | None,
    *,
    min_items: int = 1,
    approval: str | None = None,
    what: str,
) -> FiringReport:
    """What a firing does: collect and publish, then send the list as ``send`` would (or only collect)."""
    try:
        published = collect_and_publish(settings, store)
        if mailing_list is None:
            return FiringReport("done", published.collected.summary())
        sent = send_and_publish(settings, store, mailing_list, min_items=min_items, approval=approval)
        result = _firing_result(sent)
        if result.status == "waiting":
            told = notify_editors(settings, store, mailing_list)
            if told:
                result = FiringReport("waiting", f"{result.detail}; {told} editors mailed the issue")
        return result
    except FlygbladError as err:
        log.error("%s failed: %s", what, err)
        return FiringReport("failed", str(err))


#: A one-off send (``send --at``) is recorded as a firing of the schedule ``send:LIST``; schedule names
#: cannot hold a colon, so it is never a configured schedule's.
SEND_AT_PREFIX = "send:"
#: A one-off send later than this (flygblad was not running) is skipped, as a schedule's send_deadline would.
SEND_AT_DEADLINE = timedelta(hours=6)


def schedule_send(store: Store, mailing_list: ListSettings, at: datetime, *, now: datetime | None = None) -> datetime:
    """Record a one-off send of the list at *at* (aware); ``serve`` fires it. FlygbladError if past or taken."""
    now = now or datetime.now(UTC)
    at = at.astimezone(UTC).replace(microsecond=0)
    if at < now - timedelta(minutes=1):
        raise FlygbladError(f"{at.isoformat()} is in the past: a send is scheduled for a later time")
    if not store.take_firing(SEND_AT_PREFIX + mailing_list.name, at, status="scheduled", now=now):
        raise FlygbladError(f"list {mailing_list.name!r} has a send at {at.isoformat()} already")
    return at


def cancel_send(store: Store, mailing_list: ListSettings, at: datetime) -> None:
    """Cancel a one-off send that has not run; FlygbladError when there is none at that time."""
    if not store.cancel_firing(SEND_AT_PREFIX + mailing_list.name, at.astimezone(UTC)):
        raise FlygbladError(f"list {mailing_list.name!r} has no scheduled send at {at.isoformat()}")


def scheduled_sends(store: Store, list_name: str | None = None) -> list[dict[str, object]]:
    """One-off sends, newest first, each with its ``list``; those not yet run have status ``scheduled``."""
    store.abandon_firings()
    rows = store.firings_named(SEND_AT_PREFIX + (list_name or ""))
    for row in rows:
        row["list"] = str(row["schedule"]).removeprefix(SEND_AT_PREFIX)
    return [r for r in rows if list_name is None or r["list"] == list_name]


def fire_due_sends(settings: Settings, *, now: datetime | None = None) -> list[FiringReport]:
    """Run each one-off send whose time has come (the scheduler calls this every minute).

    One waiting for approval is tried again at each call until it is approved or
    :data:`SEND_AT_DEADLINE` has passed; two schedulers never run the same one.
    """
    now = now or datetime.now(UTC)
    reports = []
    with Store.open(settings.storage_url) as store:
        store.abandon_firings(now=now)
        for row in store.firings_due(SEND_AT_PREFIX, ("scheduled", "waiting"), now):
            schedule, due = str(row["schedule"]), row["due"]
            assert isinstance(due, datetime)
            list_name = schedule.removeprefix(SEND_AT_PREFIX)
            known = next((m for m in settings.lists if m.name == list_name), None)
            if (
                row["status"] == "waiting"
                and now - due <= SEND_AT_DEADLINE
                and known is not None
                and known.approval == "required"
                and not store.draft_choices(list_name).approved
            ):
                continue  # still not approved: nothing to collect or send yet (the editors were told)
            if not store.claim_firing(schedule, due, ("scheduled", "waiting"), now=now):
                continue
            if now - due > SEND_AT_DEADLINE:
                result = FiringReport("skipped", f"{(now - due).total_seconds() / 3600:.1f} h late")
            elif known is None:
                result = FiringReport("failed", f"list {list_name!r} is no longer in the config")
            else:
                result = _fire(settings, store, known, what=f"send at {due.isoformat()}")
            store.finish_firing(schedule, due, result.status, result.detail, issue_number=result.issue_number)
            reports.append(result)
        reports += _send_approved(settings, store, now)
    return reports


def _send_approved(settings: Settings, store: Store, now: datetime) -> list[FiringReport]:
    """Firings that waited for approval, of schedules with ``on_approval = "at-once"``: sent once approved.

    Only within the firing's ``send_deadline``; otherwise the approved issue waits for the next firing.
    """
    reports = []
    for schedule in settings.schedules:
        if schedule.on_approval != "at-once" or schedule.collect_only or not schedule.list:
            continue
        last = next(iter(store.firings(schedule.name)), None)
        if last is None or last["status"] != "waiting":
            continue
        due = last["due"]
        assert isinstance(due, datetime)
        if (now - due).total_seconds() > schedule.deadline_seconds:
            continue
        if not store.draft_choices(schedule.list).approved:
            continue
        if not store.claim_firing(schedule.name, due, ("waiting",), now=now):
            continue
        reports.append(_run_firing(settings, store, schedule, due, what=f"schedule {schedule.name} (approved)"))
    return reports


def recent_firings(store: Store, name: str, count: int = 3) -> list[dict[str, object]]:
    """A schedule's last firings, newest first; one left ``running`` by a process that is gone says so."""
    store.abandon_firings()
    return store.firings(name)[:count]


def _firing_result(sent: ListSendReport) -> FiringReport:
    if not sent.sends:
        status = {"no-subscribers": "no-subscribers", "elsewhere": "deferred", "waiting": "waiting"}.get(
            sent.idle, "no-news"
        )
        return FiringReport(status, sent.note)
    last = sent.sends[-1]
    summary = "; ".join(s.summary() for s in sent.sends)
    if last.paused:
        return FiringReport("paused", f"{summary}: {last.paused}", last.number)
    if not last.finished and not last.with_others:
        return FiringReport("deferred", summary, last.number)
    return FiringReport("done", summary, last.number)


__all__ = [
    "move_item",
    "SEND_AT_PREFIX",
    "cancel_send",
    "fire_due_sends",
    "schedule_send",
    "scheduled_sends",
    "SubscribersAdded",
    "add_subscriber",
    "export_subscribers",
    "import_subscribers",
    "known_language",
    "suppress_subscriber",
    "notify_editors",
    "edit_draft",
    "draft_view",
    "choose_item",
    "approve_draft",
    "DraftView",
    "DeliveryLog",
    "DryRun",
    "FiringReport",
    "Frozen",
    "ListSendReport",
    "PublishReport",
    "Subscribed",
    "collect_and_publish",
    "confirm",
    "deliver_mail",
    "delivery_log",
    "confirm_new_subscribers",
    "recent_firings",
    "subscribe",
    "unsubscribe",
    "dry_run",
    "fire_schedule",
    "freeze_next",
    "next_draft",
    "send_and_publish",
    "send_list",
    "send_test",
    "write_feeds_and_archive",
]

"""Sending an issue: the outbox ledger, crash-safe.

The rules that make a crash harmless:

1. When an issue starts sending, one ``pending`` row per active subscriber is
   written, and the issue becomes ``sending``, in one transaction.
2. Rows are *claimed* (``sending``) and the claim committed before their
   messages are handed to the sender; each outcome is committed as soon as the
   sender returns it.
3. A run that starts and finds rows still ``sending`` knows the run that
   claimed them died: they become ``uncertain`` (they may have gone). They are
   listed, and only ``--resend-uncertain`` sends them again. At most one
   sender batch (the messages in flight at once) can be uncertain.

So nobody who was sent gets the issue again, and nobody is skipped in silence.
Temporary failures are ``deferred`` and retried with exponential backoff and
jitter, up to ``max_retries``; after too many failures in a row the send pauses
instead of burning through the list.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from pipeline.addresses import ascii_domain
from pipeline.config import ListSettings, Settings
from pipeline.delivery import Message, Sender, SendResult
from pipeline.delivery.signing import signer_for
from pipeline.errors import DeliveryError, FlygbladError, StoreError
from pipeline.issues import rendered_of
from pipeline.render import RecipientValues, Rendered
from pipeline.render.mime import MessageTemplate, mailbox
from pipeline.render.templates import strings
from pipeline.store import Store, worker_name
from pipeline.store.base import database_trouble
from pipeline.tokens import Tokens, tokens_for
from pipeline.types import Issue, LedgerUpdate, OutboxRow

log = logging.getLogger(__name__)

#: Called after each batch with (rows done so far, rows in all).
Progress = Callable[[int, int], None]
FINAL = ("sent", "bounced", "failed", "uncertain")


@dataclass
class SendReport:
    """What a send did, and where the issue's ledger stands."""

    list: str
    number: int
    counts: dict[str, int] = field(default_factory=dict)
    uncertain: builtins.list[str] = field(default_factory=builtins.list)
    paused: str | None = None
    finished: bool = False
    next_attempt: datetime | None = None  # when the earliest deferred recipient is due again
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the send

    @property
    def with_others(self) -> bool:
        """Nothing is left for this run: the rows still open are in flight with another sender."""
        c = self.counts
        return (
            not self.finished
            and not self.paused
            and c.get("sending", 0) > 0
            and not c.get("pending", 0)
            and not c.get("deferred", 0)
        )

    def summary(self) -> str:
        """``sent: issue 3 of 'nyhetsbrev': 1998 sent, 0 deferred, 1 bounced, 0 failed, 1 uncertain (done)``."""
        c = self.counts
        parts = ", ".join(f"{c.get(s, 0)} {s}" for s in ("sent", "deferred", "bounced", "failed", "uncertain"))
        pending = c.get("pending", 0) + c.get("sending", 0)
        if self.finished:
            state = "done"
        elif self.with_others:
            state = f"done here; {c.get('sending', 0)} in flight with another sender"
        elif self.paused or pending:
            state = f"stopped, {pending} not yet sent"
        elif not c.get("deferred"):
            state = "nothing left for this run"
        else:
            due = f" from {self.next_attempt:%H:%M} UTC" if self.next_attempt else ""
            state = f"deferred recipients are retried by a later send{due}"
        return f"send: issue {self.number} of {self.list!r}: {parts} ({state})"


@dataclass
class _Version:
    """One language's rendering of an issue, ready for substitution."""

    rendered: Rendered
    strings: dict[str, str]
    subject: str
    shared_template: tuple[str, str]  # one object per language: APIs batch by it
    template: MessageTemplate


class Outbox:
    """Builds each recipient's message of one issue: the template once (per language), then substitution."""

    def __init__(
        self,
        settings: Settings,
        mailing_list: ListSettings,
        issue: Issue,
        *,
        date: datetime,
        subject_prefix: str = "",
        tokens: Tokens | None = None,
        sign: bool = True,
        versions: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        self.list = mailing_list
        self.issue = issue
        self.tokens = tokens or tokens_for(settings)
        base = settings.web_base_url
        self.view_url = f"{base}/archive/{mailing_list.name}/{issue.number}"
        self.unsubscribe_base = f"{base}/unsubscribe/"
        domain = mailing_list.from_.rpartition("@")[2].rstrip(">").strip() or "localhost"
        self.domain = domain
        self.list_id = f"{mailing_list.title} <{mailing_list.name}.{domain}>"
        self.date = date
        self.subject_prefix = subject_prefix
        self.envelope_from = mailing_list.from_.rpartition("<")[2].rstrip(">").strip()
        self.mailto = settings.web.unsubscribe_mailto
        self.signer = signer_for(settings) if sign else None
        self._other_versions = dict(versions or {})
        main = self._version_of(rendered_of(issue))
        self._versions: dict[str | None, _Version] = {None: main, main.rendered.language: main}
        self.rendered, self.template, self.subject = main.rendered, main.template, main.subject
        self.shared_template, self.strings = main.shared_template, main.strings

    def _version_of(self, rendered: Rendered) -> _Version:
        subject = self.subject_prefix + rendered.subject
        template = MessageTemplate(
            rendered,
            sender=self.list.from_,
            reply_to=self.list.reply_to,
            date=self.date,
            subject=subject,
            headers=[("List-Id", self.list_id), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")],
        )
        texts = strings(self.settings.templates_dir, rendered.language)
        return _Version(rendered, texts, subject, (rendered.html, rendered.text), template)

    def version(self, language: str | None) -> _Version:
        """The rendering a subscriber who reads *language* gets: theirs if the issue has it, else the list's."""
        found = self._versions.get(language)
        if found is None:
            stored = self._other_versions.get(language or "")
            if stored is None:
                found = self._versions[None]
            else:
                main = self._versions[None].rendered
                found = self._version_of(
                    Rendered(
                        stored["subject"],
                        stored["preheader"],
                        stored["html"],
                        stored["text"],
                        main.nonce,
                        language or "",
                    )
                )
            self._versions[language] = found
        return found

    def message_id(self, subscriber_id: int) -> str:
        """Deterministic from (issue, subscriber): a resend carries the same Message-ID."""
        return f"{self.issue.list}.{self.issue.number}.{subscriber_id}.{self.issue.nonce[:8]}@{self.domain}"

    def message(
        self, subscriber_id: int, email: str, name: str | None, language: str | None = None, *, mime: bool = True
    ) -> Message:
        """One subscriber's message, in their language when the issue was rendered in it.

        ``mime=False``: without the complete MIME message (``data`` empty), for a sender that posts the
        parts to an API and never reads it; building and signing it was a fifth of such a send's CPU.
        """
        version = self.version(language)
        email = ascii_domain(email)  # stored before addresses were normalised at the door
        unsubscribe_url = self.unsubscribe_base + self.tokens.unsubscribe(subscriber_id, self.list.name)
        texts = version.strings
        values = RecipientValues(
            greeting=texts["greeting_named"].format(name=name) if name else texts["greeting"],
            name=name or "",
            email=email,
            view_url=self.view_url,
            unsubscribe_url=unsubscribe_url,
        )
        targets = [f"<{unsubscribe_url}>"]
        if self.mailto:
            address = self.mailto.rpartition("<")[2].rstrip(">").strip()
            targets.append(f"<mailto:{address}?subject=unsubscribe>")
        list_unsubscribe = ("List-Unsubscribe", ", ".join(targets))
        message_id = self.message_id(subscriber_id)
        to = mailbox(email, name)
        data = b""
        if mime:
            data = version.template.message(
                to=to, message_id=message_id, values=values, extra_headers=[list_unsubscribe]
            )
            if self.signer is not None:
                data = self.signer.sign(data)
        rendered = version.rendered
        return Message(
            key=(self.issue.id, subscriber_id),
            sender=self.envelope_from,
            recipient=email,
            to=to,
            message_id=message_id,
            data=data,
            transparent=mime,  # the template's bytes, a DKIM-Signature (folded lines begin with a space) before them
            subject=version.subject,
            from_header=self.list.from_,
            headers=(list_unsubscribe, ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")),
            list_headers=(("List-Id", self.list_id),),
            reply_to=self.list.reply_to,
            parts=lambda: rendered.fill(values),
            template=version.shared_template,
            nonce=rendered.nonce,
            values=tuple(values.as_dict().items()),
            name=name,
        )


def _backoff(settings: Settings, attempts: int, retry_after: float | None, jitter: float = 1.0) -> timedelta:
    base = settings.sender.retry_base_seconds * (2 ** max(0, attempts - 1)) * jitter
    return timedelta(seconds=max(base, retry_after or 0))


def _outcome(
    settings: Settings, row: OutboxRow, result: SendResult, now: datetime, paused: bool, jitter: float = 1.0
) -> LedgerUpdate:
    status = result.status
    reply = result.reply
    next_attempt = None
    if status == "deferred":
        if row.attempts > settings.sender.max_retries and not paused:
            status, reply = "failed", f"gave up after {row.attempts} attempts: {reply}"
        else:
            next_attempt = now + _backoff(settings, row.attempts, result.retry_after, jitter)
    elif status == "rejected":
        status = "failed"
    return LedgerUpdate(row.subscriber_id, status, result.message.message_id, result.provider_id, reply, next_attempt)


def _messages(outbox: Outbox, rows: list[OutboxRow], mime: bool = True) -> tuple[list[Message], list[LedgerUpdate]]:
    """The rows' messages; a row whose message cannot be built fails alone, with the reason."""
    messages, failed = [], []
    for row in rows:
        try:
            messages.append(outbox.message(row.subscriber_id, row.email, row.name, row.language, mime=mime))
        except (FlygbladError, ValueError, UnicodeError) as err:
            reason = f"cannot build the message for {row.email!r}: {err}"
            failed.append(LedgerUpdate(row.subscriber_id, "failed", outbox.message_id(row.subscriber_id), None, reason))
    return messages, failed


def _hand_over(sender: Sender, messages: list[Message]) -> list[SendResult]:
    """The sender's results, one per message, whatever the sender does.

    A sender that raises our own DeliveryError defers the batch (nothing went);
    one that fails in a way nobody planned for may have sent some of it, so the
    batch is ``uncertain``: listed, never sent again by itself.
    """
    try:
        results = sender.send(messages)
    except DeliveryError as err:
        return [SendResult(m, "deferred", reply=str(err)) for m in messages]
    except Exception as err:  # a third-party or buggy sender: the run goes on, and says what happened
        log.exception("sender %r failed on a batch of %d", sender.name, len(messages))
        return [SendResult(m, "uncertain", reply=f"the sender failed: {type(err).__name__}: {err}") for m in messages]
    if len(results) != len(messages):
        reason = f"sender {sender.name!r} returned {len(results)} results for {len(messages)} messages"
        return [SendResult(m, "uncertain", reply=reason) for m in messages]
    return results


#: This many 5xx refusals at RCPT with no message accepted in between are the relay's verdict on the
#: sender (``554 Relay access denied``), not on the recipients: the send pauses and nobody is suppressed.
RELAY_VERDICT = 10


@dataclass
class _LoopState:
    """What the send workers share: progress, the failure streak, held bounces, and whether to stop."""

    done: int = 0
    failures_in_row: int = 0
    paused: str | None = None
    stop: bool = False
    held: list[LedgerUpdate] = field(default_factory=list)  # bounces not yet known to be the recipients'
    interrupted: int | None = None  # the signal that stopped the send
    lock: threading.Lock = field(default_factory=threading.Lock)

    def database_failed(self, words: str) -> None:
        """The ledger could not be written: claim nothing more; the next run resumes."""
        with self.lock:
            self.paused = f"paused: {words}; run send again to resume"
            self.stop = True

    def interrupt(self, signum: int) -> None:
        """Ctrl-C or SIGTERM: claim nothing more; what is in flight finishes and is recorded."""
        name = signal.Signals(signum).name
        self.interrupted = signum
        self.paused = f"stopped by {name}: the messages in flight were finished; run send again to resume"
        self.stop = True

    def judge(
        self, outcomes: list[LedgerUpdate], settings: Settings, sender: Sender, total: int, progress: Progress | None
    ) -> tuple[list[LedgerUpdate], list[int], bool]:
        """What to record, which rows to give back to the queue, and whether to stop claiming.

        A bounce is held until the relay accepts a message (then it was the
        recipient's) or :data:`RELAY_VERDICT` bounces come in a row (then it was
        the relay's word on us: the held rows go back, nobody is suppressed).
        Deferred messages of a batch during which the sender paused go back too.
        """
        with self.lock:
            record: list[LedgerUpdate] = []
            release: list[int] = []
            for o in outcomes:
                if o.status == "bounced":
                    self.held.append(o)
                    continue
                if sender.fatal and o.status == "deferred":
                    release.append(o.subscriber_id)
                    continue
                if o.status == "sent" and self.held:
                    record += self.held  # the relay takes mail: those refusals were about the recipients
                    self.held = []
                record.append(o)
            # Failures in a row are counted by batch: one refused request of 500 is one failure, not 500.
            if any(o.status == "sent" for o in record):
                self.failures_in_row = 0
            elif any(o.status in ("deferred", "failed", "uncertain") for o in record):
                self.failures_in_row += 1
            if len(self.held) >= RELAY_VERDICT and not self.stop:
                last = self.held[-1].reply
                self.paused = (
                    f"paused: the relay refused {len(self.held)} recipients in a row (last: {last}); "
                    "that is its word on the sender or the message, so nobody was suppressed. "
                    "Fix it, then run send again to resume"
                )
                self.stop = True
            if self.stop and self.held:
                release += [o.subscriber_id for o in self.held]
                self.held = []
            self.done += sum(1 for o in record if o.status in FINAL)
            if progress:
                progress(self.done, total)
            if sender.fatal and not self.stop:
                self.paused, self.stop = f"paused: {sender.fatal}; run send again to resume", True
            elif self.failures_in_row >= settings.sender.max_consecutive_failures and not self.stop:
                self.paused = (
                    f"paused after {self.failures_in_row} failures in a row "
                    f"(last: {record[-1].reply if record else 'no answer'}); "
                    "run send again to resume"
                )
                self.stop = True
            return record, release, self.stop

    def leftover(self) -> list[LedgerUpdate]:
        """Bounces still held when the run ends without a verdict: they were the recipients'."""
        with self.lock:
            held, self.held = self.held, []
            return held


@contextlib.contextmanager
def _stop_on_signals(state: _LoopState) -> Iterator[None]:
    """SIGINT and SIGTERM stop the send gracefully (a second one stops at once, as usual).

    Only the main thread can take signals; a send in a scheduler thread is stopped by its process.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: object) -> None:
        if state.interrupted is not None:  # the second time: as if flygblad had no handler
            old = previous[signal.Signals(signum)]
            signal.signal(signum, old if callable(old) else signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        state.interrupt(signum)
        log.warning("%s: finishing the messages in flight, then stopping", signal.Signals(signum).name)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def send_issue(
    settings: Settings,
    store: Store,
    issue: Issue,
    sender: Sender,
    *,
    resend_uncertain: bool = False,
    progress: Progress | None = None,
    wait: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Send (or resume sending) a frozen issue to its list through *sender*."""
    with sending_lock(store):
        return _send_issue(
            settings,
            store,
            issue,
            sender,
            resend_uncertain=resend_uncertain,
            progress=progress,
            wait=wait,
            clock=clock,
            sleep=sleep,
        )


class SenderBusy(DeliveryError):
    """Another process is sending from this SQLite database (SQLite allows one sender at a time)."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        super().__init__(
            f"another flygblad send ({holder}) is sending from this SQLite database; SQLite allows one sender "
            "at a time (for several, use PostgreSQL)"
        )


@contextlib.contextmanager
def sending_lock(store: Store) -> Iterator[None]:
    """On SQLite, one sender at a time: a second one is refused with a clear message instead of racing.

    (PostgreSQL needs no such lock: senders claim rows with FOR UPDATE SKIP LOCKED.)
    """
    database = store.engine.url.database if store.engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    path = Path(f"{database}.send.lock")
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SenderBusy(holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _send_issue(
    settings: Settings,
    store: Store,
    issue: Issue,
    sender: Sender,
    *,
    resend_uncertain: bool,
    progress: Progress | None,
    wait: bool,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None],
) -> SendReport:
    mailing_list = settings.mailing_list(issue.list)
    report = SendReport(issue.list, issue.number)
    store.start_outbox(issue.id, issue.list, now=clock())
    store.set_paused(issue.id, None)
    abandoned = store.abandon_claims(issue.id, now=clock(), lease_seconds=settings.sender.claim_lease_seconds)
    if abandoned:
        log.warning("%d messages of issue %d were in flight when a run stopped: now uncertain", abandoned, issue.number)
    if resend_uncertain:
        store.requeue_uncertain(issue.id, now=clock())
    outbox = Outbox(settings, mailing_list, issue, date=clock(), versions=store.issue_versions(issue.id))
    counts = store.outbox_counts(issue.id)
    total = sum(counts.values())
    state = _LoopState(done=sum(v for k, v in counts.items() if k in FINAL))
    interval = 1.0 / settings.sender.rate_per_second if settings.sender.rate_per_second else 0.0
    workers = max(1, getattr(sender, "concurrency", 1))

    def work(worker: str) -> None:
        try:
            with store.worker_connection() as connection:
                work_on(worker, connection)
        except (StoreError, SQLAlchemyError) as err:
            # Locked past its busy timeout, or the server went away: stop, and say so. Rows whose
            # outcome could not be written stay claimed; the next run lists them as uncertain.
            state.database_failed(str(err) if isinstance(err, StoreError) else database_trouble(err))

    def work_on(worker: str, connection: Connection) -> None:
        rows = store.claim(issue.id, sender.batch_size, now=clock(), worker=worker, connection=connection)
        while not state.stop:
            if not rows:
                due = store.next_due(issue.id)
                if due is None or not wait:
                    return
                sleep(max(0.05, min((due - clock()).total_seconds(), 300.0)))
                rows = store.claim(issue.id, sender.batch_size, now=clock(), worker=worker, connection=connection)
                continue
            started = time.monotonic()
            messages, unbuildable = _messages(outbox, rows, sender.wants_mime)
            results = _hand_over(sender, messages) if messages else []
            by_key = {r.subscriber_id: r for r in rows}
            now = clock()
            # One jitter for the batch: a batch deferred together is due together, and is retried as one
            # request instead of trickling back one row at a time.
            jitter = random.uniform(0.8, 1.2)
            paused = sender.fatal is not None
            outcomes = unbuildable + [
                _outcome(settings, by_key[res.message.key[1]], res, now, paused, jitter) for res in results
            ]
            record, release, stopping = state.judge(outcomes, settings, sender, total, progress)
            if release:
                store.release(issue.id, release, now=now)
            # The outcomes and the next claim: one commit per message (none claimed when stopping).
            rows = store.record_and_claim(
                issue.id, record, 0 if stopping else sender.batch_size, now=now, worker=worker, connection=connection
            )
            if interval:
                remaining = interval * len(messages) * workers - (time.monotonic() - started)
                if remaining > 0:
                    sleep(remaining)
        store.release(issue.id, [r.subscriber_id for r in rows])  # claimed, never sent: back to pending

    with sender, _stop_on_signals(state):
        if workers == 1:
            work(worker_name(0))
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send") as pool:
                for future in [pool.submit(work, worker_name(n)) for n in range(workers)]:
                    future.result()
    leftover = state.leftover()
    try:
        if state.paused:
            store.release(issue.id, [o.subscriber_id for o in leftover], now=clock())
        else:
            store.record(issue.id, leftover, now=clock())
        if state.paused:
            store.set_paused(issue.id, state.paused)
    except StoreError as err:  # still locked or gone: what was not written is found by the next run
        if state.paused is None:
            state.database_failed(str(err))
    report.paused = state.paused
    report.interrupted = state.interrupted
    return finish_report(store, issue, report)


__all__ = ["Outbox", "SendReport", "SenderBusy", "send_issue"]


def run_worker(config: str, list_name: str, number: int, wait: bool = True) -> None:
    """One extra sending process for ``send --workers N``: same issue, same outbox (PostgreSQL)."""
    from pipeline.config import load_settings
    from pipeline.delivery import sender_for

    settings = load_settings(config)
    with Store.open(settings.storage_url, migrate=False) as store:  # the parent brought the schema up to date
        issue = store.issue(list_name, number)
        if issue is not None and issue.status == "sending":
            send_issue(settings, store, issue, sender_for(settings), wait=wait)


def finish_report(store: Store, issue: Issue, report: SendReport) -> SendReport:
    """Bring a report up to date with the ledger (after several workers are done)."""
    report.finished = report.paused is None and store.finish_issue(issue.id)
    report.counts = store.outbox_counts(issue.id)
    if (
        not report.finished
        and report.paused is None
        and not any(report.counts.get(s) for s in ("pending", "sending", "deferred"))
    ):
        # Another sender on the same outbox finished its last rows between the two reads: done after all.
        report.finished = store.finish_issue(issue.id)
    report.uncertain = [r.email for r in store.outbox_rows(issue.id, "uncertain")]
    report.next_attempt = None if report.finished else store.next_due(issue.id)
    return report

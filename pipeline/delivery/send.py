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

import contextlib
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
from sqlalchemy import Connection

from pipeline.config import DKIM_HEADERS, ListSettings, Settings
from pipeline.delivery import Message, Sender, SendResult
from pipeline.errors import ConfigError, DeliveryError
from pipeline.issues import rendered_of
from pipeline.render import RecipientValues
from pipeline.render.mime import MessageTemplate, mailbox
from pipeline.render.templates import strings
from pipeline.store import Issue, LedgerUpdate, OutboxRow, Store, worker_name
from pipeline.tokens import Tokens, load_secret

log = logging.getLogger(__name__)

#: Called after each batch with (rows done so far, rows in all).
Progress = Callable[[int, int], None]
FINAL = ("sent", "bounced", "failed")


@dataclass
class SendReport:
    """What a send did, and where the issue's ledger stands."""

    list: str
    number: int
    counts: dict[str, int] = field(default_factory=dict)
    uncertain: list[str] = field(default_factory=list)
    paused: str | None = None
    finished: bool = False

    def summary(self) -> str:
        """``sent: issue 3 of 'nyhetsbrev': 1998 sent, 0 deferred, 1 bounced, 0 failed, 1 uncertain``."""
        c = self.counts
        parts = ", ".join(f"{c.get(s, 0)} {s}" for s in ("sent", "deferred", "bounced", "failed", "uncertain"))
        pending = c.get("pending", 0) + c.get("sending", 0)
        state = "done" if self.finished else f"stopped, {pending} not yet sent"
        return f"send: issue {self.number} of {self.list!r}: {parts} ({state})"


class Outbox:
    """Builds each recipient's message of one issue: the template once, then substitution."""

    def __init__(
        self, settings: Settings, mailing_list: ListSettings, issue: Issue, *, date: datetime, subject_prefix: str = ""
    ) -> None:
        self.settings = settings
        self.list = mailing_list
        self.issue = issue
        self.rendered = rendered_of(issue)
        self.tokens = Tokens(load_secret(settings))
        self.strings = strings(settings.templates_dir, self.rendered.language)
        base = settings.web_base_url
        self.view_url = f"{base}/archive/{mailing_list.name}/{issue.number}"
        self.unsubscribe_base = f"{base}/unsubscribe/"
        domain = mailing_list.from_.rpartition("@")[2].rstrip(">").strip() or "localhost"
        self.domain = domain
        self.list_id = f"{mailing_list.title} <{mailing_list.name}.{domain}>"
        self.subject = subject_prefix + self.rendered.subject
        self.shared_template = (self.rendered.html, self.rendered.text)  # one object: APIs batch by it
        self.template = MessageTemplate(
            self.rendered,
            sender=mailing_list.from_,
            reply_to=mailing_list.reply_to,
            date=date,
            subject=self.subject,
            headers=[("List-Id", self.list_id), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")],
        )
        self.envelope_from = mailing_list.from_.rpartition("<")[2].rstrip(">").strip()
        self.mailto = settings.web.unsubscribe_mailto
        self.dkim = settings.dkim
        self.dkim_key = b""
        if self.dkim is not None:
            path = settings.resolve(self.dkim.private_key_path)
            try:
                self.dkim_key = path.read_bytes()
            except OSError as err:
                raise ConfigError(
                    f"cannot read the DKIM private key {path}: {err.strerror}",
                    path=str(settings.path),
                    key="dkim.private_key_path",
                ) from err

    def message_id(self, subscriber_id: int) -> str:
        """Deterministic from (issue, subscriber): a resend carries the same Message-ID."""
        return f"{self.issue.list}.{self.issue.number}.{subscriber_id}.{self.issue.nonce[:8]}@{self.domain}"

    def sign(self, data: bytes) -> bytes:
        """Prepend a DKIM-Signature (relaxed/relaxed) covering the headers that matter to receivers."""
        assert self.dkim is not None
        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if b":" in line
        }
        headers = [h.lower().encode() for h in DKIM_HEADERS if h.lower().encode() in present]
        try:
            signature = dkim.sign(
                data,
                self.dkim.selector.encode(),
                self.dkim.domain.encode(),
                self.dkim_key,
                include_headers=headers,
                canonicalize=(b"relaxed", b"relaxed"),
            )
        except dkim.DKIMException as err:
            raise ConfigError(f"DKIM signing failed: {err}", path=str(self.settings.path), key="dkim") from err
        return signature + data

    def message(self, subscriber_id: int, email: str, name: str | None) -> Message:
        """One subscriber's message."""
        unsubscribe_url = self.unsubscribe_base + self.tokens.unsubscribe(subscriber_id, self.list.name)
        values = RecipientValues(
            greeting=self.strings["greeting_named"].format(name=name) if name else self.strings["greeting"],
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
        data = self.template.message(to=to, message_id=message_id, values=values, extra_headers=[list_unsubscribe])
        if self.dkim is not None:
            data = self.sign(data)
        return Message(
            key=(self.issue.id, subscriber_id),
            sender=self.envelope_from,
            recipient=email,
            to=to,
            message_id=message_id,
            data=data,
            subject=self.subject,
            from_header=self.list.from_,
            headers=(list_unsubscribe, ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")),
            list_headers=(("List-Id", self.list_id),),
            reply_to=self.list.reply_to,
            parts=lambda: self.rendered.fill(values),
            template=self.shared_template,
            nonce=self.rendered.nonce,
            values=tuple(values.as_dict().items()),
            name=name,
        )


def _backoff(settings: Settings, attempts: int, retry_after: float | None) -> timedelta:
    base = settings.sender.retry_base_seconds * (2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)
    return timedelta(seconds=max(base, retry_after or 0))


def _outcome(settings: Settings, row: OutboxRow, result: SendResult, now: datetime) -> LedgerUpdate:
    status = result.status
    reply = result.reply
    next_attempt = None
    if status == "deferred":
        if row.attempts > settings.sender.max_retries:
            status, reply = "failed", f"gave up after {row.attempts} attempts: {reply}"
        else:
            next_attempt = now + _backoff(settings, row.attempts, result.retry_after)
    elif status == "rejected":
        status = "failed"
    return LedgerUpdate(row.subscriber_id, status, result.message.message_id, result.provider_id, reply, next_attempt)


@dataclass
class _LoopState:
    """What the send workers share: progress, the failure streak, and whether to stop."""

    done: int = 0
    failures_in_row: int = 0
    paused: str | None = None
    stop: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(
        self, outcomes: list[LedgerUpdate], settings: Settings, sender: Sender, total: int, progress: Progress | None
    ) -> None:
        with self.lock:
            for o in outcomes:
                self.failures_in_row = 0 if o.status in ("sent", "bounced") else self.failures_in_row + 1
            self.done += sum(1 for o in outcomes if o.status in FINAL)
            if progress:
                progress(self.done, total)
            if sender.fatal and not self.stop:
                self.paused, self.stop = f"stopped: {sender.fatal}", True
            elif self.failures_in_row >= settings.sender.max_consecutive_failures and not self.stop:
                self.paused = (
                    f"paused after {self.failures_in_row} failures in a row (last: {outcomes[-1].reply}); "
                    "run send again to resume"
                )
                self.stop = True
            return self.stop


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
            raise DeliveryError(
                f"another flygblad send ({holder}) is sending from this SQLite database; SQLite allows one sender "
                "at a time (for several, use PostgreSQL)"
            ) from None
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
    abandoned = store.abandon_claims(issue.id, now=clock(), lease_seconds=settings.sender.claim_lease_seconds)
    if abandoned:
        log.warning("%d messages of issue %d were in flight when a run stopped: now uncertain", abandoned, issue.number)
    if resend_uncertain:
        store.requeue_uncertain(issue.id, now=clock())
    outbox = Outbox(settings, mailing_list, issue, date=clock())
    counts = store.outbox_counts(issue.id)
    total = sum(counts.values())
    state = _LoopState(done=sum(v for k, v in counts.items() if k in FINAL))
    interval = 1.0 / settings.sender.rate_per_second if settings.sender.rate_per_second else 0.0
    workers = max(1, getattr(sender, "concurrency", 1))

    def work(worker: str) -> None:
        with store.worker_connection() as connection:
            work_on(worker, connection)

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
            messages = [outbox.message(r.subscriber_id, r.email, r.name) for r in rows]
            try:
                results = sender.send(messages)
            except DeliveryError as err:
                results = [SendResult(m, "deferred", reply=str(err)) for m in messages]
            if len(results) != len(messages):
                raise DeliveryError(
                    f"sender {sender.name!r} returned {len(results)} results for {len(messages)} messages"
                )
            by_key = {r.subscriber_id: r for r in rows}
            now = clock()
            outcomes = [_outcome(settings, by_key[res.message.key[1]], res, now) for res in results]
            stopping = state.count(outcomes, settings, sender, total, progress)
            # The outcomes and the next claim: one commit per message (none claimed when stopping).
            rows = store.record_and_claim(
                issue.id, outcomes, 0 if stopping else sender.batch_size, now=now, worker=worker, connection=connection
            )
            if interval:
                remaining = interval * len(messages) * workers - (time.monotonic() - started)
                if remaining > 0:
                    sleep(remaining)
        store.release(issue.id, [r.subscriber_id for r in rows])  # claimed, never sent: back to pending

    with sender:
        if workers == 1:
            work(worker_name(0))
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send") as pool:
                for future in [pool.submit(work, worker_name(n)) for n in range(workers)]:
                    future.result()
    report.paused = state.paused
    report.finished = report.paused is None and store.finish_issue(issue.id)
    report.counts = store.outbox_counts(issue.id)
    report.uncertain = [r.email for r in store.outbox_rows(issue.id, "uncertain")]
    return report


__all__ = ["Outbox", "SendReport", "send_issue"]


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
    report.uncertain = [r.email for r in store.outbox_rows(issue.id, "uncertain")]
    return report

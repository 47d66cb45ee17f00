"""Transactional mail (the double opt-in confirmation): queued in the store, then sent like an issue.

The web side only queues (:meth:`~pipeline.store.Store.enqueue_mail`); this
module builds each message (the list's language, RFC 2047 headers, a
deterministic Message-ID, DKIM when configured) and hands it to the configured
sender, recording every outcome: a 4xx or a relay that is down defers the
message with backoff, a 5xx fails it, a drop after the message went makes it
``uncertain``. So a confirmation is never lost to a relay that was down for a
minute, and never sent twice.
"""

from __future__ import annotations

import html as html_lib
import logging
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

from pipeline.addresses import ascii_domain
from pipeline.config import Settings
from pipeline.delivery import Message, Sender, SendResult, sender_for
from pipeline.delivery.signing import signer_for
from pipeline.errors import FlygbladError
from pipeline.render.mime import mailbox
from pipeline.render.templates import strings
from pipeline.store import Store, worker_name
from pipeline.tokens import tokens_for
from pipeline.types import QueuedMail

log = logging.getLogger(__name__)


@dataclass
class MailReport:
    """What one pass over the queue did."""

    counts: dict[str, int] = field(default_factory=dict)
    paused: str | None = None

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def summary(self) -> str:
        """``confirmations: 2 sent, 1 deferred``."""
        return "confirmations: " + ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))


def _html(text: str) -> str:
    """The plain text as simple HTML, its URLs as links (for senders that want both parts)."""
    escaped = html_lib.escape(text)
    linked = re.sub(r"(https?://\S+)", r'<a href="\1">\1</a>', escaped)
    return "".join(f"<p>{p.replace(chr(10), '<br>')}</p>" for p in linked.split("\n\n"))


class Confirmations:
    """Builds the confirmation message of one queued row."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = tokens_for(settings)
        self.signer = signer_for(settings)

    def message(self, row: QueuedMail) -> Message:
        settings = self.settings
        mailing_list = settings.mailing_list(row.list)
        t = strings(settings.templates_dir, settings.list_language(mailing_list))
        url = f"{settings.web_base_url}/confirm/{self.tokens.confirm(row.subscriber_id, mailing_list.name)}"
        domain = mailing_list.from_.rpartition("@")[2].rstrip(">").strip() or "localhost"
        message_id = f"confirm.{row.id}.{row.subscriber_id}@{domain}"
        email = ascii_domain(row.email)
        text = t["confirm_mail"].format(list=mailing_list.title, url=url)
        subject = t["confirm_subject"].format(list=mailing_list.title)
        message = EmailMessage()
        message["From"] = mailing_list.from_
        message["To"] = mailbox(email, row.name)
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = f"<{message_id}>"
        message["Auto-Submitted"] = "auto-generated"
        if mailing_list.reply_to:
            message["Reply-To"] = mailing_list.reply_to
        message.set_content(text)
        data = message.as_bytes(policy=policy.SMTP if email.isascii() else policy.SMTPUTF8)
        if self.signer is not None:
            data = self.signer.sign(data)
        html = _html(text)
        return Message(
            key=(0, row.subscriber_id),
            sender=mailing_list.from_.rpartition("<")[2].rstrip(">").strip(),
            recipient=email,
            to=mailbox(email, row.name),
            message_id=message_id,
            data=data,
            subject=subject,
            from_header=mailing_list.from_,
            reply_to=mailing_list.reply_to,
            parts=lambda: (html, text),
            template=(html, text),
            name=row.name,
        )


def _retry_at(settings: Settings, attempts: int, retry_after: float | None) -> datetime:
    base = settings.sender.retry_base_seconds * (2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)
    return datetime.now(UTC) + timedelta(seconds=max(base, retry_after or 0))


def deliver_queue(settings: Settings, store: Store, *, sender: Sender | None = None, limit: int = 100) -> MailReport:
    """Send what is due in the transactional queue; every outcome recorded, nothing lost or sent twice."""
    report = MailReport()
    worker = worker_name(0)
    rows = store.claim_mail(limit, worker, lease_seconds=settings.sender.claim_lease_seconds)
    if not rows:
        return report
    builder = Confirmations(settings)
    sender = sender or sender_for(settings)
    with sender:
        for row in rows:
            try:
                message = builder.message(row)
            except (FlygbladError, ValueError, UnicodeError) as err:
                store.record_mail(row.id, "failed", reply=f"cannot build the message: {err}")
                report.add("failed")
                continue
            if sender.fatal:  # the sender cannot work now: the rest wait, untouched
                store.record_mail(row.id, "pending", reply=sender.fatal)
                report.add("pending")
                continue
            result = _one(sender, message)
            status, next_attempt = result.status, None
            if status == "deferred" and sender.fatal:
                status = "pending"
            elif status == "deferred":
                if row.attempts > settings.sender.max_retries:
                    status = "failed"
                else:
                    next_attempt = _retry_at(settings, row.attempts, result.retry_after)
            elif status in ("bounced", "rejected"):
                status = "failed"
            store.record_mail(
                row.id, status, reply=result.reply, message_id=message.message_id, next_attempt=next_attempt
            )
            report.add(status)
            if status != "sent":
                log.warning("confirmation to %s: %s %s", row.email, status, result.reply)
    report.paused = sender.fatal
    return report


def _one(sender: Sender, message: Message) -> SendResult:
    try:
        [result] = sender.send([message])
    except FlygbladError as err:
        return SendResult(message, "deferred", reply=str(err))
    except Exception as err:  # a sender that fails in a way nobody planned for may have sent it
        log.exception("sender %r failed on a confirmation", sender.name)
        return SendResult(message, "uncertain", reply=f"the sender failed: {type(err).__name__}: {err}")
    return result


__all__ = ["Confirmations", "MailReport", "deliver_queue"]

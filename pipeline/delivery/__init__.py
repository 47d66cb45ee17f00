"""Delivery: senders, and the send loop that keeps the outbox ledger.

Interface of this stage:

* :class:`Message`: one recipient's complete message (bytes), plus what an HTTP
  API that takes no raw MIME needs (subject, HTML, text, headers);
* :class:`SendResult`: what happened to one message, from a fixed set of
  statuses, with the provider's message id and reply;
* :class:`Sender`: the protocol every sender follows (Django's email backends,
  django-anymail's per-recipient results): open and close (a context manager),
  and ``send(messages) -> list[SendResult]``, one result per message. A sender
  closes only what it opened;
* :func:`sender_for` picks the sender named by ``[sender] kind``: built in
  (``file``, ``memory``, ``smtp``, ``postmark``, ``sendgrid``, ``mailgun``) or
  found through the entry-point group ``flygblad.senders``.

The send loop itself is :mod:`pipeline.delivery.send`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Literal

from pipeline.config import SenderSettings, Settings
from pipeline.errors import ConfigError

#: ``uncertain``: the message may or may not have gone (a drop after the end of DATA, an API timeout
#: after the request went out). It is never sent again by itself.
ResultStatus = Literal["sent", "deferred", "bounced", "rejected", "failed", "uncertain"]
RESULT_STATUSES: tuple[ResultStatus, ...] = ("sent", "deferred", "bounced", "rejected", "failed", "uncertain")
ENTRY_POINT_GROUP = "flygblad.senders"
BUILT_IN = {
    "file": "pipeline.delivery.file:FileSender",
    "memory": "pipeline.delivery.memory:MemorySender",
    "smtp": "pipeline.delivery.smtp:SmtpSender",
    "postmark": "pipeline.delivery.postmark:PostmarkSender",
    "sendgrid": "pipeline.delivery.sendgrid:SendGridSender",
    "mailgun": "pipeline.delivery.mailgun:MailgunSender",
}


@dataclass(frozen=True)
class Message:
    """One recipient's message. ``key`` names its outbox row: (issue id, subscriber id)."""

    key: tuple[int, int]
    sender: str  # the envelope sender (bounce address)
    recipient: str  # the envelope recipient
    to: str  # the To header ("Name <address>", RFC 2047-encoded)
    message_id: str  # without angle brackets
    data: bytes  # the complete message, CRLF line ends
    # data needs no dot-stuffing and ends with CRLF: no line begins with "." (what MessageTemplate writes, which
    # tests/test_properties.py holds it to); anything else is checked and quoted per message by the SMTP sender.
    transparent: bool = False
    subject: str = ""
    from_header: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # per-recipient headers an API must add itself
    list_headers: tuple[tuple[str, str], ...] = ()  # the same for every recipient (List-Id)
    reply_to: str | None = None
    parts: Callable[[], tuple[str, str]] | None = field(default=None, compare=False, repr=False)  # (html, text)
    # For APIs that personalise one body for many recipients (SendGrid, Mailgun):
    template: tuple[str, str] | None = field(default=None, compare=False, repr=False)  # (html, text), placeholders in
    nonce: str = ""  # the placeholders' per-issue part
    values: tuple[tuple[str, str], ...] = ()  # this recipient's value for each placeholder field
    name: str | None = None


@dataclass(frozen=True)
class SendResult:
    """What happened to one message."""

    message: Message
    status: ResultStatus
    provider_id: str | None = None
    reply: str = ""  # the SMTP reply or the API's word, for the ledger
    retry_after: float | None = None  # seconds the provider asked us to wait (429, 503)


class Sender:
    """Base of every sender. Subclasses implement :meth:`send`, and :meth:`open`/:meth:`close` if they connect.

    ``batch_size`` is how many messages one :meth:`send` call should get: the
    messages in flight at once, and so at most the number whose fate a crash
    can leave unknown.
    """

    name = "base"
    batch_size = 1
    #: How many threads may call :meth:`send` at once (each SMTP connection is one).
    concurrency = 1
    #: Whether :meth:`send` reads ``Message.data`` (the complete MIME message). An HTTP API sender posts
    #: the parts instead and says False, and its messages come without it.
    wants_mime = True

    def __init__(self, settings: SenderSettings, app: Settings) -> None:
        self.settings = settings
        self.app = app
        if settings.batch_size:
            self.batch_size = settings.batch_size
        self._opened = False
        #: Set when no message can get through (a refused login, a revoked API key): the send stops.
        self.fatal: str | None = None

    def pause(self, reason: str) -> None:
        """No message can get through until a person acts (a refused sender, a full disk): stop the send.

        The messages of the batch that found out are answered ``deferred``; the
        send loop gives them back to the queue untouched.
        """
        if self.fatal is None:
            self.fatal = reason

    def open(self) -> None:
        """Connect, if the sender needs to. Called once before the first send."""
        self._opened = True

    def close(self) -> None:
        """Release what :meth:`open` took, and only that."""
        self._opened = False

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Hand over *messages*; one result per message, in the same order."""
        raise NotImplementedError

    def __enter__(self) -> Sender:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load(spec: str) -> type[Sender]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def sender_class(kind: str) -> type[Sender]:
    """The sender class for a ``[sender] kind``: built in, or from the ``flygblad.senders`` entry points."""
    if kind in BUILT_IN:
        return _load(BUILT_IN[kind])
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == kind:
            loaded = point.load()
            if not (isinstance(loaded, type) and issubclass(loaded, Sender)):
                raise ConfigError(f"entry point {point.value} is not a flygblad Sender", key="sender.kind")
            return loaded
    known = sorted(set(BUILT_IN) | {p.name for p in entry_points(group=ENTRY_POINT_GROUP)})
    raise ConfigError(f"no sender named {kind!r} (senders: {', '.join(known)})", key="sender.kind")


def sender_for(settings: Settings) -> Sender:
    """The configured sender, built (not yet opened)."""
    return sender_class(settings.sender.kind)(settings.sender, settings)


__all__ = [
    "ENTRY_POINT_GROUP",
    "Message",
    "RESULT_STATUSES",
    "ResultStatus",
    "SendResult",
    "Sender",
    "sender_class",
    "sender_for",
]

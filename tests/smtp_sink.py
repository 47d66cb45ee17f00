"""A real SMTP server on 127.0.0.1 for the tests (aiosmtpd), with faults on demand.

``SinkHandler.rules`` maps a recipient to what the server does with it:
``"451"`` (temporary refusal, a number of times), ``"550"`` (permanent),
``"drop"`` (close the connection), ``"stall"`` (answer too late),
``"drop-after-data"`` (take the whole message, then close without a reply).
A relay's verdicts for every message: ``mail_reply`` (to MAIL FROM),
``rcpt_reply`` (to every RCPT), ``data_reply`` (at the end of DATA), and
``drop_after_data`` (every message taken, then the connection closed).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    """aiosmtpd's Controller(port=0) does not work: pick a free port first."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SinkHandler:
    """Accepts mail, or refuses it as the rules say; keeps every accepted message."""

    rules: dict[str, list[str]] = field(default_factory=dict)
    accepted: list[tuple[str, bytes]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stall_seconds: float = 5.0
    pipelining: bool = True  # advertise RFC 2920 PIPELINING (aiosmtpd reads pipelined commands in order)
    mail_reply: str | None = None
    rcpt_reply: str | None = None
    data_reply: str | None = None
    drop_after_data: bool = False
    data_delay: float = 0.0  # seconds before DATA is answered: a relay some way off, or a slow one

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    def rule(self, recipient: str, *answers: str) -> None:
        """Answer *recipient* with these rules in turn (then accept)."""
        self.rules[recipient.lower()] = list(answers)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            self.refused[address] += 1
            return self.rcpt_reply
        answers = self.rules.get(address.lower())
        answer = answers.pop(0) if answers else None
        if answer == "drop-after-data":
            session.drop_after_data = True  # type: ignore[attr-defined]
        if answer == "451":
            self.refused[address] += 1
            return "451 4.7.1 Try again later"
        if answer == "550":
            self.refused[address] += 1
            if answers is not None:
                answers.insert(0, "550")  # permanent: stays refused
            return "550 5.1.1 No such user here"
        if answer == "drop":
            self.refused[address] += 1
            server.transport.close()
            return "421 closing"
        if answer == "stall":
            await asyncio.sleep(self.stall_seconds)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.accepted.append((recipient, envelope.original_content or envelope.content))
        if self.drop_after_data or getattr(session, "drop_after_data", False):
            session.drop_after_data = False  # type: ignore[attr-defined]
            server.transport.close()  # queued, but the client never hears so
        return "250 2.0.0 Ok: queued as FB" + str(len(self.accepted))

    def messages(self) -> list[EmailMessage]:
        """Every accepted message, parsed."""
        return [BytesParser(policy=policy.default).parsebytes(data) for _, data in self.accepted]  # type: ignore[misc]

    def count(self) -> Counter[str]:
        """How many messages each recipient got."""
        with self.lock:
            return Counter(recipient for recipient, _ in self.accepted)


class Sink:
    """A running SMTP sink: ``with Sink() as sink: ... sink.port``."""

    def __init__(self, pipelining: bool = True, smtputf8: bool = False, port: int | None = None) -> None:
        self.handler = SinkHandler(pipelining=pipelining)
        self.port = port or free_port()
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            decode_data=False,
            data_size_limit=10_000_000,
            enable_SMTPUTF8=smtputf8,
        )

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

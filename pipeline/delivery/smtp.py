"""``kind = "smtp"``: any SMTP server, over several reused connections.

The send loop runs ``connections`` workers; each calls :meth:`SmtpSender.send`
from its own thread, which has its own ``smtplib`` session, opened once and
reused for every message (reconnecting after a drop). A worker claims one
message at a time, so at most ``connections`` messages are ever in flight, and
its ledger writes overlap the other workers' network time. Replies map to
outcomes per recipient:

* 2xx: ``sent`` (the server's reply, often with its queue id, is kept);
* 4xx, or a dropped connection or a timeout before the message was complete:
  ``deferred`` (retried by a later pass);
* a dropped connection or a timeout after the end of DATA: ``uncertain`` (the
  server may have queued it; it is never sent again by itself);
* 5xx to the recipient (RCPT): ``bounced`` (the subscriber is suppressed; the
  send loop pauses instead when most recipients of a window get one);
* a 5xx to the sender (MAIL FROM, 530 authentication required included) or to
  the message at the end of DATA (size, content): the relay's verdict on the
  sender or the message, the same for everyone: the send pauses with the
  relay's words (:attr:`Sender.fatal`), and nobody is suppressed.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import threading
from collections.abc import Sequence

from pipeline.config import SenderSettings, Settings
from pipeline.delivery import Message, ResultStatus, Sender, SendResult
from pipeline.errors import ConfigError, DeliveryError


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(text.split())}"


_PLAIN_ADDRESS = re.compile(r"[^\s<>()\",;:\\\[\]]+@[^\s<>()\",;:\\\[\]@]+")


def _path(address: str) -> str:
    """``<address>`` for MAIL FROM / RCPT TO: a plain address as it is, anything else through smtplib's quoteaddr.

    Addresses reach here checked by email-validator; parsing each one again
    (quoteaddr's parseaddr) cost 3 % of a send to a fast server.
    """
    return f"<{address}>" if _PLAIN_ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


class _LostAfterData(Exception):
    """The connection failed after the end of DATA had been written: the message may have gone."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = f"{type(cause).__name__}: {cause}".rstrip(": ")


class _Connection:
    """One reusable SMTP session."""

    def __init__(self, sender: SmtpSender) -> None:
        self.sender = sender
        self.smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.sender.settings
        if s.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host, s.smtp_port, timeout=s.timeout, context=self.sender.tls_context()
            )
        else:
            smtp = smtplib.SMTP(s.host, s.smtp_port, timeout=s.timeout)
        smtp.ehlo()
        if s.security == "starttls":
            smtp.starttls(context=self.sender.tls_context())
            smtp.ehlo()
        if s.username:
            smtp.login(s.username, self.sender.password or "")
        return smtp

    def send(self, message: Message) -> SendResult:
        for attempt in (1, 2):  # a connection the server closed while idle gets one fresh try
            try:
                if self.smtp is None:
                    self.smtp = self._connect()
                return self._transaction(self.smtp, message)
            except smtplib.SMTPRecipientsRefused as err:
                code, text = err.recipients[message.recipient]
                return self._refused(message, code, text)
            except smtplib.SMTPSenderRefused as err:
                self.reset()
                reply = f"the relay refused the sender {message.sender}: {_reply(err.smtp_code, err.smtp_error)}"
                if err.smtp_code == 530 and not self.sender.settings.username:
                    reply += " ([sender] username is not set: this relay wants a login)"
                if err.smtp_code >= 500:
                    self.sender.pause(reply)
                return SendResult(message, "deferred", reply=reply)
            except smtplib.SMTPDataError as err:
                self._rset()
                reply = _reply(err.smtp_code, err.smtp_error)
                if err.smtp_code >= 500:
                    self.sender.pause(f"the relay refused the message: {reply}")
                return SendResult(message, "deferred", reply=reply)
            except _LostAfterData as lost:
                self.reset()
                return SendResult(message, "uncertain", reply=f"connection lost after the end of DATA: {lost.cause}")
            except smtplib.SMTPAuthenticationError as err:
                self.reset()
                raise DeliveryError(
                    f"SMTP login refused by {self.sender.settings.host}: {_reply(err.smtp_code, err.smtp_error)}"
                ) from err
            except (smtplib.SMTPServerDisconnected, ConnectionError) as err:
                self.reset()
                if attempt == 1:
                    continue
                return SendResult(message, "deferred", reply=f"connection lost: {err}")
            except TimeoutError as err:
                self.reset()
                return SendResult(message, "deferred", reply=f"timed out: {err}")
            except (smtplib.SMTPException, OSError) as err:
                self.reset()
                return SendResult(message, "deferred", reply=f"{type(err).__name__}: {err}")
        return SendResult(message, "deferred", reply="connection lost")

    def _transaction(self, smtp: smtplib.SMTP, message: Message) -> SendResult:
        """MAIL, RCPT, DATA for one message, raising smtplib's exceptions as ``sendmail`` does.

        Messages from :mod:`pipeline.render.mime` are SMTP-transparent (no line
        starts with a dot), so their bytes go out as they are, without the
        per-message dot-stuffing pass ``sendmail`` makes; anything else is quoted
        (:meth:`_data`).
        """
        options = []
        if not message.recipient.isascii():
            if "smtputf8" not in smtp.esmtp_features:
                return SendResult(
                    message,
                    "failed",
                    reply=f"{message.recipient} can only be delivered over SMTPUTF8, "
                    f"which {self.sender.settings.host} does not offer",
                )
            options.append("SMTPUTF8")
        if "8bitmime" in smtp.esmtp_features:
            options.append("BODY=8BITMIME")
        # The commands' arguments written here, for both ways of sending them: smtplib's mail() and rcpt() parse
        # each address again (quoteaddr), 15 % of the interpreter's time of a send over 20 connections to a
        # relay without PIPELINING (py-spy --gil, bench.relay).
        mail_from = f"FROM:{_path(message.sender)}{''.join(' ' + o for o in options)}"
        rcpt_to = f"TO:{_path(message.recipient)}"
        if "pipelining" in smtp.esmtp_features:
            # RFC 2920: MAIL, RCPT and DATA in one write, their three replies read after.
            smtp.send(f"MAIL {mail_from}\r\nRCPT {rcpt_to}\r\nDATA\r\n".encode())
            replies = [smtp.getreply() for _ in range(3)]
            (mail_code, mail_reply), (rcpt_code, rcpt_reply), (data_code, data_reply) = replies
            if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
                smtp.send(b".\r\n")  # the server took DATA although MAIL or RCPT failed: end it empty
                smtp.getreply()
            if mail_code != 250:
                raise smtplib.SMTPSenderRefused(mail_code, mail_reply, message.sender)
            if rcpt_code not in (250, 251):
                if rcpt_code == 421:
                    raise smtplib.SMTPServerDisconnected(_reply(rcpt_code, rcpt_reply))
                raise smtplib.SMTPRecipientsRefused({message.recipient: (rcpt_code, rcpt_reply)})
            if data_code != 354:
                raise smtplib.SMTPDataError(data_code, data_reply)
            return self._data(smtp, message)
        if "SMTPUTF8" in options:
            smtp.command_encoding = "utf-8"  # what mail() does for it: the addresses go as UTF-8
        smtp.putcmd("mail", mail_from)
        code, reply = smtp.getreply()
        if code != 250:
            if code == 421:
                self.reset()
            raise smtplib.SMTPSenderRefused(code, reply, message.sender)
        smtp.putcmd("rcpt", rcpt_to)
        code, reply = smtp.getreply()
        if code not in (250, 251):
            if code == 421:
                self.reset()
                raise smtplib.SMTPServerDisconnected(_reply(code, reply))
            raise smtplib.SMTPRecipientsRefused({message.recipient: (code, reply)})
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        return self._data(smtp, message)

    def _data(self, smtp: smtplib.SMTP, message: Message) -> SendResult:
        """The message itself, after a 354; its final reply.

        A message from :mod:`pipeline.render.mime` (``transparent``) goes as it is. Searching each one
        for a line that begins with a dot, which the builder never writes, took 31 µs of a 45 KB message
        under the interpreter's lock; without it, py-spy --gil over bench.relay's send counted 0.06
        samples a message instead of 0.12.
        """
        data = message.data
        if not message.transparent:
            if data.startswith(b".") or b"\r\n." in data:
                data = smtplib.quotedata(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
            if not data.endswith(b"\r\n"):
                data += b"\r\n"
        smtp.send(data + b".\r\n")
        try:
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as err:
            # The whole message went: the server may have queued it before it went away. Sending it
            # again could deliver it twice, so it is uncertain (RFC 5321 6.1, RFC 1047).
            raise _LostAfterData(err) from err
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return SendResult(message, "sent", reply=_reply(code, reply))

    def _refused(self, message: Message, code: int, text: bytes | str) -> SendResult:
        self._rset()
        status: ResultStatus = "deferred" if 400 <= code < 500 else "bounced"
        return SendResult(message, status, reply=_reply(code, text))

    def _rset(self) -> None:
        try:
            if self.smtp is not None:
                self.smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.reset()

    def reset(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.close()
            except OSError:
                pass
        self.smtp = None

    def quit(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
        self.reset()


class SmtpSender(Sender):
    """Sends through ``[sender] host``/``port`` over ``connections`` parallel sessions."""

    name = "smtp"

    def __init__(self, settings: SenderSettings, app: Settings) -> None:
        super().__init__(settings, app)
        self.password: str | None = None
        if settings.password_env:
            self.password = os.environ.get(settings.password_env)
            if self.password is None:
                raise ConfigError(
                    f"${settings.password_env} is not set (it should hold the SMTP password)", key="sender.password_env"
                )
        self.concurrency = settings.connections or 2
        if not settings.batch_size:
            self.batch_size = 1  # one message in flight per connection: the most a crash can leave uncertain
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def tls_context(self) -> ssl.SSLContext:
        """One verifying TLS context for all the connections, made when the first one needs it.

        Loading the system's certificates takes ~20 ms of the interpreter: made for each of 20
        connections, the first messages of a send waited 0.3 s for them (bench.relay), and a relay
        without TLS waited for nothing.
        """
        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return self._tls

    def _connection(self) -> _Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = _Connection(self)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send on the calling thread's own connection (made on first use, then reused)."""
        if not self._opened:
            raise DeliveryError("the SMTP sender was not opened")
        connection = self._connection()
        return [connection.send(m) for m in messages]

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.quit()
            self._all.clear()
        self._local = threading.local()
        super().close()

"""``kind = "smtp"``: any SMTP server, over several reused connections.

Each connection is a thread with its own ``smtplib`` session, opened once and
reused for every message (reconnecting after a drop). A batch is split across
the connections. Replies map to outcomes per recipient:

* 2xx: ``sent`` (the server's reply, often with its queue id, is kept);
* 4xx, a dropped connection or a timeout: ``deferred`` (retried later);
* 5xx to the recipient or the message: ``bounced`` (the subscriber is suppressed);
* a 5xx to the sender address or to authentication: ``failed``, for everyone:
  that is our configuration, not the recipient.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pipeline.delivery import Message, Sender, SendResult
from pipeline.errors import ConfigError, DeliveryError


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(text.split())}"


class _Connection:
    """One reusable SMTP session."""

    def __init__(self, sender: SmtpSender) -> None:
        self.sender = sender
        self.smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.sender.settings
        context = ssl.create_default_context()
        if s.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.smtp_port, timeout=s.timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.smtp_port, timeout=s.timeout)
        smtp.ehlo()
        if s.security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if s.username:
            smtp.login(s.username, self.sender.password or "")
        return smtp

    def send(self, message: Message) -> SendResult:
        for attempt in (1, 2):  # a connection the server closed while idle gets one fresh try
            try:
                if self.smtp is None:
                    self.smtp = self._connect()
                options = ["SMTPUTF8"] if not message.recipient.isascii() else []
                if "8bitmime" in self.smtp.esmtp_features:
                    options.append("BODY=8BITMIME")
                refused = self.smtp.sendmail(message.sender, [message.recipient], message.data, mail_options=options)
                if refused:
                    code, text = refused[message.recipient]
                    return self._refused(message, code, text)
                return SendResult(message, "sent", reply="250 accepted")
            except smtplib.SMTPRecipientsRefused as err:
                code, text = err.recipients[message.recipient]
                return self._refused(message, code, text)
            except smtplib.SMTPSenderRefused as err:
                self.reset()
                status = "deferred" if 400 <= err.smtp_code < 500 else "failed"
                return SendResult(message, status, reply=f"sender refused: {_reply(err.smtp_code, err.smtp_error)}")
            except smtplib.SMTPDataError as err:
                self._rset()
                status = "deferred" if 400 <= err.smtp_code < 500 else "bounced"
                return SendResult(message, status, reply=_reply(err.smtp_code, err.smtp_error))
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

    def _refused(self, message: Message, code: int, text: bytes | str) -> SendResult:
        self._rset()
        status = "deferred" if 400 <= code < 500 else "bounced"
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

    def __init__(self, settings, app) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, app)
        self.password: str | None = None
        if settings.password_env:
            self.password = os.environ.get(settings.password_env)
            if self.password is None:
                raise ConfigError(
                    f"${settings.password_env} is not set (it should hold the SMTP password)", key="sender.password_env"
                )
        self.connections = settings.connections
        if not settings.batch_size:
            self.batch_size = settings.connections * 8
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.connections, thread_name_prefix="smtp")
        super().open()

    def _connection(self) -> _Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = _Connection(self)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def _send_share(self, messages: Sequence[Message]) -> list[SendResult]:
        connection = self._connection()
        return [connection.send(m) for m in messages]

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        if self._pool is None:
            raise DeliveryError("the SMTP sender was not opened")
        shares = [list(messages[i :: self.connections]) for i in range(self.connections)]
        futures = [self._pool.submit(self._send_share, share) for share in shares if share]
        by_id: dict[str, SendResult] = {}
        for future in futures:
            for result in future.result():
                by_id[result.message.message_id] = result
        return [by_id[m.message_id] for m in messages]

    def close(self) -> None:
        if self._pool is not None:
            for connection in self._all:
                connection.quit()
            self._pool.shutdown(wait=True)
            self._pool = None
        self._all.clear()
        super().close()

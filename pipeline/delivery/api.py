"""The shared base of the HTTP-API senders (django-anymail's ``base_requests``).

It owns what every provider has in common: the ``requests.Session`` (reused
for every batch), the API key from the environment, timeouts, and turning the
HTTP outcome into per-recipient results: a timeout, a dropped connection, 5xx,
429 and 503 (with their Retry-After) are ``deferred``; 401/403 stop the send (a
key that is refused will be refused for everyone); any other 4xx fails the
batch with the provider's own words. A provider fills in only
:meth:`build_payload`, :meth:`post` and :meth:`parse_result`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from pipeline import __version__
from pipeline.config import SenderSettings, Settings
from pipeline.delivery import Message, Sender, SendResult
from pipeline.errors import ConfigError, DeliveryError


def retry_after(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def retoken(content: str, nonce: str, fields: Sequence[str], replacement: str) -> str:
    """Replace each placeholder with *replacement* formatted with its field (``%recipient.{field}%``)."""
    pattern = re.compile(rf"%%fb-{re.escape(nonce)}-({'|'.join(map(re.escape, fields))})%%")
    return pattern.sub(lambda m: replacement.format(field=m.group(1)), content)


#: See :meth:`ApiSender.refused_recipients`.
BISECT: dict[str, str] = {"": "bisect"}


def in_order(messages: Sequence[Message], results: list[SendResult]) -> list[SendResult]:
    """*results* in the order of *messages* (the protocol's promise), whatever order the parts came back in."""
    by_id = {r.message.message_id: r for r in results}
    return [by_id[m.message_id] for m in messages]


def _never_sent(err: requests.RequestException) -> bool:
    """True when the request cannot have reached the provider (no connection was made)."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    if isinstance(err, requests.Timeout):
        return False  # a read timeout: the request was sent
    cause: BaseException | None = err
    while cause is not None:
        if (
            isinstance(cause, NewConnectionError | ConnectionRefusedError)
            or type(cause).__name__ == "NameResolutionError"
        ):
            return True
        reason = getattr(cause, "reason", None)
        cause = (
            reason
            if isinstance(reason, BaseException)
            else (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)
        )
    return False


class ApiSender(Sender):
    """Base of the HTTP-API senders."""

    default_base_url = ""
    max_batch = 500
    wants_mime = False  # the parts and the template go to the API, never the MIME message

    def __init__(self, settings: SenderSettings, app: Settings) -> None:
        super().__init__(settings, app)
        variable = settings.api_key_env or ""
        key = os.environ.get(variable, "").strip()
        if not key:
            raise ConfigError(
                f"${variable} is not set (it should hold the {self.name} API key)", key="sender.api_key_env"
            )
        self.api_key = key
        self.base_url = (settings.base_url or self.default_base_url).rstrip("/")
        if not settings.batch_size:
            self.batch_size = self.max_batch
        self.batch_size = min(self.batch_size, self.max_batch)
        self.session: requests.Session | None = None
        # ``connections`` requests in flight, and one worker more than that: while every request waits
        # on the provider, the spare worker claims and builds the next batch, so the wait hides the work.
        self.in_flight = threading.BoundedSemaphore(settings.connections or 1)
        self.concurrency = (settings.connections or 1) + 1

    def open(self) -> None:
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"flygblad/{__version__}"
        super().open()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        super().close()

    # ------------------------------------------------------------ what a provider fills in

    def build_payload(self, messages: Sequence[Message]) -> Any:
        """The request body for one batch."""
        raise NotImplementedError

    def encode(self, payload: Any) -> Any:
        """*payload* as :meth:`post` takes it (a provider that encodes its own body does it here)."""
        return payload

    def post(self, payload: Any) -> requests.Response:
        """Send the request (the session, the URL and the authentication)."""
        raise NotImplementedError

    def parse_result(self, messages: Sequence[Message], response: requests.Response) -> list[SendResult]:
        """Per-recipient results from a 2xx response."""
        raise NotImplementedError

    def shared_template(self, messages: Sequence[Message]) -> tuple[Message, tuple[str, str], list[str]]:
        """For APIs that send one body to many recipients: the batch's first message, its (HTML, text), the fields.

        A message without a shared template (one the protocol allows: its own
        body) is sent alone, with its own parts as the template; a batch that
        mixes issues is refused rather than mixed.
        """
        first = messages[0]
        if first.template is None:
            if len(messages) > 1:
                raise DeliveryError(f"{self.name}: messages without a shared template go one per request")
            html, text = first.parts() if first.parts else ("", first.data.decode("utf-8", "replace"))
            return first, (html, text), []
        if any(m.template is not first.template for m in messages):
            raise DeliveryError(f"{self.name}: a batch must hold one issue")
        return first, first.template, [field for field, _ in first.values]

    def request(self, path: str, method: str = "POST", **kwargs: Any) -> requests.Response:
        """Call the provider's API (POST unless said) with the sender's session and timeout."""
        if self.session is None:
            raise DeliveryError(f"the {self.name} sender was not opened")
        return self.session.request(method, f"{self.base_url}{path}", timeout=self.settings.timeout, **kwargs)

    # ------------------------------------------------------------ the loop

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        if self.session is None:
            raise DeliveryError(f"the {self.name} sender was not opened")
        refused, sendable = self.unsendable(messages)
        alone = [m for m in sendable if m.template is None]  # each has its own body: one request each
        shared = [m for m in sendable if m.template is not None]
        results = refused + (self.within_limit(shared) if shared else [])
        for m in alone:
            results += self.within_limit([m])
        return in_order(messages, results)

    def within_limit(self, messages: Sequence[Message]) -> list[SendResult]:
        """One request, or halves of it until each is under the provider's documented size limit."""
        payload = self.build_payload(messages)
        if len(messages) > 1 and self.payload_bytes(payload) > self.max_request_bytes:
            half = len(messages) // 2
            return self.within_limit(messages[:half]) + self.within_limit(messages[half:])
        return self.deliver(messages, payload)

    #: The provider's limit on one request's body, with room to spare (SendGrid 30 MB, Mailgun 25 MB).
    max_request_bytes = 20 * 1024 * 1024

    def payload_bytes(self, payload: Any) -> int:
        """The size of *payload* as it goes over the wire."""
        return len(json.dumps(payload, ensure_ascii=False).encode("utf-8"))

    def unsendable(self, messages: Sequence[Message]) -> tuple[list[SendResult], list[Message]]:
        """Recipients no HTTP API can take (a local part that is not ASCII needs SMTPUTF8), and the rest."""
        refused, rest = [], []
        for m in messages:
            if m.recipient.isascii():
                rest.append(m)
            else:
                words = f"{m.recipient} can only be delivered over SMTPUTF8, which the {self.name} API does not offer"
                refused.append(SendResult(m, "failed", reply=words))
        return refused, rest

    def deliver(self, messages: Sequence[Message], payload: Any) -> list[SendResult]:
        """Post one request for *messages* and map its outcome to one result per message."""
        body = self.encode(payload)  # before its turn: the encoding of one batch overlaps another's wait
        try:
            with self.in_flight:
                if self.fatal is not None:  # found out while this batch waited for its turn: it stays pending
                    return [SendResult(m, "deferred", reply=self.fatal) for m in messages]
                response = self.post(body)
                if response.status_code in (401, 403):  # before the next batch takes the turn
                    self.pause(f"{self.name} refused the API key ({response.status_code})")
            # Let the worker waiting with the next batch post it now, instead of after this one's
            # bookkeeping has used up the interpreter's 5 ms switch interval.
            time.sleep(0)
        except (requests.Timeout, requests.ConnectionError) as err:
            if _never_sent(err):
                return [SendResult(m, "deferred", reply=f"cannot reach {self.name}: {err}") for m in messages]
            # The request went out and the answer never came: the provider may have accepted the
            # batch. Sending it again could mail everyone in it twice, so they are uncertain.
            reply = f"{self.name} did not answer after the request was sent ({type(err).__name__}): {err}"
            return [SendResult(m, "uncertain", reply=reply) for m in messages]
        status = response.status_code
        if 200 <= status < 300:
            return self.parse_result(messages, response)
        words = f"{self.name} answered {status}: {' '.join(response.text[:300].split())}"
        if status in (429, 503) or status >= 500:
            wait = retry_after(response)
            return [SendResult(m, "deferred", reply=words, retry_after=wait) for m in messages]
        if status in (401, 403):
            return [SendResult(m, "deferred", reply=words) for m in messages]
        own = self.refused_request(messages, response)
        if own is not None:
            return own
        named = self.refused_recipients(messages, response)
        if named is BISECT:
            # The provider says a recipient is bad without saying which: halve until it is found.
            if len(messages) == 1:
                return [SendResult(messages[0], "failed", reply=words)]
            half = len(messages) // 2
            return self.send(messages[:half]) + self.send(messages[half:])
        if named:
            # The provider names the addresses it will not take: they fail alone, the rest go again.
            rest = [m for m in messages if m.message_id not in named]
            results = {
                m.message_id: SendResult(m, "failed", reply=named[m.message_id])
                for m in messages
                if m.message_id in named
            }
            for result in self.send(rest) if rest else []:
                results[result.message.message_id] = result
            return [results[m.message_id] for m in messages]
        # A refusal of the request itself (the sender address, the domain, the message, its size) is the
        # same for everyone: pause with the provider's words, everyone stays pending.
        self.pause(f"{self.name} refused the request: {words}")
        return [SendResult(m, "deferred", reply=words) for m in messages]

    def refused_request(self, messages: Sequence[Message], response: requests.Response) -> list[SendResult] | None:
        """A provider's own reading of a 4xx, before the shared one (None: no reading of its own)."""
        return None

    def refused_recipients(self, messages: Sequence[Message], response: requests.Response) -> dict[str, str]:
        """Message ids of the recipients a 4xx names as the cause, with the provider's words (none: the request).

        :data:`BISECT` says: a recipient is the cause, but the answer does not say which.
        """
        return {}

    def not_the_api(self, response: requests.Response, expected: str) -> list[SendResult] | None:
        """A 2xx that is not the provider's documented answer (a wrong ``base_url``): pause, nobody marked sent."""
        self.pause(
            f"{self.name} at {self.base_url} answered {response.status_code} without {expected} "
            f"({' '.join(response.text[:120].split())!r}): check [sender] base_url"
        )
        return None

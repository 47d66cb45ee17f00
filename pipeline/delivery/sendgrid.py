"""``kind = "sendgrid"``: SendGrid's v3 ``POST /v3/mail/send``, one body for up to 1000 recipients.

The issue's HTML and text go once; each recipient is a personalization with
its own ``substitutions`` (their greeting and links fill the issue's
placeholders; the HTML gets HTML-escaped values under their own tokens) and
headers (their List-Unsubscribe). SendGrid answers 202 with one X-Message-Id
for the request and no per-recipient verdict at send time: every recipient of
an accepted request is ``sent``; bounces arrive later by webhook.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

import requests

from pipeline.delivery import Message, SendResult
from pipeline.delivery.api import ApiSender, retoken
from pipeline.render import token as placeholder


def _address(value: str) -> dict[str, str]:
    name, email = parseaddr(value)
    return {"email": email, "name": name} if name else {"email": email}


class SendGridSender(ApiSender):
    """Sends through SendGrid's v3 Mail Send API."""

    name = "sendgrid"
    default_base_url = "https://api.sendgrid.com"
    max_batch = 1000

    def build_payload(self, messages: Sequence[Message]) -> dict[str, Any]:
        first, (html, text), fields = self.shared_template(messages)
        html = retoken(html, first.nonce, fields, placeholder(first.nonce, "{field}-h"))
        personalizations = []
        for m in messages:
            substitutions = {}
            for field, value in m.values:
                substitutions[placeholder(m.nonce, field)] = value
                substitutions[placeholder(m.nonce, f"{field}-h")] = html_lib.escape(value, quote=True)
            personalizations.append(
                {
                    "to": [{"email": m.recipient, "name": m.name} if m.name else {"email": m.recipient}],
                    "substitutions": substitutions,
                    "headers": dict(m.headers),
                    "custom_args": {"flygblad_message_id": m.message_id},
                }
            )
        payload: dict[str, Any] = {
            "personalizations": personalizations,
            "from": _address(first.from_header),
            "subject": first.subject,
            "content": [{"type": "text/plain", "value": text}, {"type": "text/html", "value": html}],
            "headers": dict(first.list_headers),
        }
        if first.reply_to:
            payload["reply_to"] = _address(first.reply_to)
        return payload

    def refused_recipients(self, messages: Sequence[Message], response: requests.Response) -> dict[str, str]:
        """SendGrid's 400 names fields: ``personalizations.3.to.0.email`` is the fourth recipient."""
        try:
            errors = response.json().get("errors", [])
        except (ValueError, AttributeError):
            return {}
        named: dict[str, str] = {}
        for error in errors if isinstance(errors, list) else []:
            field = str(error.get("field") or "") if isinstance(error, dict) else ""
            match = re.fullmatch(r"personalizations\.(\d+)\.to\.\d+\.email", field)
            if not match or int(match.group(1)) >= len(messages):
                return {}  # one error about the request itself: it is not about recipients
            named[messages[int(match.group(1))].message_id] = f"sendgrid 400: {error.get('message', '')}"
        return named

    def post(self, payload: Any) -> requests.Response:
        return self.request("/v3/mail/send", json=payload, headers={"Authorization": f"Bearer {self.api_key}"})

    def parse_result(self, messages: Sequence[Message], response: requests.Response) -> list[SendResult]:
        if response.status_code != 202:  # SendGrid's one documented success
            self.not_the_api(response, "202 Accepted")
            return [SendResult(m, "deferred", reply="not SendGrid's answer") for m in messages]
        provider_id = response.headers.get("X-Message-Id")
        return [
            SendResult(m, "sent", provider_id=provider_id, reply=f"sendgrid {response.status_code} accepted")
            for m in messages
        ]

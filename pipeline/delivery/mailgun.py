"""``kind = "mailgun"``: Mailgun's batch sending, ``POST /v3/{domain}/messages``.

One request carries the issue's HTML and text for up to 1000 recipients, each a
``to`` field; ``recipient-variables`` hold each recipient's values, which the
body (``%recipient.field%``, HTML-escaped values under ``field_h``) and the
List-Unsubscribe header pick up, so every recipient gets a message of their
own. Mailgun answers with one id for the batch ("Queued. Thank you."); bounces
arrive later by webhook.
"""

from __future__ import annotations

import html as html_lib
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import requests

from pipeline.config import SenderSettings, Settings
from pipeline.delivery import Message, SendResult
from pipeline.delivery.api import BISECT, ApiSender, retoken


class MailgunSender(ApiSender):
    """Sends through Mailgun's messages API with recipient variables."""

    name = "mailgun"
    default_base_url = "https://api.mailgun.net"

    def __init__(self, settings: SenderSettings, app: Settings) -> None:
        super().__init__(settings, app)
        # The paths below start with /v3/: a base_url given as ".../v3" would post to /v3/v3/….
        self.base_url = self.base_url.removesuffix("/v3")

    max_batch = 1000

    def build_payload(self, messages: Sequence[Message]) -> list[tuple[str, str]]:
        first, (html, text), fields = self.shared_template(messages)
        html = retoken(html, first.nonce, fields, "%recipient.{field}_h%")
        text = retoken(text, first.nonce, fields, "%recipient.{field}%")
        variables: dict[str, dict[str, str]] = {}
        form: list[tuple[str, str]] = [
            ("from", first.from_header),
            ("subject", first.subject),
            ("text", text),
            ("html", html),
        ]
        for m in messages:
            form.append(("to", m.to))
            values = dict(m.values)
            values.update({f"{k}_h": html_lib.escape(v, quote=True) for k, v in m.values})
            values["list_unsubscribe"] = dict(m.headers).get("List-Unsubscribe", "")
            values["message_id"] = m.message_id
            variables[m.recipient] = values
        form.append(("recipient-variables", json.dumps(variables, ensure_ascii=False)))
        # Echoed back in every event's "user-variables": the webhook knows which list it was.
        form.append(("v:flygblad-message-id", "%recipient.message_id%"))
        if any(name == "List-Unsubscribe" for name, _ in first.headers):  # an issue; a confirmation has none
            form.append(("h:List-Unsubscribe", "%recipient.list_unsubscribe%"))
            form.append(("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        for name, value in first.list_headers:
            form.append((f"h:{name}", value))
        if first.reply_to:
            form.append(("h:Reply-To", first.reply_to))
        return form

    def refused_recipients(self, messages: Sequence[Message], response: requests.Response) -> dict[str, str]:
        """Mailgun's 400 says "'to' parameter is not a valid address" without saying which: bisect."""
        return BISECT if "not a valid address" in response.text else {}

    def payload_bytes(self, payload: Any) -> int:
        return len(urlencode(payload).encode("utf-8"))

    def post(self, payload: Any) -> requests.Response:
        return self.request(f"/v3/{self.settings.domain}/messages", data=payload, auth=("api", self.api_key))

    def parse_result(self, messages: Sequence[Message], response: requests.Response) -> list[SendResult]:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not answer.get("id"):
            # Mailgun's documented answer is {"id": "<…>", "message": "Queued. Thank you."}; the root of the
            # API answers 200 "Mailgun Magnificent API" to anything, so a 200 alone proves nothing.
            self.not_the_api(response, 'a message "id"')
            return [SendResult(m, "deferred", reply="not Mailgun's answer") for m in messages]
        words = f"mailgun: {answer.get('message', '')}"
        return [SendResult(m, "sent", provider_id=answer["id"], reply=words) for m in messages]

"""``kind = "postmark"``: Postmark's batch endpoint, ``POST /email/batch``.

Up to 500 messages a request, each with its own HTML and text, headers and
message stream; the answer is one result per message, in order: ``ErrorCode``
0 is accepted, 406 (inactive recipient: it bounced or complained before) is a
bounce, anything else is a rejection with Postmark's words.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import requests

from pipeline.delivery import Message, SendResult
from pipeline.delivery.api import ApiSender, in_order

INACTIVE_RECIPIENT = 406
#: Postmark refuses a batch request over 50 MB; stay well under it, measured on the JSON we send.
MAX_REQUEST_BYTES = 45 * 1024 * 1024


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class PostmarkSender(ApiSender):
    """Sends through Postmark's batch API."""

    name = "postmark"
    default_base_url = "https://api.postmarkapp.com"
    max_batch = 500

    def build_payload(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        payload = []
        for m in messages:
            html, text = m.parts() if m.parts else ("", m.data.decode("utf-8", "replace"))
            entry: dict[str, Any] = {
                "From": m.from_header,
                "To": m.to,
                "Subject": m.subject,
                "HtmlBody": html,
                "TextBody": text,
                "Headers": [{"Name": k, "Value": v} for k, v in (*m.list_headers, *m.headers)],
                "MessageStream": self.settings.message_stream,
                # Postmark refuses metadata values over 80 characters; the part before "@" names the list.
                "Metadata": {"flygblad-message-id": m.message_id.partition("@")[0][:80]},
            }
            if m.reply_to:
                entry["ReplyTo"] = m.reply_to
            payload.append(entry)
        return payload

    def post(self, payload: Any) -> requests.Response:
        # UTF-8 as it is: requests' json= escapes every å as \u00e5 (6 bytes), which took an 80 KB
        # Swedish issue in a batch of 500 over Postmark's 50 MB limit.
        return self.request(
            "/email/batch",
            data=_json(payload),
            headers={
                "X-Postmark-Server-Token": self.api_key,
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Post the batch in as many requests as Postmark's size limit needs (by the real encoded JSON)."""
        original = messages
        refused, messages = self.unsendable(messages)
        if not messages:
            return refused
        entries = self.build_payload(messages)
        results: list[SendResult] = []
        start, size = 0, 2
        for n, entry in enumerate(entries):
            length = len(_json(entry)) + 1
            if n > start and size + length > MAX_REQUEST_BYTES:
                results += self.deliver(messages[start:n], entries[start:n])
                start, size = n, 2
            size += length
        if start < len(entries):
            results += self.deliver(messages[start:], entries[start:])
        return in_order(original, refused + results)

    def parse_result(self, messages: Sequence[Message], response: requests.Response) -> list[SendResult]:
        try:
            answers = response.json()
        except ValueError:
            return [
                SendResult(m, "failed", reply=f"postmark: unreadable answer {response.text[:200]!r}") for m in messages
            ]
        if not isinstance(answers, list) or len(answers) != len(messages):
            return [SendResult(m, "failed", reply="postmark: the answer does not match the batch") for m in messages]
        results = []
        for message, answer in zip(messages, answers, strict=True):
            # Postmark leaves ErrorCode out of some accepted answers ("delivery may be delayed"):
            # a MessageID is its acceptance.
            code = int(answer.get("ErrorCode", 0 if answer.get("MessageID") else -1))
            words = f"postmark {code}: {answer.get('Message', '')}"
            if code == 0:
                results.append(SendResult(message, "sent", provider_id=answer.get("MessageID"), reply=words))
            elif code == INACTIVE_RECIPIENT:
                results.append(SendResult(message, "bounced", reply=words))
            else:
                results.append(SendResult(message, "rejected", reply=words))
        return results

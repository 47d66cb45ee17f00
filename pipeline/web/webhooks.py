"""Bounce and complaint webhooks: what each provider posts, checked the way it offers.

* Postmark: HTTP basic auth that you put in the webhook URL (``[web]
  postmark_webhook_user`` and the password from ``postmark_webhook_password_env``);
  a "Bounce" suppresses when Postmark made the address inactive (``Inactive``)
  or its type is a hard one; "Blocked" (an ISP blocking the sender) and soft
  types do not; "SpamComplaint" is a complaint; "SubscriptionChange" with
  ``SuppressSending`` is an unsubscribe (or a bounce/complaint, by its reason).
* SendGrid: the Signed Event Webhook: an ECDSA (P-256, SHA-256) signature over
  the timestamp header followed by the raw body, checked against the public
  key from ``sendgrid_webhook_key_env``; "bounce" (not type "blocked"),
  "dropped" only for the reasons that are about the address, "spamreport",
  "unsubscribe" and "group_unsubscribe".
* Mailgun: HMAC-SHA256 of timestamp + token under the webhook signing key from
  ``mailgun_webhook_signing_key_env``; "failed" with severity "permanent" (a
  temporary one is Mailgun still trying), "complained", "unsubscribed".

Each event names the list through our Message-ID, echoed back (Postmark
metadata, SendGrid custom args, Mailgun ``v:`` variables): a suppression then
applies to that list only. A request that cannot be verified changes nothing.
Signed timestamps older than the provider's own retry window are refused
(replay): five minutes for SendGrid, eight hours for Mailgun, which retries a
failed webhook with the original signature for that long.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import Settings

MAX_AGE_SECONDS = 300
#: Mailgun retries a webhook that failed for up to 8 hours, signed as the first time.
MAILGUN_MAX_AGE_SECONDS = 8 * 3600
#: Postmark bounce types that are about the address itself (anymail's mapping).
HARD_BOUNCE_TYPES = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
#: SendGrid "dropped" reasons that are about the address (others: our content, our quota).
SENDGRID_DROPPED = {
    "Bounced Address": "bounced",
    "Invalid": "bounced",
    "Invalid SMTPAPI header": None,
    "Spam Reporting Address": "complained",
    "Unsubscribed Address": "unsubscribed",
}


@dataclass(frozen=True)
class Event:
    """What a provider told us about one address."""

    email: str
    status: str  # bounced, complained or unsubscribed
    message_id: str | None = None  # ours, when the provider echoes it back


def _events(email: object, status: str, message_id: object) -> list[Event]:
    """One event, its fields checked: a verified payload of the wrong shape is a ValueError (400), never a 500."""
    if message_id is not None and not isinstance(message_id, str):
        raise ValueError(f"the message id is not text: {type(message_id).__name__}")
    if email is None or email == "":
        return []  # nobody named: nothing to change
    if not isinstance(email, str):
        raise ValueError(f"the address is not text: {type(email).__name__}")
    return [Event(email.strip(), status, message_id)]


class Unverified(Exception):
    """The request could not be shown to come from the provider."""


def _env(name: str | None) -> str | None:
    return os.environ.get(name, "").strip() or None if name else None


def enabled(settings: Settings, provider: str) -> bool:
    """Whether the webhook of *provider* is configured."""
    web = settings.web
    return {
        "postmark": bool(web.postmark_webhook_user and _env(web.postmark_webhook_password_env)),
        "sendgrid": bool(_env(web.sendgrid_webhook_key_env)),
        "mailgun": bool(_env(web.mailgun_webhook_signing_key_env)),
    }.get(provider, False)


def _fresh(timestamp: str | int | None, max_age: float = MAX_AGE_SECONDS) -> None:
    try:
        age = abs(time.time() - float(timestamp or 0))
    except ValueError:
        raise Unverified("bad timestamp") from None
    if age > max_age:
        raise Unverified("timestamp too old")


def postmark(settings: Settings, headers: Mapping[str, str], body: bytes) -> list[Event]:
    """Events from a Postmark bounce or spam-complaint webhook."""
    web = settings.web
    expected = base64.b64encode(
        f"{web.postmark_webhook_user}:{_env(web.postmark_webhook_password_env)}".encode()
    ).decode()
    if not hmac.compare_digest(headers.get("Authorization", ""), f"Basic {expected}"):
        raise Unverified("basic auth")
    data = json.loads(body)
    email = data.get("Email") or ""
    metadata = data.get("Metadata") or {}
    message_id = metadata.get("flygblad-message-id")
    kind = data.get("RecordType")
    if kind == "Bounce" and (data.get("Inactive") is True or data.get("Type") in HARD_BOUNCE_TYPES):
        return _events(email, "bounced", message_id)
    if kind == "SpamComplaint":
        return _events(email, "complained", message_id)
    if kind == "SubscriptionChange" and data.get("SuppressSending") is True:
        email = data.get("Recipient") or email
        reason = data.get("SuppressionReason")
        status = {"HardBounce": "bounced", "SpamComplaint": "complained"}.get(str(reason), "unsubscribed")
        return _events(email, status, message_id)
    return []


def sendgrid(settings: Settings, headers: Mapping[str, str], body: bytes) -> list[Event]:
    """Events from SendGrid's signed Event Webhook."""
    # The webhooks extra: only SendGrid's signature needs it (checked when the config names its key).
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    key_text = _env(settings.web.sendgrid_webhook_key_env) or ""
    signature = headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    try:
        key = load_der_public_key(base64.b64decode(key_text))
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, AssertionError) as err:
        raise Unverified("signature") from err
    _fresh(timestamp)
    events = []
    for event in json.loads(body):
        kind = event.get("event")
        status: str | None = None
        if kind == "bounce":
            status = None if event.get("type") == "blocked" else "bounced"
        elif kind == "dropped":
            status = SENDGRID_DROPPED.get(str(event.get("reason", "")))
        elif kind == "spamreport":
            status = "complained"
        elif kind in ("unsubscribe", "group_unsubscribe"):
            status = "unsubscribed"
        if status:
            events += _events(event.get("email"), status, event.get("flygblad_message_id"))
    return events


def mailgun(settings: Settings, headers: Mapping[str, str], body: bytes) -> list[Event]:
    """Events from a Mailgun webhook."""
    key = (_env(settings.web.mailgun_webhook_signing_key_env) or "").encode()
    data: dict[str, Any] = json.loads(body)
    signed = data.get("signature") or {}
    timestamp, token = str(signed.get("timestamp", "")), str(signed.get("token", ""))
    expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not key or not hmac.compare_digest(expected, str(signed.get("signature", ""))):
        raise Unverified("signature")
    _fresh(timestamp, MAILGUN_MAX_AGE_SECONDS)
    event = data.get("event-data") or {}
    email = event.get("recipient") or ""
    message_id = (event.get("user-variables") or {}).get("flygblad-message-id")
    kind = event.get("event")
    if kind == "failed" and event.get("severity") == "permanent":
        return _events(email, "bounced", message_id)
    if kind == "complained":
        return _events(email, "complained", message_id)
    if kind == "unsubscribed":
        return _events(email, "unsubscribed", message_id)
    return []


PROVIDERS = {"postmark": postmark, "sendgrid": sendgrid, "mailgun": mailgun}

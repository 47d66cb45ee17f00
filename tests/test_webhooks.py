"""Bounce and complaint webhooks over real HTTP: verified ones change statuses, others nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.store import Store
from pipeline.subscribers import ImportReport, candidate
from tests.smtp_sink import free_port
from tests.test_web import SECRET, Server, _configure

MAILGUN_KEY = "mailgun-signing-key-123"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()


@pytest.fixture
def hooks(example_settings, monkeypatch):
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("PM_HOOK_PASSWORD", "pm-password")
    monkeypatch.setenv("SG_HOOK_KEY", SENDGRID_PUBLIC)
    monkeypatch.setenv("MG_HOOK_KEY", MAILGUN_KEY)
    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    text = settings.path.read_text(encoding="utf-8").replace(
        "[web]\n",
        '[web]\npostmark_webhook_user = "postmark"\n'
        'postmark_webhook_password_env = "PM_HOOK_PASSWORD"\nsendgrid_webhook_key_env = "SG_HOOK_KEY"\n'
        'mailgun_webhook_signing_key_env = "MG_HOOK_KEY"\n',
        1,
    )
    settings.path.write_text(text, encoding="utf-8")
    from pipeline.config import load_settings

    settings = load_settings(settings.path)
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers(
            "nyhetsbrev",
            [candidate(f"{n}@example.org") for n in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")],
            report=ImportReport(),
        )
    with Server(settings, port) as server:
        yield settings, server


def _status(settings, email: str) -> str:
    with Store.open(settings.storage_url) as store:
        return store.subscriber("nyhetsbrev", email).status


def test_postmark(hooks) -> None:
    settings, server = hooks
    url = f"{server.url}/webhooks/postmark"
    bounce = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "TypeCode": 1,
        "Email": "a@example.org",
        "Metadata": {"flygblad-message-id": "nyhetsbrev.1.1.abcd@produktionslyftet.example"},
    }
    assert requests.post(url, json=bounce, auth=("postmark", "wrong")).status_code == 401
    assert requests.post(url, json=bounce).status_code == 401
    assert _status(settings, "a@example.org") == "active", "an unverified request changes nothing"
    assert requests.post(url, json=bounce, auth=("postmark", "pm-password")).status_code == 200
    assert _status(settings, "a@example.org") == "bounced"
    soft = {**bounce, "Type": "SoftBounce", "TypeCode": 4098, "Email": "b@example.org"}
    assert requests.post(url, json=soft, auth=("postmark", "pm-password")).status_code == 200
    assert _status(settings, "b@example.org") == "active", "a soft bounce is not a reason to stop"
    complaint = {"RecordType": "SpamComplaint", "Email": "b@example.org"}
    assert requests.post(url, json=complaint, auth=("postmark", "pm-password")).status_code == 200
    assert _status(settings, "b@example.org") == "complained"


def _sendgrid_post(
    url: str, events: list[dict], *, timestamp: int | None = None, key=SENDGRID_KEY
) -> requests.Response:
    body = json.dumps(events).encode()
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = base64.b64encode(key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return requests.post(
        url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        },
    )


def test_sendgrid(hooks) -> None:
    settings, server = hooks
    url = f"{server.url}/webhooks/sendgrid"
    events = [
        {"email": "c@example.org", "event": "bounce", "type": "bounce", "sg_event_id": "1"},
        {"email": "d@example.org", "event": "spamreport", "sg_event_id": "2"},
        {"email": "e@example.org", "event": "delivered", "sg_event_id": "3"},
    ]
    assert _sendgrid_post(url, events, key=ec.generate_private_key(ec.SECP256R1())).status_code == 403
    assert _sendgrid_post(url, events, timestamp=int(time.time()) - 3600).status_code == 403, "a replay"
    assert (_status(settings, "c@example.org"), _status(settings, "d@example.org")) == ("active", "active")
    assert _sendgrid_post(url, events).status_code == 200
    assert (
        _status(settings, "c@example.org"),
        _status(settings, "d@example.org"),
        _status(settings, "e@example.org"),
    ) == ("bounced", "complained", "active")


def _mailgun_body(event: dict, *, key: str = MAILGUN_KEY, timestamp: int | None = None) -> dict:
    stamp, token = str(timestamp if timestamp is not None else int(time.time())), "f" * 50
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event}


def test_mailgun(hooks) -> None:
    settings, server = hooks
    url = f"{server.url}/webhooks/mailgun"
    failed = {"event": "failed", "severity": "permanent", "recipient": "e@example.org"}
    assert requests.post(url, json=_mailgun_body(failed, key="forged")).status_code == 403
    tampered = _mailgun_body(failed)
    tampered["signature"]["timestamp"] = str(int(tampered["signature"]["timestamp"]) + 1)
    assert requests.post(url, json=tampered).status_code == 403
    assert _status(settings, "e@example.org") == "active"
    assert requests.post(url, json=_mailgun_body({**failed, "severity": "temporary"})).status_code == 200
    assert _status(settings, "e@example.org") == "active"
    assert requests.post(url, json=_mailgun_body(failed)).status_code == 200
    assert _status(settings, "e@example.org") == "bounced"
    assert (
        requests.post(url, json=_mailgun_body({"event": "complained", "recipient": "f@example.org"})).status_code == 200
    )
    assert _status(settings, "f@example.org") == "complained"


def test_postmark_events_as_postmark_means_them(hooks) -> None:
    """Blocked is the ISP refusing us (suppress only when Postmark made the address inactive); an opt-out on
    Postmark's own broadcast unsubscribe is an unsubscribe."""
    settings, server = hooks
    url = f"{server.url}/webhooks/postmark"
    auth = ("postmark", "pm-password")
    blocked = {
        "RecordType": "Bounce",
        "Type": "Blocked",
        "TypeCode": 100001,
        "Inactive": False,
        "CanActivate": True,
        "Email": "g@example.org",
        "MessageStream": "broadcast",
    }
    assert requests.post(url, json=blocked, auth=auth).status_code == 200
    assert _status(settings, "g@example.org") == "active", "an ISP block on the sender is not the address"
    assert requests.post(url, json={**blocked, "Inactive": True}, auth=auth).status_code == 200
    assert _status(settings, "g@example.org") == "bounced", "Postmark deactivated it: it will not send there"
    change = {
        "RecordType": "SubscriptionChange",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "h@example.org",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "MessageStream": "broadcast",
        "Metadata": {"flygblad-message-id": "nyhetsbrev.3.8.abcdef12"},
    }
    assert requests.post(url, json=change, auth=auth).status_code == 200
    assert _status(settings, "h@example.org") == "unsubscribed"
    assert requests.post(url, json={**change, "SuppressSending": False}, auth=auth).status_code == 200
    assert _status(settings, "h@example.org") == "unsubscribed", "a reactivation is not a consent"


def test_sendgrid_events_as_sendgrid_means_them(hooks) -> None:
    settings, server = hooks
    url = f"{server.url}/webhooks/sendgrid"
    events = [
        {"email": "c@example.org", "event": "dropped", "reason": "Spam Content (if spam checker app enabled)"},
        {"email": "d@example.org", "event": "dropped", "reason": "Recipient List over Package Quota"},
        {"email": "e@example.org", "event": "dropped", "reason": "Bounced Address"},
        {"email": "f@example.org", "event": "bounce", "type": "blocked", "reason": "550 5.7.1 blocked"},
        {"email": "g@example.org", "event": "unsubscribe", "flygblad_message_id": "nyhetsbrev.2.7.abcdef12"},
        {"email": "h@example.org", "event": "group_unsubscribe", "asm_group_id": 42},
        {"email": "i@example.org", "event": "deferred", "attempt": "3"},
    ]
    assert _sendgrid_post(url, events).status_code == 200
    statuses = [_status(settings, f"{n}@example.org") for n in "cdefghi"]
    assert statuses == ["active", "active", "bounced", "active", "unsubscribed", "unsubscribed", "active"]


def test_mailgun_events_as_mailgun_means_them(hooks) -> None:
    settings, server = hooks
    url = f"{server.url}/webhooks/mailgun"
    unsubscribed = {
        "event": "unsubscribed",
        "recipient": "g@example.org",
        "user-variables": {"flygblad-message-id": "nyhetsbrev.4.9.abcdef12"},
    }
    assert requests.post(url, json=_mailgun_body(unsubscribed)).status_code == 200
    assert _status(settings, "g@example.org") == "unsubscribed"
    failed = {"event": "failed", "severity": "permanent", "recipient": "h@example.org"}
    two_hours = int(time.time()) - 2 * 3600
    assert requests.post(url, json=_mailgun_body(failed, timestamp=two_hours)).status_code == 200, (
        "Mailgun retries a failed webhook for hours with the first signature"
    )
    assert _status(settings, "h@example.org") == "bounced"
    nine_hours = int(time.time()) - 9 * 3600
    stale = {"event": "complained", "recipient": "i@example.org"}
    assert requests.post(url, json=_mailgun_body(stale, timestamp=nine_hours)).status_code == 403
    assert _status(settings, "i@example.org") == "active"


def test_an_event_suppresses_on_its_own_list_only(hooks) -> None:
    """The same address on two lists: a bounce of the newsletter's message leaves the other list alone."""
    from pipeline.config import load_settings

    settings, server = hooks
    text = settings.path.read_text(encoding="utf-8")
    text += (
        '\n[[lists]]\nname = "english"\ntitle = "In English"\n'
        'from = "Produktionslyftet <news@produktionslyftet.example>"\nlanguage = "en"\n'
    )
    settings.path.write_text(text, encoding="utf-8")
    both = load_settings(settings.path)
    with Store.open(both.storage_url) as store:
        store.upsert_subscribers("english", [candidate("j@example.org")], report=ImportReport())
    port = free_port()
    from tests.test_web import Server as Web

    with Web(both, port) as other:
        unsubscribed = {
            "event": "unsubscribed",
            "recipient": "j@example.org",
            "user-variables": {"flygblad-message-id": "nyhetsbrev.4.10.abcdef12@produktionslyftet.example"},
        }
        assert requests.post(f"{other.url}/webhooks/mailgun", json=_mailgun_body(unsubscribed)).status_code == 200
    with Store.open(both.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "j@example.org").status == "unsubscribed"
        assert store.subscriber("english", "j@example.org").status == "active"


def test_a_malformed_body_is_400_never_500(hooks) -> None:
    """100,000 '[' made a RecursionError before verification; a huge body is refused before it is read."""
    settings, server = hooks
    deep = requests.post(f"{server.url}/webhooks/mailgun", data=b"[" * 100_000)
    assert deep.status_code == 400
    huge = requests.post(f"{server.url}/webhooks/postmark", data=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert huge.status_code == 413


def test_verified_but_malformed_payloads_are_400_never_500(hooks) -> None:
    """A verified request whose fields have the wrong shape answered 500: the provider retried it for hours."""
    settings, server = hooks
    postmark_url = f"{server.url}/webhooks/postmark"
    auth = ("postmark", "pm-password")
    for odd in (
        {"RecordType": "Bounce", "Type": "HardBounce", "Email": 12345},
        {"RecordType": "Bounce", "Type": "HardBounce", "Email": ["a@example.org"]},
        {"RecordType": "SpamComplaint", "Email": "b@example.org", "Metadata": {"flygblad-message-id": 7}},
        {"RecordType": "SpamComplaint", "Email": "b@example.org", "Metadata": "text"},
        [1, 2, 3],
        "just a string",
    ):
        answer = requests.post(postmark_url, json=odd, auth=auth)
        assert answer.status_code == 400, (odd, answer.status_code, answer.text)
    sendgrid_url = f"{server.url}/webhooks/sendgrid"
    for odd_events in (
        [{"event": "bounce", "email": {"nested": "c@example.org"}}],
        [{"event": "spamreport", "email": "c@example.org", "flygblad_message_id": ["x"]}],
        ["not an event"],
        [None],
    ):
        answer = _sendgrid_post(sendgrid_url, odd_events)
        assert answer.status_code == 400, (odd_events, answer.status_code, answer.text)
    mailgun_url = f"{server.url}/webhooks/mailgun"
    for odd_event in (
        {"event": "failed", "severity": "permanent", "recipient": 42},
        {"event": "complained", "recipient": "d@example.org", "user-variables": ["x"]},
        {"event": "complained", "recipient": "d@example.org", "user-variables": {"flygblad-message-id": {}}},
        "not an object",
    ):
        answer = requests.post(mailgun_url, json=_mailgun_body(odd_event))  # type: ignore[arg-type]
        assert answer.status_code == 400, (odd_event, answer.status_code, answer.text)
    odd_signature = _mailgun_body({"event": "complained", "recipient": "d@example.org"})
    odd_signature["signature"] = "not an object"
    assert requests.post(mailgun_url, json=odd_signature).status_code in (400, 403)
    assert [_status(settings, f"{n}@example.org") for n in "abcd"] == ["active"] * 4, "nothing changed"

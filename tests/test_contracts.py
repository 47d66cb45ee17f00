"""Each API sender's real requests held against the provider's documented request shape (tests/contracts/).

The fixtures are written from the providers' API references (the endpoint,
authentication, required and allowed fields, limits). A recording server on
127.0.0.1 answers as the provider documents success; every request a sender
makes for an issue, a test send and a confirmation is checked field by field,
so a request the real API would refuse fails here first.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pipeline.delivery import Message, sender_for
from pipeline.delivery.send import Outbox
from pipeline.delivery.transactional import Confirmations
from pipeline.jobs import freeze_next
from pipeline.store import Store
from pipeline.types import QueuedMail
from tests.providers import API_KEY
from tests.test_senders import SECRET, _write_sender

CONTRACTS = Path(__file__).resolve().parent / "contracts"


def _postmark(path: str, body: Any) -> Response:
    """Postmark's documented success for each endpoint flygblad calls."""
    if path.startswith("/templates"):
        answer: Any = {"TemplateId": 1, "Alias": (body or {}).get("Alias"), "Active": True, "ErrorCode": 0}
    else:
        messages = body["Messages"] if isinstance(body, dict) else body
        answer = [
            {"ErrorCode": 0, "Message": "OK", "MessageID": f"m{n}", "To": m["To"]} for n, m in enumerate(messages)
        ]
    return Response(json.dumps(answer), 200, content_type="application/json")


SUCCESS = {
    "postmark": _postmark,
    "sendgrid": lambda path, body: Response("", 202, headers={"X-Message-Id": "sg-1"}),
    "mailgun": lambda path, body: Response(
        json.dumps({"id": "<1@mg.example.org>", "message": "Queued. Thank you."}), 200, content_type="application/json"
    ),
}


class Recorder:
    """Keeps every request and answers as the provider answers success."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def handle(self, request: Request) -> Response:
        data = request.get_data()
        self.requests.append((request.method, request.path, dict(request.headers), data))
        body: Any = json.loads(data) if self.kind != "mailgun" and data else None
        return SUCCESS[self.kind](request.path, body)


def _endpoint(contracts: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The documented endpoint a request is for (a ``{name}`` in a path is one segment)."""
    for contract in contracts.get("endpoints", [contracts]):
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(contract["path"]))
        if method == contract["method"] and re.fullmatch(pattern, path):
            return contract
    return None


def _problems(contracts: dict[str, Any], method: str, path: str, headers: dict[str, str], data: bytes) -> list[str]:
    contract = _endpoint(contracts, method, path)
    if contract is None:
        return [f"{method} {path} is not an endpoint the provider documents for this"]
    out: list[str] = []
    wanted = contract["headers"]
    for name, value in wanted.get("equal", {}).items():
        if headers.get(name, "").split(";")[0].strip() != value:
            out.append(f"header {name}: {headers.get(name)!r}, not {value!r}")
    for name in wanted.get("present", []):
        if not headers.get(name):
            out.append(f"header {name} is missing")
    if "bearer" in wanted and headers.get(wanted["bearer"]) != f"Bearer {API_KEY}":
        out.append(f"{wanted['bearer']} is not a bearer token")
    if "basic_user" in wanted:
        user = base64.b64decode(headers.get("Authorization", "Basic ").split(" ", 1)[1]).decode().split(":")[0]
        if user != wanted["basic_user"]:
            out.append(f"basic auth user {user!r}, not {wanted['basic_user']!r}")
    spec = contract["body"]
    if len(data) > spec["max_bytes"]:
        out.append(f"body of {len(data)} bytes is over {spec['max_bytes']}")
    if spec["encoding"] == "none":
        return out
    if spec["encoding"] == "json":
        body = json.loads(data)
        if "array" in spec:
            out += _array(spec["array"], body)
        elif "messages" in spec:
            rules = spec["messages"]
            if not isinstance(body, dict) or set(body) != {rules["key"]}:
                return out + [f"the body must be an object with just {rules['key']}"]
            out += _array(rules, body[rules["key"]])
        elif "fields" in spec:
            out += _fields(spec["fields"], body, "request")
        else:
            out += _object(spec["object"], body)
    else:
        out += _form(spec["form"], parse_qsl(data.decode(), keep_blank_values=True))
    return out


def _fields(rules: dict[str, Any], item: dict[str, Any], where: str) -> list[str]:
    # Required: there and not empty text (an empty TemplateModel is a model with nothing to fill in).
    out = [f"{where}: {key} is required" for key in rules.get("required", []) if item.get(key) in (None, "")]
    out += [f"{where}: {key} is not a documented field" for key in item if key not in rules["allowed"]]
    for group in rules.get("one_of", []):
        if not any(item.get(key) for key in group):
            out.append(f"{where}: one of {group} is required")
    out += [
        f"{where}: {key} must be text"
        for key in rules.get("strings", [])
        if key in item and not isinstance(item[key], str)
    ]
    for key in rules.get("name_value_list", []):
        value = item.get(key, [])
        if not (isinstance(value, list) and all(set(v) == {"Name", "Value"} for v in value)):
            out.append(f"{where}: {key} must be a list of Name/Value pairs")
    for key, limits in rules.get("string_map", {}).items():
        value = item.get(key, {})
        if not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
            out.append(f"{where}: {key} must map text to text")
        elif "max_value_length" in limits and any(len(v) > limits["max_value_length"] for v in value.values()):
            out.append(f"{where}: a {key} value is over {limits['max_value_length']} characters")
    for key, pattern in rules.get("pattern", {}).items():
        if key in item and not re.fullmatch(pattern, str(item[key])):
            out.append(f"{where}: {key} {item[key]!r} does not match {pattern}")
    for key in rules.get("address", []):
        if key in item and not (isinstance(item[key], dict) and "@" in item[key].get("email", "")):
            out.append(f"{where}: {key} must be an address object")
    for key in rules.get("address_list", []):
        value = item.get(key)
        if not (isinstance(value, list) and value and all("@" in v.get("email", "") for v in value)):
            out.append(f"{where}: {key} must be a list of address objects")
    return out


def _array(rules: dict[str, Any], body: Any) -> list[str]:
    if not isinstance(body, list) or not 1 <= len(body) <= rules["max_items"]:
        return [f"the body must be an array of 1 to {rules['max_items']} messages"]
    return [p for n, item in enumerate(body) for p in _fields(rules["item"], item, f"message {n}")]


def _object(rules: dict[str, Any], body: Any) -> list[str]:
    out = _fields(rules, body, "request")
    types = [c.get("type") for c in body.get("content", [])]
    order = [t for t in rules["content_order"] if t in types]
    if types != order:
        out.append(f"content types {types} are not in the documented order {rules['content_order']}")
    people = rules["personalizations"]
    items = body.get("personalizations", [])
    if not people["min_items"] <= len(items) <= people["max_items"]:
        out.append(f"{len(items)} personalizations")
    seen: set[str] = set()
    for n, item in enumerate(items):
        out += _fields(people["item"], item, f"personalization {n}")
        for address in item.get(people["item"]["unique_address"], []):
            if address["email"].lower() in seen:
                out.append(f"{address['email']} is in two personalizations")
            seen.add(address["email"].lower())
    return out


def _form(rules: dict[str, Any], pairs: list[tuple[str, str]]) -> list[str]:
    fields = {k for k, _ in pairs}
    values = dict(pairs)
    out = [f"form: {key} is required" for key in rules["required"] if not values.get(key)]
    out += [f"form: one of {g} is required" for g in rules["one_of"] if not any(values.get(k) for k in g)]
    out += [
        f"form: {key} is not a documented field"
        for key in fields
        if key not in rules["allowed"] and not key.startswith(tuple(rules["allowed_prefixes"]))
    ]
    to = [v for k, v in pairs if k == "to"]
    if len(to) > rules["max_to"]:
        out.append(f"{len(to)} 'to' in one request")
    if rules["recipient_variables_cover_to"] and "recipient-variables" in values:
        variables = json.loads(values["recipient-variables"])
        missing = [t for t in to if parseaddr(t)[1] not in variables]
        if missing:
            out.append(f"recipient-variables has no entry for {missing[:3]}")
    return out


def _messages(settings: Any) -> dict[str, list[Message]]:
    """One of each kind a sender must carry: an issue's messages, a test send, a confirmation."""
    with Store.open(settings.storage_url) as store:
        issue = freeze_next(settings, store, settings.lists[0]).issue
    assert issue is not None
    mailing_list = settings.lists[0]
    outbox = Outbox(settings, mailing_list, issue, date=datetime.now(UTC))
    test = Outbox(settings, mailing_list, issue, date=datetime.now(UTC), subject_prefix="[TEST] ")
    confirmation = Confirmations(settings).message(
        QueuedMail(7, "confirm", mailing_list.name, 7, "ny.lasare@exämple.org", "Ny Läsare", 1)
    )
    return {
        "issue": [outbox.message(n, f"reader{n}@example.org", f"Läsare {n}" if n % 2 else None) for n in range(1, 6)],
        "test send": [test.message(0, "me@example.org", None)],
        "confirmation": [confirmation],
    }


@pytest.mark.parametrize("kind", ["postmark", "sendgrid", "mailgun"])
def test_every_request_matches_the_providers_documented_shape(
    example_settings, httpserver: HTTPServer, monkeypatch, kind: str
) -> None:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    contract = json.loads((CONTRACTS / f"{kind}.json").read_text(encoding="utf-8"))
    recorder = Recorder(kind)
    httpserver.expect_request(re.compile(".*")).respond_with_handler(recorder.handle)
    block: dict[str, object] = {
        "kind": kind,
        "api_key_env": "FLYGBLAD_TEST_API_KEY",
        "base_url": httpserver.url_for("/").rstrip("/"),
    }
    if kind == "mailgun":
        block["domain"] = "mg.example.org"
    settings = _write_sender(example_settings, block)
    for what, messages in _messages(settings).items():
        recorder.requests.clear()
        with sender_for(settings) as sender:
            results = sender.send(messages)
        assert [r.status for r in results] == ["sent"] * len(messages), (what, results)
        assert recorder.requests, what
        for method, path, headers, data in recorder.requests:
            assert _problems(contract, method, path, headers, data) == [], what
        if kind == "postmark" and what == "issue":  # the issue went as a template, made and then removed
            calls = [(method, path.split("/")[1]) for method, path, _h, _d in recorder.requests]
            assert calls == [("POST", "templates"), ("POST", "email"), ("DELETE", "templates")]
            assert recorder.requests[1][1] == "/email/batchWithTemplates"

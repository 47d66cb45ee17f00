"""Local stand-ins for the providers' HTTP APIs, speaking their documented shapes.

Each fake checks authentication and the request's structure as the provider
documents it, applies the provider's personalisation (Postmark: a body per
message; SendGrid: ``substitutions``; Mailgun: ``%recipient.x%``), and records
what each recipient would receive. Faults are queued: ``queue(status, headers)``
makes the next request answer that way.
"""

from __future__ import annotations

import base64
import html as html_lib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

API_KEY = "test-api-key-123"


@dataclass
class Received:
    """What one recipient got."""

    subject: str
    html: str
    text: str
    headers: dict[str, str]


@dataclass
class FakeProvider:
    server: HTTPServer
    name: str
    received: dict[str, list[Received]] = field(default_factory=dict)
    faults: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    inactive: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)  # addresses a 400 refuses (SendGrid names them, Mailgun not)
    requests: int = 0
    uploaded: list[int] = field(default_factory=list)  # bytes of each send request's body
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # Postmark's, by alias
    template_limit: int = 100  # Postmark's per server
    templates_made: int = 0
    templated: int = 0  # messages rendered from a template

    slow: list[float] = field(default_factory=list)

    answering_late_until: float = 0.0

    def answer_late(self, seconds: float) -> None:
        """Handle the next request in full (the mail is accepted), then answer only after *seconds*."""
        self.slow.append(seconds)

    def settle(self) -> None:
        """Wait until a late answer is written: the server is single-threaded and shared by the tests."""
        while self.slow or time.monotonic() < self.answering_late_until + 0.1:
            time.sleep(0.05)

    def queue(self, status: int, headers: dict[str, str] | None = None, body: str = "") -> None:
        """Answer the next send request with this status instead of handling it."""
        self.faults.append((status, headers or {}, body))

    def deliver(self, recipient: str, got: Received) -> None:
        self.received.setdefault(recipient.lower(), []).append(got)

    def sender_block(self) -> dict[str, object]:
        return {
            "kind": self.name,
            "api_key_env": "FLYGBLAD_TEST_API_KEY",
            "base_url": self.server.url_for("/").rstrip("/"),
            "timeout": 5,
            **({"domain": "mg.example.org"} if self.name == "mailgun" else {}),
        }

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/templates"):  # Postmark's templates API: faults are for the sends
            return self._postmark(request)
        self.requests += 1
        if self.faults:
            status, headers, body = self.faults.pop(0)
            return Response(body or json.dumps({"Message": "fault"}), status=status, headers=headers)
        response = getattr(self, f"_{self.name}")(request)
        if self.slow:
            self.answering_late_until = time.monotonic() + self.slow[0]
            time.sleep(self.slow.pop(0))
        return response

    # ------------------------------------------------------------ Postmark

    def _postmark(self, request: Request) -> Response:
        if request.headers.get("X-Postmark-Server-Token") != API_KEY:
            return Response(
                json.dumps({"ErrorCode": 10, "Message": "No Account or Server API tokens were supplied"}), 401
            )
        if request.path.startswith("/templates"):
            return self._postmark_templates(request)
        if request.method != "POST" or request.path not in ("/email/batch", "/email/batchWithTemplates"):
            return Response("not found", 404)
        self.uploaded.append(len(request.get_data()))
        body = request.get_json()
        templated = request.path == "/email/batchWithTemplates"
        messages = body.get("Messages") if templated and isinstance(body, dict) else body
        if not isinstance(messages, list) or not 1 <= len(messages) <= 500:
            return Response(json.dumps({"ErrorCode": 300, "Message": "Invalid batch"}), 422)
        answers = []
        for n, m in enumerate(messages):
            for key in ("From", "To", "MessageStream", *(() if templated else ("Subject",))):
                if not m.get(key):
                    return Response(json.dumps({"ErrorCode": 300, "Message": f"Missing {key}"}), 422)
            address = re.search(r"<([^<>]+)>\s*$", m["To"])
            to = address.group(1) if address else m["To"]
            if templated:
                template = self.templates.get(m.get("TemplateAlias") or "")
                if template is None:
                    answers.append(
                        {
                            "ErrorCode": 1101,
                            "Message": "The Template's 'Alias' associated with this request is not valid or was not found.",
                        }
                    )
                    continue
                model = m.get("TemplateModel", {})
                subject, html, text = (
                    mustache(template[k], model, html=k == "HtmlBody") for k in ("Subject", "HtmlBody", "TextBody")
                )
                self.templated += 1
            else:
                subject, html, text = m["Subject"], m.get("HtmlBody", ""), m.get("TextBody", "")
            if to.lower() in self.inactive:
                answers.append(
                    {
                        "ErrorCode": 406,
                        "Message": "You tried to send to recipient(s) that have been marked as inactive.",
                        "To": m["To"],
                    }
                )
                continue
            headers = {h["Name"]: h["Value"] for h in m.get("Headers", [])}
            self.deliver(to, Received(subject, html, text, headers))
            answers.append(
                {
                    "ErrorCode": 0,
                    "Message": "OK",
                    "MessageID": f"pm-{self.requests}-{n}",
                    "To": m["To"],
                    "SubmittedAt": "2026-11-24T10:00:00Z",
                }
            )
        return Response(json.dumps(answers), 200, content_type="application/json")

    def _postmark_templates(self, request: Request) -> Response:
        """Postmark's templates API: create, get, list and delete, at most ``template_limit`` on the server."""
        alias = request.path.removeprefix("/templates").strip("/")
        if request.method == "POST" and not alias:
            body = request.get_json()
            if not body.get("Name") or not body.get("Subject"):
                return Response(
                    json.dumps({"ErrorCode": 1120, "Message": "A required Template field is missing."}), 422
                )
            if body.get("Alias") in self.templates:
                return Response(json.dumps({"ErrorCode": 1123, "Message": "The alias is already in use."}), 422)
            if len(self.templates) >= self.template_limit:
                return Response(json.dumps({"ErrorCode": 1105, "Message": "Template limit would be exceeded."}), 422)
            self.templates[body["Alias"]] = body
            self.templates_made += 1
            return Response(
                json.dumps(
                    {
                        "TemplateId": len(self.templates),
                        "Name": body["Name"],
                        "Alias": body["Alias"],
                        "Active": True,
                        "TemplateType": "Standard",
                    }
                ),
                200,
                content_type="application/json",
            )
        if request.method == "GET" and not alias:
            listed = [
                {"Active": True, "TemplateId": n, "Name": t["Name"], "Alias": a, "TemplateType": "Standard"}
                for n, (a, t) in enumerate(self.templates.items())
            ]
            return Response(
                json.dumps({"TotalCount": len(listed), "Templates": listed}), 200, content_type="application/json"
            )
        if alias not in self.templates:
            return Response(
                json.dumps({"ErrorCode": 1101, "Message": "Template not found."}),
                404 if request.method == "GET" else 422,
            )
        if request.method == "GET":
            return Response(json.dumps({**self.templates[alias], "Active": True}), 200, content_type="application/json")
        if request.method == "DELETE":
            del self.templates[alias]
            return Response(
                json.dumps({"ErrorCode": 0, "Message": f"Template {alias} removed."}),
                200,
                content_type="application/json",
            )
        return Response("not found", 404)

    # ------------------------------------------------------------ SendGrid

    def _sendgrid(self, request: Request) -> Response:
        if request.path != "/v3/mail/send" or request.method != "POST":
            return Response("not found", 404)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return Response(
                json.dumps(
                    {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked"}]}
                ),
                401,
            )
        body: dict[str, Any] = request.get_json()
        personalizations = body.get("personalizations", [])
        if not 1 <= len(personalizations) <= 1000:
            return Response(
                json.dumps(
                    {
                        "errors": [
                            {"message": "You must have at least one personalization.", "field": "personalizations"}
                        ]
                    }
                ),
                400,
            )
        if not body.get("from", {}).get("email") or not body.get("subject") or not body.get("content"):
            return Response(json.dumps({"errors": [{"message": "missing from, subject or content"}]}), 400)
        content = {c["type"]: c["value"] for c in body["content"]}
        refused = [
            {"message": "Does not contain a valid address.", "field": f"personalizations.{n}.to.0.email"}
            for n, p in enumerate(personalizations)
            if p["to"][0]["email"].lower() in self.refuse
        ]
        if refused:  # SendGrid validates the whole request first: nobody is sent anything
            return Response(json.dumps({"errors": refused}), 400)
        seen = set()
        for p in personalizations:
            [to] = p["to"]
            if to["email"].lower() in seen:
                return Response(
                    json.dumps(
                        {
                            "errors": [
                                {
                                    "message": "Each unique email address in the personalizations array should only be included once."
                                }
                            ]
                        }
                    ),
                    400,
                )
            seen.add(to["email"].lower())
            html, text = content.get("text/html", ""), content.get("text/plain", "")
            for token, value in p.get("substitutions", {}).items():
                html, text = html.replace(token, value), text.replace(token, value)
            headers = {**body.get("headers", {}), **p.get("headers", {})}
            self.deliver(to["email"], Received(body["subject"], html, text, headers))
        return Response("", 202, headers={"X-Message-Id": f"sg-{self.requests}"})

    # ------------------------------------------------------------ Mailgun

    def _mailgun(self, request: Request) -> Response:
        if request.path != "/v3/mg.example.org/messages" or request.method != "POST":
            return Response(json.dumps({"message": "not found"}), 404)
        expected = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return Response("Forbidden", 401)
        form = request.form
        recipients = form.getlist("to")
        if not 1 <= len(recipients) <= 1000:
            return Response(json.dumps({"message": "'to' parameter is missing"}), 400)
        variables = json.loads(form.get("recipient-variables", "{}"))
        if any(re.sub(r".*<([^>]+)>.*", r"\1", to).lower() in self.refuse for to in recipients):
            # Mailgun refuses the whole request and does not say which address
            return Response(
                json.dumps({"message": "'to' parameter is not a valid address. please check documentation"}), 400
            )

        def fill(value: str, values: dict[str, str]) -> str:
            return re.sub(r"%recipient\.([A-Za-z0-9_]+)%", lambda m: str(values.get(m.group(1), "")), value)

        for to in recipients:
            address = re.search(r"<([^>]+)>", to)
            email = address.group(1) if address else to
            values = variables.get(email)
            if values is None:
                return Response(json.dumps({"message": f"recipient-variables has no entry for {email}"}), 400)
            headers = {k[2:]: fill(v, values) for k, v in form.items(multi=True) if k.startswith("h:")}
            self.deliver(
                email,
                Received(
                    form["subject"], fill(form.get("html", ""), values), fill(form.get("text", ""), values), headers
                ),
            )
        return Response(
            json.dumps({"id": f"<mg-{self.requests}@mg.example.org>", "message": "Queued. Thank you."}),
            200,
            content_type="application/json",
        )


MUSTACHE = re.compile(r"\{\{\{\s*([\w.]+)\s*\}\}\}|\{\{\s*([^{}]*?)\s*\}\}")


def mustache(template: str, model: dict[str, Any], *, html: bool) -> str:
    """Postmark's Mustachio, as far as a flat model goes: ``{{{x}}}`` as given, ``{{x}}`` HTML-escaped in HTML.

    Any other ``{{…}}`` is a tag too (a section, a comment, a partial): it renders as nothing, so a
    brace pair that was meant as text is lost, as it would be at Postmark.
    """

    def value(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return str(model.get(match.group(1), ""))
        name = match.group(2)
        found = str(model.get(name, "")) if re.fullmatch(r"[\w.]+", name) else ""
        return html_lib.escape(found) if html else found

    return MUSTACHE.sub(value, template)


def fake(server: HTTPServer, name: str) -> FakeProvider:
    provider = FakeProvider(server, name)
    server.expect_request(re.compile(".*")).respond_with_handler(provider.handle)
    return provider

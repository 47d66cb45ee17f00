"""One suite that every sender passes: SMTP against a real server, the APIs against local stand-ins.

(Django's BaseEmailBackendTests: the same expectations, whatever carries the mail.)
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest
from pytest_httpserver import HTTPServer

from pipeline.config import Settings, load_settings
from pipeline.delivery import sender_for
from pipeline.delivery.send import send_issue
from pipeline.jobs import freeze_next
from pipeline.store import Store
from pipeline.subscribers import ImportReport, candidate
from pipeline.tokens import Tokens
from tests.providers import API_KEY, Received, fake
from tests.smtp_sink import Sink

SECRET = "test-secret-0123456789abcdef-0123456789"
API_SENDERS = ["postmark", "sendgrid", "mailgun"]


class SmtpProvider:
    """The SMTP sink behind the same face as the API fakes."""

    name = "smtp"

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def sender_block(self) -> dict[str, object]:
        return {
            "kind": "smtp",
            "host": "127.0.0.1",
            "port": self.sink.port,
            "security": "none",
            "connections": 2,
            "timeout": 2,
        }

    @property
    def received(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for message in self.sink.handler.messages():
            html = message.get_body(("html",)).get_content()
            text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
            headers = {k: str(v) for k, v in message.items()}
            to = message["To"].addresses[0].addr_spec.lower()
            out.setdefault(to, []).append(Received(str(message["Subject"]), html, text, headers))
        return out


def _write_sender(settings: Settings, block: dict[str, object], **extra: object) -> Settings:
    options = {**block, "retry_base_seconds": 0, "max_retries": 3, **extra}
    lines = ["[sender]"] + [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in options.items()]
    text = re.sub(r"\[sender\][^\[]*", "\n".join(lines) + "\n\n", settings.path.read_text(encoding="utf-8"))
    settings.path.write_text(text, encoding="utf-8")
    return load_settings(settings.path)


@pytest.fixture(params=["smtp", *API_SENDERS])
def provider(request, httpserver: HTTPServer, monkeypatch):
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    if request.param == "smtp":
        with Sink() as sink:
            yield SmtpProvider(sink)
        return
    yield fake(httpserver, request.param)


def _api(example_settings, httpserver: HTTPServer, monkeypatch, kind: str, **extra: object):
    """A provider's stand-in on *httpserver*, and the bundled project sending through it."""
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    provider = fake(httpserver, kind)
    return provider, _write_sender(example_settings, provider.sender_block(), **extra)


def _subscribe(settings: Settings, names: list[str]) -> list[str]:
    emails = [f"reader{n}@example.org" for n in range(len(names))]
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers(
            "nyhetsbrev", [candidate(e, n or None) for e, n in zip(emails, names, strict=True)], report=ImportReport()
        )
    return emails


def _send(settings: Settings, *, real_sleep: bool = False):
    with Store.open(settings.storage_url) as store:
        issue = store.issue("nyhetsbrev") or freeze_next(settings, store, settings.lists[0]).issue
        report = send_issue(
            settings, store, issue, sender_for(settings), sleep=time.sleep if real_sleep else (lambda s: None)
        )
        return report, {r.email: r for r in store.outbox_rows(issue.id)}


def test_every_recipient_gets_their_own_message(example_settings, provider) -> None:
    settings = _write_sender(example_settings, provider.sender_block())
    # "Hej <name>!" with this name wraps in quoted-printable just before the dot, so a line of the body begins
    # with ".": sent without dot-stuffing, the relay would take the dot away.
    names = [f"Läsare {n}" for n in range(28)] + ["Bo & Co", "x" * 71 + ".punkt"]
    emails = _subscribe(settings, names)
    report, rows = _send(settings)
    assert report.finished and report.counts == {"sent": 30}, report
    received = provider.received
    assert Counter({e: len(received.get(e, [])) for e in emails}) == Counter({e: 1 for e in emails})
    tokens = Tokens(SECRET)
    for email, name in zip(emails, names, strict=True):
        [got] = received[email]
        assert got.subject == "Utmanande, lärorikt och inspirerande"
        unsubscribe = re.fullmatch(
            r"<(https://www\.produktionslyftet\.example/unsubscribe/(\S+))>", got.headers["List-Unsubscribe"]
        )
        assert unsubscribe, got.headers
        assert tokens.read_unsubscribe(unsubscribe.group(2)) == (rows[email].subscriber_id, "nyhetsbrev")
        assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert got.headers["List-Id"] == "Produktionslyftets nyhetsbrev <nyhetsbrev.produktionslyftet.example>"
        assert unsubscribe.group(1) in got.html and unsubscribe.group(1) in got.text
        assert f"Hej {name}!" in got.text
        assert f"Hej {name.replace('&', '&amp;')}!" in got.html
        assert "%%fb-" not in got.html + got.text and "%recipient." not in got.html + got.text
        assert rows[email].status == "sent"


TEMPORARY = {
    "smtp": lambda p, emails: p.sink.handler.rule(emails[0], "451"),
    "postmark": lambda p, emails: p.queue(429, {"Retry-After": "1"}),
    "sendgrid": lambda p, emails: p.queue(503, {"Retry-After": "1"}),
    "mailgun": lambda p, emails: p.queue(500),
}


def test_a_temporary_failure_is_deferred_then_delivered(example_settings, provider) -> None:
    settings = _write_sender(example_settings, provider.sender_block())
    emails = _subscribe(settings, [f"L {n}" for n in range(5)])
    TEMPORARY[provider.name](provider, emails)
    started = time.monotonic()
    report, rows = _send(settings, real_sleep=True)
    assert report.finished and report.counts == {"sent": 5}
    assert rows[emails[0]].attempts == 2, "the first try was deferred, the retry delivered"
    assert all(len(provider.received[e]) == 1 for e in emails)
    if provider.name in ("postmark", "sendgrid"):
        assert time.monotonic() - started >= 0.9, "Retry-After was honoured"


@pytest.mark.parametrize("kind", API_SENDERS)
def test_a_refused_api_key_stops_the_send(example_settings, httpserver, monkeypatch, kind: str) -> None:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", "wrong-key")
    provider = fake(httpserver, kind)
    settings = _write_sender(example_settings, provider.sender_block())
    _subscribe(settings, ["A", "B"])
    report, rows = _send(settings)
    assert report.paused == f"paused: {kind} refused the API key (401); run send again to resume"
    assert {r.status for r in rows.values()} == {"pending"}, "nobody was marked sent or failed: all wait"
    assert provider.requests == 1, "one refusal is enough"


def test_postmark_inactive_recipient_bounces(example_settings, httpserver, monkeypatch) -> None:
    provider, settings = _api(example_settings, httpserver, monkeypatch, "postmark")
    emails = _subscribe(settings, ["A", "B", "C"])
    provider.inactive.add(emails[1])
    report, rows = _send(settings)
    assert report.counts == {"sent": 2, "bounced": 1}
    assert rows[emails[1]].last_reply.startswith("postmark 406")
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", emails[1]).status == "bounced"


def test_batches_respect_the_provider_limit(example_settings, httpserver, monkeypatch) -> None:
    provider, settings = _api(example_settings, httpserver, monkeypatch, "sendgrid", batch_size=7)
    _subscribe(settings, [f"L{n}" for n in range(20)])
    report, _ = _send(settings)
    assert report.counts == {"sent": 20}
    assert provider.requests == 3, "20 recipients in batches of 7"


@pytest.mark.parametrize("kind", API_SENDERS)
def test_an_api_timeout_after_the_request_went_is_uncertain_not_resent(
    example_settings, httpserver, monkeypatch, kind: str
) -> None:
    """The provider accepted the batch but answered after our timeout: nobody gets it twice."""
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    provider = fake(httpserver, kind)
    settings = _write_sender(example_settings, {**provider.sender_block(), "timeout": 0.5})
    emails = _subscribe(settings, [f"L {n}" for n in range(6)])
    provider.answer_late(1.5)
    report, rows = _send(settings)
    provider.settle()
    assert report.counts == {"uncertain": 6} and report.finished
    assert sorted(report.uncertain) == sorted(emails)
    report, rows = _send(settings)  # a later send does not send them again by itself
    assert provider.requests == 1
    assert all(len(provider.received[e]) == 1 for e in emails)


def test_an_api_that_cannot_be_reached_defers(example_settings, monkeypatch) -> None:
    from tests.smtp_sink import free_port

    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    block = {"kind": "postmark", "api_key_env": "FLYGBLAD_TEST_API_KEY", "base_url": f"http://127.0.0.1:{free_port()}"}
    settings = _write_sender(example_settings, block, max_consecutive_failures=3)
    _subscribe(settings, ["A", "B"])
    report, rows = _send(settings)
    assert {r.status for r in rows.values()} == {"deferred"}, "nothing went: retried later"
    assert all("cannot reach postmark" in (r.last_reply or "") for r in rows.values())


def test_one_transient_503_is_retried_without_pausing_the_send(example_settings, httpserver, monkeypatch) -> None:
    """A refused request is one failure, not one per recipient in it; the retry goes as one request."""
    provider, settings = _api(example_settings, httpserver, monkeypatch, "sendgrid", max_consecutive_failures=2)
    emails = _subscribe(settings, [f"L {n}" for n in range(30)])
    provider.queue(503)
    report, rows = _send(settings)
    assert report.paused is None and report.finished and report.counts == {"sent": 30}
    assert provider.requests == 2, "the batch, then the whole batch again"
    assert all(len(provider.received[e]) == 1 for e in emails)


def test_a_400_naming_one_address_fails_that_address_only(example_settings, httpserver, monkeypatch) -> None:
    provider, settings = _api(example_settings, httpserver, monkeypatch, "sendgrid")
    emails = _subscribe(settings, [f"L {n}" for n in range(5)])
    provider.refuse.add(emails[2])
    report, rows = _send(settings)
    assert report.counts == {"sent": 4, "failed": 1} and report.finished
    assert rows[emails[2]].status == "failed" and "Does not contain a valid address" in rows[emails[2]].last_reply
    assert emails[2] not in provider.received and all(len(provider.received[e]) == 1 for e in emails if e != emails[2])


def test_a_request_level_refusal_pauses_with_everyone_pending(example_settings, httpserver, monkeypatch) -> None:
    """Postmark 422 for the request (a From it will not send as): pause, nobody failed for good."""
    provider, settings = _api(example_settings, httpserver, monkeypatch, "postmark")
    _subscribe(settings, ["A", "B", "C"])
    provider.queue(422, body=json.dumps({"ErrorCode": 400, "Message": "The 'From' address is not a Sender Signature"}))
    report, rows = _send(settings)
    assert report.paused and "Sender Signature" in report.paused
    assert {r.status for r in rows.values()} == {"pending"}
    report, rows = _send(settings)  # the communicator fixed the signature
    assert report.finished and report.counts == {"sent": 3}


def test_a_mailgun_base_url_with_v3_still_posts_to_the_api(example_settings, httpserver, monkeypatch) -> None:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    provider = fake(httpserver, "mailgun")
    block = {**provider.sender_block(), "base_url": httpserver.url_for("/v3").rstrip("/")}
    settings = _write_sender(example_settings, block)
    emails = _subscribe(settings, ["A", "B"])
    report, rows = _send(settings)
    assert report.counts == {"sent": 2} and all(len(provider.received[e]) == 1 for e in emails)


@pytest.mark.parametrize("kind", ["mailgun", "sendgrid"])
def test_a_200_that_is_not_the_api_is_not_success(example_settings, httpserver, monkeypatch, kind: str) -> None:
    """A wrong base_url whose server answers 200 to anything (Mailgun's root: "Mailgun Magnificent API")."""
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    httpserver.expect_request(re.compile(".*")).respond_with_data("Mailgun Magnificent API", 200)
    block = {"kind": kind, "api_key_env": "FLYGBLAD_TEST_API_KEY", "base_url": httpserver.url_for("/").rstrip("/")}
    if kind == "mailgun":
        block["domain"] = "mg.example.org"
    settings = _write_sender(example_settings, block)
    _subscribe(settings, ["A", "B"])
    report, rows = _send(settings)
    assert report.paused and "check [sender] base_url" in report.paused
    assert {r.status for r in rows.values()} == {"pending"}, "nobody recorded as sent"


def test_postmark_batches_are_cut_by_size_and_not_ascii_escaped(example_settings, httpserver, monkeypatch) -> None:
    import pipeline.delivery.postmark as postmark

    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    sizes: list[int] = []
    provider = fake(httpserver, "postmark")
    handle = provider.handle

    def measured(request):  # type: ignore[no-untyped-def]
        sizes.append(len(request.get_data()))
        assert b"\\u00e5" not in request.get_data(), "UTF-8 as it is, not \\u-escaped"
        return handle(request)

    provider.template_limit = 0  # no room for a template at Postmark: each message goes whole
    httpserver.clear_all_handlers()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(measured)
    limit = 200_000
    monkeypatch.setattr(postmark, "MAX_REQUEST_BYTES", limit)
    settings = _write_sender(example_settings, provider.sender_block())
    emails = _subscribe(settings, [f"Läsare {n}" for n in range(12)])
    report, rows = _send(settings)
    assert report.counts == {"sent": 12}
    assert len(sizes) > 1 and max(sizes) <= limit, sizes
    assert all(len(provider.received[e]) == 1 for e in emails)


@pytest.mark.parametrize("kind", API_SENDERS)
def test_a_confirmation_goes_through_every_api_sender(example_settings, httpserver, monkeypatch, kind: str) -> None:
    """Sign-up with SendGrid or Mailgun sent nothing before: the confirmation had no issue template."""
    from pipeline.jobs import deliver_mail, subscribe
    from pipeline.subscribers import candidate as checked

    provider, settings = _api(example_settings, httpserver, monkeypatch, kind)
    with Store.open(settings.storage_url) as store:
        signed = subscribe(settings, store, settings.lists[0], checked("ny.lasare@example.org", "Ny Läsare"))
        assert signed.confirmation_queued
        report = deliver_mail(settings, store)
    assert report.counts == {"sent": 1}, report
    [got] = provider.received["ny.lasare@example.org"]
    assert got.subject == "Bekräfta din prenumeration på Produktionslyftets nyhetsbrev"
    assert "/confirm/" in got.text and "List-Unsubscribe" not in got.headers


@pytest.mark.parametrize("kind", API_SENDERS)
def test_international_addresses_at_the_apis(example_settings, httpserver, monkeypatch, kind: str) -> None:
    """A domain goes IDNA-encoded; a local part that is not ASCII fails alone, with the reason."""
    provider, settings = _api(example_settings, httpserver, monkeypatch, kind)
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers(
            "nyhetsbrev",
            [candidate("ivan@exämple.org"), candidate("ivån@example.org"), candidate("anna@example.org")],
            report=ImportReport(),
        )
    report, rows = _send(settings)
    assert report.counts == {"sent": 2, "failed": 1}
    assert "SMTPUTF8" in rows["ivån@example.org"].last_reply
    assert set(provider.received) == {"ivan@xn--exmple-cua.org", "anna@example.org"}


def test_a_big_swedish_issue_to_500_stays_under_postmarks_request_limit(
    example_settings, httpserver, monkeypatch
) -> None:
    """500 messages of 100 KB of å, ä and ö: no request over Postmark's 50 MB, everyone once."""
    from datetime import UTC, datetime

    from pipeline.delivery import sender_for
    from pipeline.delivery.send import Outbox
    from pipeline.types import Issue

    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    sizes: list[int] = []
    provider = fake(httpserver, "postmark")
    handle = provider.handle

    def measured(request):  # type: ignore[no-untyped-def]
        sizes.append(len(request.get_data()))
        return handle(request)

    provider.template_limit = 0  # no room for a template at Postmark: each message goes whole
    httpserver.clear_all_handlers()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(measured)
    settings = _write_sender(example_settings, provider.sender_block())
    html = "<html><body>" + "<p>Välkommen till årets största mässa för företag i Småland och Göteborg.</p>" * 1400
    issue = Issue(
        1,
        "nyhetsbrev",
        1,
        "Stort",
        "",
        html + "</body></html>",
        "text",
        "0" * 16,
        "sv",
        datetime.now(UTC),
        datetime.now(UTC),
        "sending",
        (),
    )
    assert len(issue.html.encode("utf-8")) > 100_000
    outbox = Outbox(settings, settings.lists[0], issue, date=datetime.now(UTC))
    messages = [outbox.message(n, f"r{n}@example.org", f"Läsare {n}") for n in range(500)]
    with sender_for(settings) as sender:
        results = sender.send(messages)
    assert [r.status for r in results] == ["sent"] * 500
    assert len(sizes) >= 2 and max(sizes) < 50 * 1024 * 1024, sizes
    assert all(len(provider.received[f"r{n}@example.org"]) == 1 for n in range(500))


def test_a_mailgun_400_for_one_bad_address_fails_only_that_one(example_settings, httpserver, monkeypatch) -> None:
    """Mailgun refuses the request without saying which address: halving finds it, the others go."""
    provider, settings = _api(example_settings, httpserver, monkeypatch, "mailgun")
    emails = _subscribe(settings, [f"L {n}" for n in range(8)])
    provider.refuse.add(emails[5])
    report, rows = _send(settings)
    assert report.counts == {"sent": 7, "failed": 1} and report.finished
    assert rows[emails[5]].status == "failed" and "not a valid address" in rows[emails[5]].last_reply
    assert all(len(provider.received[e]) == 1 for e in emails if e != emails[5])


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun"])
def test_big_batches_are_halved_under_the_request_limit(example_settings, httpserver, monkeypatch, kind) -> None:
    from pipeline.delivery.api import ApiSender

    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    monkeypatch.setenv("FLYGBLAD_TEST_API_KEY", API_KEY)
    monkeypatch.setattr(ApiSender, "max_request_bytes", 60_000)
    provider = fake(httpserver, kind)
    settings = _write_sender(example_settings, provider.sender_block())
    emails = _subscribe(settings, [f"L {n}" for n in range(40)])
    report, rows = _send(settings)
    assert report.counts == {"sent": 40} and provider.requests > 1
    assert all(len(provider.received[e]) == 1 for e in emails)


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun"])
def test_a_message_with_its_own_body_goes_through_the_batch_apis(
    example_settings, httpserver, monkeypatch, kind
) -> None:
    """The protocol allows a message without a shared template (a third party's): sent alone, not refused."""
    from pipeline.delivery import Message

    provider, settings = _api(example_settings, httpserver, monkeypatch, kind)
    messages = [
        Message(
            key=(0, n),
            sender="nyhetsbrev@produktionslyftet.example",
            recipient=f"own{n}@example.org",
            to=f"own{n}@example.org",
            message_id=f"own.{n}@produktionslyftet.example",
            data=b"",
            subject=f"Eget {n}",
            from_header="Produktionslyftet <nyhetsbrev@produktionslyftet.example>",
            parts=lambda n=n: (f"<p>Hej {n}</p>", f"Hej {n}"),
        )
        for n in range(2)
    ]
    with sender_for(settings) as sender:
        results = sender.send(messages)
    assert [r.status for r in results] == ["sent", "sent"]
    assert provider.received["own1@example.org"][0].text == "Hej 1"


def _braced_issue(nonce: str = "0" * 16):  # type: ignore[no-untyped-def]
    """An issue whose own text, stylesheet and subject hold braces a template language would read as tags."""
    from datetime import UTC, datetime

    from pipeline.types import Issue

    html = (
        "<html><head><style>@media (max-width:480px){.kol{width:100%!important}}</style></head><body>"
        f"<p>%%fb-{nonce}-greeting%%</p><p>Kursen {{{{kurs}}}} kostar {{{{{{pris}}}}}} kr.</p>"
        f'<a href="%%fb-{nonce}-unsubscribe_url%%">Avsluta</a> <a href="%%fb-{nonce}-view_url%%">Webb</a>'
        + "<p>Ett stycke om mässan i Jönköping.</p>" * 600
        + "</body></html>"
    )
    text = f"%%fb-{nonce}-greeting%%\n\nKursen {{{{kurs}}}} kostar {{{{{{pris}}}}}} kr.\nAvsluta: %%fb-{nonce}-unsubscribe_url%%"
    now = datetime.now(UTC)
    return Issue(1, "nyhetsbrev", 1, "Nytt om {{kurs}}", "", html, text, nonce, "sv", now, now, "sending", ())


def _outbox_messages(settings: Settings, names: list[str]):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from pipeline.delivery.send import Outbox

    outbox = Outbox(settings, settings.lists[0], _braced_issue(), date=datetime.now(UTC))
    return [outbox.message(n, f"r{n}@example.org", name) for n, name in enumerate(names)]


def test_postmark_sends_an_issue_once_as_a_template(example_settings, httpserver, monkeypatch) -> None:
    """The body goes to Postmark once; each recipient costs their model and headers, and braces stay text."""
    provider, settings = _api(example_settings, httpserver, monkeypatch, "postmark")
    names = [f"Läsare {n}" for n in range(498)] + ["Bo & Co <b>", "{{Klammer}}"]
    messages = _outbox_messages(settings, names)
    with sender_for(settings) as sender:
        results = sender.send(messages)
        assert len(provider.templates) == 1, "one template while the issue is sent"
    assert [r.status for r in results] == ["sent"] * 500
    assert provider.templated == 500 and provider.templates_made == 1
    assert provider.templates == {}, "the template is removed when the sender closes"
    [upload] = provider.uploaded
    assert upload / 500 <= 2048, f"{upload / 500:.0f} bytes per recipient"
    whole = len(messages[0].parts()[0].encode())
    assert whole > 20_000 and upload < whole * 500 / 10, "far less than each recipient's whole HTML"
    for n in range(len(names)):
        [got] = provider.received[f"r{n}@example.org"]
        html, text = messages[n].parts()
        assert (got.html, got.text) == (html, text), "what Postmark renders is what the recipient would get whole"
        assert got.subject == "Nytt om {{kurs}}"
        assert "Kursen {{kurs}} kostar {{{pris}}} kr." in got.text
        assert "{.kol{width:100%!important}}" in got.html
    bo = provider.received["r498@example.org"][0]
    assert "Bo &amp; Co &lt;b&gt;" in bo.html and "Bo & Co <b>" in bo.text
    assert "{{Klammer}}" in provider.received["r499@example.org"][0].text


def test_a_postmark_template_removed_mid_send_is_made_again(example_settings, httpserver, monkeypatch) -> None:
    """Another worker finished and removed the template: the next batch gets 1101, makes it again, nobody twice."""
    provider, settings = _api(example_settings, httpserver, monkeypatch, "postmark", batch_size=7)
    emails = _subscribe(settings, [f"L {n}" for n in range(20)])
    handle = provider.handle

    def then_removed(request):  # type: ignore[no-untyped-def]
        answer = handle(request)
        if request.path == "/email/batchWithTemplates" and provider.requests == 1:
            provider.templates.clear()
        return answer

    httpserver.clear_all_handlers()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(then_removed)
    report, rows = _send(settings)
    assert report.counts == {"sent": 20}, report
    assert provider.templates_made == 2 and provider.templated == 20
    assert all(len(provider.received[e]) == 1 for e in emails)
    assert {r.attempts for r in rows.values()} == {1}, "a template error is ours: not counted against anyone"


def test_postmark_clears_its_own_old_templates_never_the_projects(example_settings, httpserver, monkeypatch) -> None:
    """The server's template limit is full: flygblad's leftovers go, the project's own stay; full of the
    project's own, the issue goes whole to each recipient instead."""
    provider, settings = _api(example_settings, httpserver, monkeypatch, "postmark")
    provider.template_limit = 3
    for alias in ("welcome", "password-reset", "flygblad-0123456789abcdef0123456789abcdef"):
        provider.templates[alias] = {"Name": alias, "Alias": alias, "Subject": "s", "HtmlBody": "h", "TextBody": "t"}
    emails = _subscribe(settings, ["A", "B", "C"])
    report, _ = _send(settings)
    assert report.counts == {"sent": 3} and provider.templated == 3
    assert set(provider.templates) == {"welcome", "password-reset"}, "the leftover went, the project's stayed"

    provider.templates["invoice"] = {"Name": "invoice", "Alias": "invoice", "Subject": "s", "HtmlBody": "h"}
    provider.templated = 0
    messages = _outbox_messages(settings, ["D", "E {{x}}"])
    with sender_for(settings) as sender:
        results = sender.send(messages)
    assert [r.status for r in results] == ["sent", "sent"] and provider.templated == 0, "no room: each went whole"
    assert set(provider.templates) == {"welcome", "password-reset", "invoice"}
    assert all(len(provider.received[e]) == 1 for e in emails)
    got = provider.received["r1@example.org"][0]
    assert (got.html, got.text) == messages[1].parts() and "{{kurs}}" in got.text

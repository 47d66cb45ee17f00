"""Delivery through a real SMTP server on 127.0.0.1: outcomes, retries, suppression, headers, crash safety."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Settings, load_settings
from pipeline.delivery import sender_for
from pipeline.delivery.send import send_issue
from pipeline.jobs import freeze_next
from pipeline.store import Store
from pipeline.subscribers import ImportReport, candidate
from pipeline.tokens import Tokens, load_secret
from tests.smtp_sink import Sink

SECRET = "test-secret-0123456789abcdef-0123456789"


@pytest.fixture(params=["pipelining", "one-command-at-a-time"])
def sink(request):
    with Sink(pipelining=request.param == "pipelining") as running:
        yield running


def _smtp_config(settings: Settings, port: int, **extra: object) -> Path:
    """Rewrite the project's config.toml to send through the sink; returns its path."""
    options = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "retry_base_seconds": 0,
        "max_retries": 3,
        "connections": 2,
        "timeout": 2,
        **extra,
    }
    lines = ["[sender]"] + [
        f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else f"{k} = {v}" for k, v in options.items()
    ]
    text = settings.path.read_text(encoding="utf-8")
    text = re.sub(r"\[sender\][^\[]*", "\n".join(lines) + "\n\n", text)
    settings.path.write_text(text, encoding="utf-8")
    return settings.path


def _subscribe(settings: Settings, count: int) -> list[str]:
    emails = [f"person{n}@example.org" for n in range(count)]
    with Store.open(settings.storage_url) as store:
        report = ImportReport()
        store.upsert_subscribers(
            "nyhetsbrev", [candidate(e, f"Person {n}") for n, e in enumerate(emails)], report=report
        )
    return emails


@pytest.fixture
def mail(example_settings, sink, monkeypatch):
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    settings = load_settings(_smtp_config(example_settings, sink.port))
    return settings


def _send(settings: Settings, **kwargs):
    with Store.open(settings.storage_url) as store:
        issue = store.issue("nyhetsbrev")
        if issue is None or issue.status == "sent":
            issue = freeze_next(settings, store, settings.lists[0]).issue
        report = send_issue(settings, store, issue, sender_for(settings), sleep=lambda s: None, **kwargs)
        return report, store.outbox_rows(issue.id)


def test_every_subscriber_gets_one_complete_message(mail, sink) -> None:
    emails = _subscribe(mail, 25)
    report, rows = _send(mail)
    assert report.finished and report.counts == {"sent": 25}
    assert sink.handler.count() == Counter({e: 1 for e in emails})
    assert {r.status for r in rows} == {"sent"}
    tokens = Tokens(SECRET)
    for message in sink.handler.messages():
        to = message["To"].addresses[0].addr_spec
        row = next(r for r in rows if r.email == to)
        assert message["Message-ID"] == f"<{row.message_id}>"
        assert message["List-Id"] == "Produktionslyftets nyhetsbrev <nyhetsbrev.produktionslyftet.example>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = re.fullmatch(
            r"<(https://www\.produktionslyftet\.example/unsubscribe/(\S+))>", message["List-Unsubscribe"]
        )
        assert url, message["List-Unsubscribe"]
        assert tokens.read_unsubscribe(url.group(2)) == (row.subscriber_id, "nyhetsbrev")
        html = message.get_body(("html",)).get_content()
        assert url.group(1) in html, "the footer links to the same unsubscribe URL"
        number = int(to.removeprefix("person").split("@")[0])
        assert f"Hej Person {number}!" in message.get_body(("plain",)).get_content()
    with Store.open(mail.storage_url) as store:
        assert store.issue("nyhetsbrev").status == "sent"


def test_550_bounces_and_suppresses_451_twice_is_delivered(mail, sink) -> None:
    emails = _subscribe(mail, 6)
    sink.handler.rule(emails[1], "550")
    sink.handler.rule(emails[2], "451", "451")
    report, rows = _send(mail)
    by_email = {r.email: r for r in rows}
    assert by_email[emails[1]].status == "bounced" and by_email[emails[1]].last_reply.startswith("550 5.1.1")
    assert by_email[emails[2]].status == "sent" and by_email[emails[2]].attempts == 3
    assert report.finished and report.counts == {"sent": 5, "bounced": 1}
    with Store.open(mail.storage_url) as store:
        assert store.subscriber("nyhetsbrev", emails[1]).status == "bounced"
    # The next issue does not go to the bounced address.
    page = mail.base_dir / "examples" / "site" / "nyheter.xml"
    page.write_text(
        page.read_text(encoding="utf-8").replace(
            "<item>",
            "<item><title>Extra</title><link>https://www.produktionslyftet.example/nyheter/extra</link>"
            "<description>Ny nyhet.</description></item><item>",
            1,
        ),
        encoding="utf-8",
    )
    from pipeline.collect import collect

    with Store.open(mail.storage_url) as store:
        assert collect(mail, store).total("new") == 1
    sink.handler.accepted.clear()
    report, rows = _send(mail)
    assert report.counts == {"sent": 5}
    assert emails[1] not in sink.handler.count()


def test_retries_give_up_and_dropped_connections_are_deferred(mail, sink) -> None:
    emails = _subscribe(mail, 4)
    sink.handler.rule(emails[0], "451", "451", "451", "451", "451")
    sink.handler.rule(emails[3], "drop", "drop")
    report, rows = _send(mail)
    by_email = {r.email: r for r in rows}
    assert by_email[emails[0]].status == "failed" and by_email[emails[0]].attempts == 4
    assert by_email[emails[0]].last_reply.startswith("gave up after 4 attempts: 451")
    assert by_email[emails[3]].status == "sent"
    assert sink.handler.count()[emails[3]] == 1
    assert report.finished and report.counts == {"sent": 3, "failed": 1}


def test_too_many_failures_in_a_row_pause_the_send(mail, sink, monkeypatch) -> None:
    settings = load_settings(_smtp_config(mail, sink.port, max_consecutive_failures=5, max_retries=0))
    emails = _subscribe(settings, 40)
    for email in emails:
        sink.handler.rule(email, "451")
    report, rows = _send(settings)
    assert report.paused and report.paused.startswith("paused after")
    assert not report.finished
    assert Counter(r.status for r in rows)["pending"] > 0, "the rest of the list is left for later, not burnt"


def test_a_dead_server_pauses_and_loses_nobody(mail, monkeypatch) -> None:
    from tests.smtp_sink import free_port

    settings = load_settings(_smtp_config(mail, free_port(), max_consecutive_failures=3))
    _subscribe(settings, 5)
    report, rows = _send(settings)
    assert report.paused and not report.finished
    assert {r.status for r in rows} <= {"pending", "deferred"}


def test_secret_is_required(example_settings, monkeypatch) -> None:
    monkeypatch.delenv("FLYGBLAD_SECRET", raising=False)
    settings = example_settings.model_copy(
        update={"web": example_settings.web.model_copy(update={"secret_file": None})}
    )
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="set the environment variable FLYGBLAD_SECRET"):
        load_secret(settings)


# ---------------------------------------------------------------- crash safety


def _flygblad(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    env["FLYGBLAD_SECRET"] = SECRET
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.parametrize("kill_after", [1, 700, 1500])
def test_sigkill_mid_send_then_resume(mail, sink, kill_after: int) -> None:
    """Kill `flygblad send` at some point, run it again: nobody twice, nobody missing but the uncertain."""
    emails = _subscribe(mail, 2000)
    project = mail.base_dir
    first = _flygblad("send", "--list", "nyhetsbrev", cwd=project)
    deadline = time.monotonic() + 120
    while len(sink.handler.accepted) < kill_after and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    got_before = len(sink.handler.accepted)
    assert got_before < 2000, "the kill came before the end"

    second = _flygblad("send", "--list", "nyhetsbrev", cwd=project)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err.decode()
    summary = out.decode().strip().splitlines()[-1]
    uncertain = re.findall(r"uncertain: (\S+@example\.org)", err.decode())
    counts = sink.handler.count()
    assert all(n == 1 for n in counts.values()), "nobody got the issue twice"
    missing = set(emails) - set(counts)
    assert missing == set(uncertain) - set(counts) or missing <= set(uncertain), "only the uncertain may be missing"
    assert len(uncertain) <= 2, "at most one message per connection was in flight"
    assert summary.endswith("(done)")

    third = _flygblad("send", "--list", "nyhetsbrev", "--resend-uncertain", cwd=project)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err.decode()
    counts = sink.handler.count()
    assert set(counts) == set(emails), "--resend-uncertain completes the list"
    assert all(n == 1 for e, n in counts.items() if e not in uncertain)
    assert all(n <= 2 for n in counts.values())


# ---------------------------------------------------------------- DKIM


def test_dkim_signature_verifies(mail, sink, tmp_path) -> None:
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (mail.base_dir / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    config = mail.path
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[dkim]\ndomain = "produktionslyftet.example"\n'
        'selector = "fb2026"\nprivate_key_path = "dkim.pem"\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    _subscribe(settings, 3)
    report, _ = _send(settings)
    assert report.counts == {"sent": 3}

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"fb2026._domainkey.produktionslyftet.example."
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    for _, data in sink.handler.accepted:
        assert data.startswith(b"DKIM-Signature: ")
        signed = re.search(rb"h=([^;]+);", data.replace(b"\r\n", b"")).group(1).replace(b" ", b"").lower().split(b":")
        assert {
            b"from",
            b"to",
            b"subject",
            b"date",
            b"message-id",
            b"list-unsubscribe",
            b"list-unsubscribe-post",
        } <= set(signed)
        assert dkim.verify(data, dnsfunc=dns)
        tampered = data.replace(b"Subject: Utmanande", b"Subject: Utmanade", 1)
        assert not dkim.verify(tampered, dnsfunc=dns)


# ---------------------------------------------------------------- the sender protocol


def test_third_party_sender_from_an_entry_point(example_settings, tmp_path, monkeypatch) -> None:
    """A sender another package installs, found through the flygblad.senders entry-point group."""
    import importlib

    site = tmp_path / "site-packages"
    (site / "carrier_pigeon-1.0.dist-info").mkdir(parents=True)
    (site / "carrier_pigeon-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: carrier-pigeon\nVersion: 1.0\n"
    )
    (site / "carrier_pigeon-1.0.dist-info" / "entry_points.txt").write_text(
        "[flygblad.senders]\npigeon = carrier_pigeon:PigeonSender\n"
    )
    (site / "carrier_pigeon.py").write_text(
        "from pipeline.delivery import Sender, SendResult\n"
        "class PigeonSender(Sender):\n"
        "    name = 'pigeon'\n"
        "    flown = []\n"
        "    def send(self, messages):\n"
        "        PigeonSender.flown.extend(m.recipient for m in messages)\n"
        "        return [SendResult(m, 'sent', reply=f\"coo {self.settings.options['loft']}\") for m in messages]\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    config = example_settings.path
    config.write_text(
        re.sub(
            r"\[sender\][^\[]*",
            '[sender]\nkind = "pigeon"\n\n[sender.options]\nloft = "Visby"\n\n',
            config.read_text(encoding="utf-8"),
        ),
        encoding="utf-8",
    )
    settings = load_settings(config)
    emails = _subscribe(settings, 3)
    report, rows = _send(settings)
    assert report.counts == {"sent": 3}
    import carrier_pigeon

    assert sorted(carrier_pigeon.PigeonSender.flown) == sorted(emails)
    assert {r.last_reply for r in rows} == {"coo Visby"}


def test_unknown_sender_names_the_choices(example_settings) -> None:
    from pipeline.delivery import sender_class
    from pipeline.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"no sender named 'owl' \(senders: file, mailgun, memory, postmark, sendgrid, smtp"
    ):
        sender_class("owl")


def test_rate_limit_spaces_the_batches(example_settings, monkeypatch) -> None:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    config = example_settings.path
    config.write_text(
        re.sub(
            r"\[sender\][^\[]*",
            '[sender]\nkind = "memory"\nbatch_size = 10\nrate_per_second = 100\n\n',
            config.read_text(encoding="utf-8"),
        ),
        encoding="utf-8",
    )
    settings = load_settings(config)
    _subscribe(settings, 50)
    waits: list[float] = []
    with Store.open(settings.storage_url) as store:
        issue = freeze_next(settings, store, settings.lists[0]).issue
        started = time.monotonic()
        report = send_issue(settings, store, issue, sender_for(settings), sleep=waits.append)
        spent = time.monotonic() - started + sum(waits)  # real time plus the pauses the limit asked for
    assert report.counts == {"sent": 50}
    assert waits, "the limit paused the send"
    assert spent >= 0.45, "50 messages at 100 a second take about half a second, however fast the sender"


def test_a_line_break_in_the_subject_is_refused(example_settings) -> None:
    from datetime import UTC, datetime

    from pipeline.errors import RenderError
    from pipeline.render.mime import MessageTemplate

    with Store.open(example_settings.storage_url) as store:
        from pipeline.issues import next_issue

        draft = next_issue(example_settings, store, example_settings.lists[0])
    with pytest.raises(RenderError, match="Subject header value contains a line break"):
        MessageTemplate(
            draft.rendered, sender="A <a@example.org>", date=datetime.now(UTC), subject="Hej\r\nBcc: evil@example.org"
        )


@given(st.emails())
def test_smtp_paths_are_what_smtplib_would_write(address: str) -> None:
    """The fast path for MAIL FROM / RCPT TO writes exactly what smtplib.quoteaddr writes."""
    from pipeline.delivery.smtp import _path

    assert _path(address) == smtplib.quoteaddr(address)

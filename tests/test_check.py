"""`flygblad init` and `flygblad check` through the CLI: every ✗ of check is produced here by a real fault."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.smtp_sink import Sink, free_port

SECRET = "check-secret-0123456789abcdef-0123456789"


def flygblad(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project made by `flygblad init` (offline: the bundled sample), collected."""
    done = flygblad("init", "sajt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "sajt"
    assert flygblad("collect", cwd=folder).returncode == 0
    return folder


def _edit(folder: Path, old: str, new: str) -> None:
    config = folder / "config.toml"
    text = config.read_text(encoding="utf-8")
    assert old in text, old
    config.write_text(text.replace(old, new, 1), encoding="utf-8")


def _check(folder: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, dict[str, str]]]:
    done = flygblad("check", "--json", *args, cwd=folder, env=env)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["ready"] == (done.returncode == 0)
    return done.returncode, {c["name"]: c for c in report["checks"]}


def test_init_writes_a_project_that_runs_and_never_overwrites(tmp_path: Path) -> None:
    done = flygblad("init", "sajt", "--name", "Föreningen", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "sajt"
    assert (folder / "var" / "secret").stat().st_mode & 0o777 == 0o600
    assert "var/" in (folder / ".gitignore").read_text() and "outbox/" in (folder / ".gitignore").read_text()
    assert 'title = "Föreningen"' in (folder / "config.toml").read_text(encoding="utf-8")
    (folder / "config.toml").write_text((folder / "config.toml").read_text() + "\n# mine\n", encoding="utf-8")
    again = flygblad("init", "sajt", cwd=tmp_path)
    assert again.returncode == 0 and "kept" in again.stdout
    assert (folder / "config.toml").read_text().endswith("# mine\n"), "init never overwrites a file"
    run = flygblad("run", cwd=folder)
    assert run.returncode == 0, run.stderr
    assert "8 new" in run.stdout
    preview = flygblad("preview", cwd=folder)
    assert preview.returncode == 0 and (folder / "preview" / "issue.eml").exists()
    code, checks = _check(folder)
    assert code == 0, checks
    assert checks["secret"]["state"] == checks["sender"]["state"] == checks["sources"]["state"] == "ok"
    assert checks["DKIM"]["state"] == "skip"


def test_init_with_a_site_proposes_its_feeds_and_sections(tmp_path: Path, httpserver) -> None:
    httpserver.expect_request("/").respond_with_data(
        """<html><head><title>Förbundet</title>
        <link rel="alternate" type="application/rss+xml" title="Förbundet: Nyheter" href="/feed/">
        <link rel="alternate" type="application/atom+xml" title="Ledare" href="/ledare/feed.atom">
        </head><body><nav><a href="/ledare/">Ledare</a> <a href="/artiklar/">Artiklar</a>
        <a href="https://elsewhere.example/nyheter/">Nyheter</a> <a href="/om/">Om oss</a></nav></body></html>""",
        content_type="text/html",
    )
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    site = httpserver.url_for("/")
    done = flygblad("init", "proj", "--site", site, "--language", "en", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "proj" / "config.toml").read_text(encoding="utf-8")
    urls = re.findall(r'^url = "([^"]+)"', text, re.M)
    assert urls[1:] == [f"{site}feed/", f"{site}ledare/feed.atom", f"{site}ledare/", f"{site}artiklar/"], urls
    kinds = re.findall(r'^category = "(\w+)"', text, re.M)
    assert kinds == ["article", "leader", "leader", "article"]
    assert 'name = "newsletter"' in text
    assert not (tmp_path / "proj" / "sample-site").exists()


def test_init_without_a_network_falls_back_to_the_sample(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = flygblad("init", "proj", "--site", f"http://127.0.0.1:{port}/", cwd=tmp_path)
    assert done.returncode == 0
    assert "could not read" in done.stderr and "bundled sample" in done.stderr
    assert flygblad("collect", cwd=tmp_path / "proj").returncode == 0


# ---------------------------------------------------------------- each ✗ of check


def test_a_short_secret_is_not_ready(project: Path) -> None:
    code, checks = _check(project, env={"FLYGBLAD_SECRET": "short"})
    assert code == 1 and checks["secret"]["state"] == "fail" and "too short" in checks["secret"]["detail"]


def test_a_database_that_does_not_answer_is_not_ready(project: Path) -> None:
    _edit(project, 'url = "sqlite:///var/flygblad.db"', f'url = "postgresql+psycopg://x@127.0.0.1:{free_port()}/x"')
    code, checks = _check(project)
    assert code == 1 and checks["database"]["state"] == "fail"


def test_a_file_sender_whose_folder_is_a_file_is_not_ready(project: Path) -> None:
    (project / "outbox").write_text("not a folder")
    code, checks = _check(project)
    assert code == 1 and "is not a folder" in checks["sender"]["detail"]


def _smtp(project: Path, port: int, extra: str = "") -> None:
    _edit(project, 'kind = "file"\ndir = "outbox"', f'kind = "smtp"\nhost = "127.0.0.1"\nport = {port}\n{extra}')


def test_an_smtp_relay_that_does_not_answer_is_not_ready_and_one_that_does_is(project: Path) -> None:
    _smtp(project, free_port(), 'security = "none"\ntimeout = 3')
    code, checks = _check(project)
    assert code == 1 and "cannot be reached" in checks["sender"]["detail"]
    with Sink() as relay:
        _edit(project, re.search(r"port = \d+", (project / "config.toml").read_text()).group(0), f"port = {relay.port}")
        code, checks = _check(project)
        assert checks["sender"]["state"] == "ok", checks["sender"]
        assert code == 0


def test_an_smtp_relay_without_starttls_or_login_is_not_ready(project: Path) -> None:
    with Sink() as relay:
        _smtp(project, relay.port)  # security defaults to starttls, which the sink does not offer
        code, checks = _check(project)
        assert code == 1 and "offers no STARTTLS" in checks["sender"]["detail"]
        _edit(project, 'kind = "smtp"\nhost', 'kind = "smtp"\nsecurity = "none"\nusername = "nyhetsbrev"\nhost')
        code, checks = _check(project)
        assert code == 1 and "offers no login (AUTH)" in checks["sender"]["detail"]


def test_a_test_message_that_cannot_be_sent_is_not_ready(project: Path) -> None:
    _smtp(project, free_port(), 'security = "none"\ntimeout = 3\nmax_retries = 0')
    code, checks = _check(project, "--send-test", "anna@example.org")
    assert code == 1 and checks["test message"]["state"] == "fail"
    code, checks = _check(project, "--send-test", "not an address")
    assert checks["test message"]["state"] == "fail" and "address" in checks["test message"]["detail"]


def test_a_provider_that_refuses_the_key_is_not_ready(project: Path, httpserver) -> None:
    httpserver.expect_request("/server").respond_with_json({"ErrorCode": 10, "Message": "Bad token"}, status=401)
    _edit(
        project,
        'kind = "file"\ndir = "outbox"',
        f'kind = "postmark"\napi_key_env = "PM_KEY"\nbase_url = "{httpserver.url_for("/").rstrip("/")}"',
    )
    code, checks = _check(project)
    assert code == 1 and "$PM_KEY is not set" in checks["sender"]["detail"]
    code, checks = _check(project, env={"PM_KEY": "wrong"})
    assert code == 1 and "refused the API key (401)" in checks["sender"]["detail"]
    httpserver.clear()
    httpserver.expect_request("/server").respond_with_data("gateway", status=502)
    code, checks = _check(project, env={"PM_KEY": "right"})
    assert code == 1 and "answered 502" in checks["sender"]["detail"]
    httpserver.clear()
    httpserver.expect_request("/server").respond_with_json({"Name": "Nyhetsbrev"})
    code, checks = _check(project, env={"PM_KEY": "right"})
    assert checks["sender"]["state"] == "ok" and "accepts the key" in checks["sender"]["detail"]
    _edit(project, httpserver.url_for("/").rstrip("/"), f"http://127.0.0.1:{free_port()}")
    code, checks = _check(project, env={"PM_KEY": "right"})
    assert code == 1 and "cannot be reached" in checks["sender"]["detail"]


def test_a_source_that_does_not_answer_is_not_ready(project: Path) -> None:
    _edit(project, 'url = "sample-site/nyheter.xml"', 'url = "sample-site/borta.xml"')
    code, checks = _check(project)
    assert code == 1 and "1 of 3 do not answer: nyheter" in checks["sources"]["detail"]


def test_a_broken_template_is_not_ready(project: Path) -> None:
    (project / "templates" / "partials").mkdir()
    (project / "templates" / "partials" / "footer.mjml.j2").write_text("{% if %}", encoding="utf-8")
    code, checks = _check(project)
    assert code == 1 and "footer.mjml.j2" in checks["templates (nyhetsbrev)"]["detail"]


def _footer(project: Path, extra: str) -> None:
    from pipeline.render.templates import BUILTIN_TEMPLATES

    footer = (BUILTIN_TEMPLATES / "partials" / "footer.mjml.j2").read_text(encoding="utf-8")
    (project / "templates" / "partials").mkdir(exist_ok=True)
    closing = footer.rindex("</mj-text>")
    (project / "templates" / "partials" / "footer.mjml.j2").write_text(
        footer[:closing] + extra + footer[closing:], encoding="utf-8"
    )


def test_an_issue_gmail_would_clip_as_sent_is_not_ready(project: Path) -> None:
    """Under 102 KB decoded, over it quoted-printable: Swedish letters take six bytes each on the wire."""
    _footer(project, "<p>" + "åäö " * 5000 + "</p>")  # 34 KB decoded, 95 KB as sent: in every issue
    code, checks = _check(project)
    assert code == 1 and "Gmail clips messages over 102 KB" in checks["templates (nyhetsbrev)"]["detail"], checks
    assert "KB as sent" in checks["templates (nyhetsbrev)"]["detail"]


def test_an_issue_spamassassin_calls_spam_is_not_ready(project: Path) -> None:
    from tests.conftest import require

    require("spamassassin", "FLYGBLAD_REQUIRE_SPAMASSASSIN", "the spam score check")
    _footer(project, "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X")  # SpamAssassin's test
    code, checks = _check(project)
    assert code == 1 and checks["spam score (nyhetsbrev)"]["state"] == "fail", checks


# ---------------------------------------------------------------- DKIM, against a DNS server on loopback


class Nameserver:
    """A DNS server on 127.0.0.1 answering TXT queries from a dict (dnspython builds the messages)."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        import dns.message
        import dns.rrset

        while True:
            try:
                data, client = self.socket.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            answer = dns.message.make_response(query)
            question = query.question[0]
            text = self.records.get(question.name.to_text().rstrip("."))
            if text is not None:
                chunks = " ".join(f'"{text[i : i + 200]}"' for i in range(0, len(text), 200))
                answer.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", chunks))
            else:
                answer.set_rcode(3)  # NXDOMAIN
            self.socket.sendto(answer.to_wire(), client)

    def __enter__(self) -> Nameserver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.socket.close()


def _dkim_key(path: Path) -> str:
    """A new RSA key at *path*; its public half as DNS publishes it (base64 DER)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(public).decode()


def test_dkim_checked_against_the_published_key(project: Path) -> None:
    mine = _dkim_key(project / "dkim.pem")
    other = _dkim_key(project / "other.pem")
    _edit(
        project,
        "[feeds]",
        '[dkim]\ndomain = "produktionslyftet.example"\nselector = "fb"\nprivate_key_path = "dkim.pem"\n\n[feeds]',
    )
    name = "fb._domainkey.produktionslyftet.example"
    with Nameserver({name: f"v=DKIM1; k=rsa; p={mine}"}) as dns_server:
        code, checks = _check(project, env={"FLYGBLAD_NAMESERVER": dns_server.address})
        assert checks["DKIM"]["state"] == "ok", checks["DKIM"]
    with Nameserver({name: f"v=DKIM1; k=rsa; p={other}"}) as dns_server:
        code, checks = _check(project, env={"FLYGBLAD_NAMESERVER": dns_server.address})
        assert code == 1 and "is not the public half" in checks["DKIM"]["detail"]
    with Nameserver({name: "v=DKIM1; k=rsa; p="}) as dns_server:
        code, checks = _check(project, env={"FLYGBLAD_NAMESERVER": dns_server.address})
        assert code == 1 and "has no public key" in checks["DKIM"]["detail"]
    with Nameserver({}) as dns_server:
        code, checks = _check(project, env={"FLYGBLAD_NAMESERVER": dns_server.address})
        assert checks["DKIM"]["state"] == "skip", "no record found is not a verdict on the key"
    (project / "dkim.pem").write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    code, checks = _check(project, env={"FLYGBLAD_NAMESERVER": "127.0.0.1:9"})
    assert code == 1 and "not an RSA private key" in checks["DKIM"]["detail"]


def test_an_smtp_login_the_relay_refuses_is_not_ready(project: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from tests.smtp_sink import SinkHandler

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:  # noqa: ANN001
        return AuthResult(success=auth_data.password == b"right", handled=False)  # handled=False: aiosmtpd answers 535

    port = free_port()
    controller = Controller(
        SinkHandler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        _smtp(project, port, 'security = "none"\nusername = "nyhetsbrev"\npassword_env = "SMTP_PASSWORD"')
        code, checks = _check(project, env={"SMTP_PASSWORD": "wrong"})
        assert code == 1 and "refused the login: 535" in checks["sender"]["detail"], checks["sender"]
        code, checks = _check(project, env={"SMTP_PASSWORD": "right"})
        assert checks["sender"]["state"] == "ok" and "logged in as nyhetsbrev" in checks["sender"]["detail"]
    finally:
        controller.stop()

"""The web side under its real server (waitress on a free port on 127.0.0.1), driven over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
import requests

from pipeline.config import Settings, load_settings
from pipeline.delivery import sender_for
from pipeline.delivery.send import send_issue
from pipeline.jobs import freeze_next
from pipeline.store import Store
from pipeline.subscribers import ImportReport, candidate
from pipeline.tokens import Tokens
from pipeline.web import close_server, make_server
from tests.smtp_sink import free_port

SECRET = "web-secret-0123456789abcdef-0123456789"


class Server:
    """The app under waitress in a thread, with serve's own limits (``make_server``), at ``self.url``."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = make_server(settings, host="127.0.0.1", port=self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/healthz", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc: object) -> None:
        close_server(self.server, self.thread)


def _configure(settings: Settings, base: str, extra: str = "") -> Settings:
    text = settings.path.read_text(encoding="utf-8")
    text = text.replace("[web]\n", f'[web]\nbase_url = "{base}"\nsubscribe_rate_limit = "5 per minute"\n', 1) + extra
    settings.path.write_text(text, encoding="utf-8")
    return load_settings(settings.path)


@pytest.fixture
def site(example_settings, monkeypatch):
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    with Server(settings, port) as server:
        yield settings, server


def _form(session: requests.Session, url: str) -> str:
    page = session.get(url)
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def _confirm_link(settings: Settings, email: str) -> str:
    """The link in the confirmation to *email*, once the server's mail pump has sent it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in sorted((settings.outbox_dir).glob("*confirm*.eml")):
            message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            if message["To"].addresses[0].addr_spec == email:
                return re.search(r"https?://\S+/confirm/\S+", message.get_content()).group(0)
        time.sleep(0.05)
    raise AssertionError(f"no confirmation mail to {email}")


def test_double_opt_in_and_no_enumeration(site) -> None:
    settings, server = site
    session = requests.Session()
    url = f"{server.url}/subscribe/nyhetsbrev"
    token = _form(session, url)
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers("nyhetsbrev", [candidate("known@example.org")], report=ImportReport())
    known = session.post(url, data={"csrf_token": token, "email": "known@example.org", "name": "K"})
    new = session.post(url, data={"csrf_token": token, "email": "new@example.org", "name": "Ny Person"})
    assert known.status_code == new.status_code == 200
    assert known.content == new.content, "the same bytes whether or not the address is known"
    assert "Tack! Om adressen är rätt" in new.text
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "new@example.org").status == "unconfirmed"
        assert store.subscriber("nyhetsbrev", "known@example.org").status == "active"
    link = _confirm_link(settings, "new@example.org")
    assert link.startswith(server.url + "/confirm/")
    page = requests.get(link)  # a link scanner's prefetch
    assert page.status_code == 200 and '<form method="post"' in page.text
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "new@example.org").status == "unconfirmed", "GET changes nothing"
    assert requests.post(link).status_code == 200
    assert requests.post(link).status_code == 200, "confirming twice is fine"
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "new@example.org").status == "active"


def test_csrf_bad_address_and_rate_limit(site) -> None:
    settings, server = site
    url = f"{server.url}/subscribe/nyhetsbrev"
    session = requests.Session()
    token = _form(session, url)
    bad = session.post(url, data={"csrf_token": token, "email": "not an address"})
    assert bad.status_code == 400 and "ser inte ut som en e-postadress" in bad.text
    statuses = [
        session.post(url, data={"csrf_token": token, "email": f"r{n}@example.org"}).status_code for n in range(6)
    ]
    assert 429 in statuses, statuses


def test_a_form_embedded_on_the_organisations_site_works(example_settings, monkeypatch) -> None:
    """A form on the organisation's own pages posts without our cookie: it got a raw "400 Bad Request".

    With double opt-in the confirmation mail is the proof, so the sign-up just works; with single
    opt-in the visitor lands on our form with the address filled in, one press from done.
    """
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    port = free_port()
    settings = _configure(
        example_settings,
        f"http://127.0.0.1:{port}",
        '\n[[lists]]\nname = "direkt"\ntitle = "Direkt"\nfrom = "P <d@produktionslyftet.example>"\n'
        "double_opt_in = false\n",
    )
    with Server(settings, port) as server:
        embedded = requests.post(
            f"{server.url}/subscribe/nyhetsbrev", data={"email": "inbaddad@example.org", "language": "en-US"}
        )
        assert embedded.status_code == 200 and "Tack! Om adressen är rätt" in embedded.text
        direct = requests.post(f"{server.url}/subscribe/direkt", data={"email": "direkt@example.org"})
        assert direct.status_code == 200 and 'value="direkt@example.org"' in direct.text
        assert "Tryck på Prenumerera" in direct.text
        with Store.open(settings.storage_url) as store:
            signed_up = store.subscriber("nyhetsbrev", "inbaddad@example.org")
            assert (signed_up.status, signed_up.language) == ("unconfirmed", "en"), (
                "the form's language, as the templates have it"
            )
            assert store.subscriber("direkt", "direkt@example.org") is None, "not without a press on our page"
        session = requests.Session()
        token = _form(session, f"{server.url}/subscribe/direkt")
        done = session.post(f"{server.url}/subscribe/direkt", data={"csrf_token": token, "email": "direkt@example.org"})
        assert done.status_code == 200 and "Du prenumererar nu på Direkt" in done.text


def test_the_feeds_self_links_are_where_serve_publishes_them(site) -> None:
    settings, server = site
    assert _cli(settings, "feeds").returncode == 0
    import feedparser

    for suffix in ("atom", "rss"):
        parsed = feedparser.parse(requests.get(f"{server.url}/feeds/all.{suffix}").content)
        [self_link] = [link.href for link in parsed.feed.links if link.rel == "self"]
        assert self_link == f"{server.url}/feeds/all.{suffix}"
        assert requests.get(self_link).status_code == 200, "a reader following the self link finds the feed"
    listed = requests.get(f"{server.url}/feeds/all.json").json()
    assert listed["feed_url"] == f"{server.url}/feeds/all.json"


def _sent_issue(settings: Settings, emails: list[str]) -> list[bytes]:
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers("nyhetsbrev", [candidate(e, "Zelda Quist") for e in emails], report=ImportReport())
        issue = freeze_next(settings, store, settings.lists[0]).issue
        send_issue(settings, store, issue, sender_for(settings))
    return [p.read_bytes() for p in sorted(settings.outbox_dir.glob("nyhetsbrev.*.eml"))]


def test_one_click_unsubscribe_and_forged_tokens(site) -> None:
    settings, server = site
    [data] = _sent_issue(settings, ["anna@example.org"])
    message = BytesParser(policy=policy.default).parsebytes(data)
    url = re.fullmatch(r"<(\S+)>", message["List-Unsubscribe"]).group(1)
    assert url.startswith(server.url + "/unsubscribe/")
    altered = url[:-1] + ("A" if url[-1] != "A" else "B")
    assert (
        requests.post(
            altered, data="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ).status_code
        == 404
    )
    forged = Tokens("another-secret-0123456789").unsubscribe(1, "nyhetsbrev")
    assert requests.post(f"{server.url}/unsubscribe/{forged}", data="List-Unsubscribe=One-Click").status_code == 404
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "anna@example.org").status == "active", "nothing changed"
    assert requests.get(url).status_code == 200
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "anna@example.org").status == "active", "GET changes nothing"
    # Exactly what a mail client sends (RFC 8058): no cookie, no CSRF token.
    answer = requests.post(
        url, data="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 200
    assert requests.post(url, data="List-Unsubscribe=One-Click").status_code == 200, "idempotent"
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "anna@example.org").status == "unsubscribed"


def test_confirm_tokens_expire_and_stay_on_their_list(site) -> None:
    settings, server = site
    tokens = Tokens(SECRET)
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers(
            "nyhetsbrev", [candidate("u@example.org")], status="unconfirmed", report=ImportReport()
        )
        subscriber = store.subscriber("nyhetsbrev", "u@example.org")
    cross = tokens.confirm(subscriber.id, "another-list")
    assert requests.post(f"{server.url}/confirm/{cross}").status_code == 404
    good = tokens.confirm(subscriber.id, "nyhetsbrev")
    assert tokens.read_confirm(good, max_age=-1) is None, "a token older than its age limit is refused"
    assert tokens.read_confirm(good) == (subscriber.id, "nyhetsbrev")
    assert requests.post(f"{server.url}/confirm/{good}x").status_code == 404, "altered"
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "u@example.org").status == "unconfirmed"


def test_archive_is_neutral_and_feeds_are_cached(site) -> None:
    settings, server = site
    _sent_issue(settings, ["anna@example.org"])
    index = requests.get(f"{server.url}/archive/")
    assert index.status_code == 200 and "Utmanande, lärorikt och inspirerande" in index.text
    issue = requests.get(f"{server.url}/archive/nyhetsbrev/1")
    assert issue.status_code == 200
    assert "Hej!" in issue.text and "Zelda" not in issue.text
    assert "/unsubscribe/" not in issue.text, "no personal unsubscribe link in the archive"
    assert requests.get(f"{server.url}/archive/nyhetsbrev/9").status_code == 404
    from pipeline.feeds import build_feeds, write_feeds
    from pipeline.web import write_archive

    with Store.open(settings.storage_url) as store:
        write_feeds(settings.feeds_dir, build_feeds(settings, store))
        [static] = write_archive(settings, store)
    assert static == settings.feeds_dir / "archive" / "nyhetsbrev" / "1.html"
    assert static.read_text(encoding="utf-8") == issue.text
    first = requests.get(f"{server.url}/feeds/all.atom")
    assert first.status_code == 200 and first.headers["Content-Type"].startswith("application/atom+xml")
    assert first.headers["ETag"] and first.headers["Last-Modified"]
    again = requests.get(f"{server.url}/feeds/all.atom", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and not again.content
    since = requests.get(f"{server.url}/feeds/all.json", headers={"If-Modified-Since": first.headers["Last-Modified"]})
    assert since.status_code == 304
    assert requests.get(f"{server.url}/feeds/all.json").headers["Content-Type"].startswith("application/feed+json")
    assert requests.get(f"{server.url}/feeds/nope.rss").status_code == 404


def test_health_and_security_headers(site) -> None:
    _, server = site
    for path in ("/healthz", "/subscribe/nyhetsbrev", "/archive/", "/unsubscribe/forged"):
        response = requests.get(server.url + path)
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "script-src" not in response.headers["Content-Security-Policy"], "no script allowed at all"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "<script" not in response.text
    assert requests.get(server.url + "/healthz").text == "ok\n"
    assert requests.get(server.url + "/subscribe/no-such-list").status_code == 404


def test_single_opt_in_list(example_settings, monkeypatch) -> None:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    settings.path.write_text(
        settings.path.read_text(encoding="utf-8").replace(
            'subject = "{first_title}"', 'subject = "{first_title}"\ndouble_opt_in = false'
        ),
        encoding="utf-8",
    )
    settings = load_settings(settings.path)
    with Server(settings, port) as server:
        session = requests.Session()
        token = _form(session, f"{server.url}/subscribe/nyhetsbrev")
        answer = session.post(
            f"{server.url}/subscribe/nyhetsbrev", data={"csrf_token": token, "email": "s@example.org"}
        )
        assert "Du prenumererar nu på" in answer.text
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "s@example.org").status == "active"
    assert not list(settings.outbox_dir.glob("*confirm*.eml")), "no confirmation mail for a single opt-in list"


def test_serve_refuses_without_a_secret(example_settings, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = example_settings.path
    config.write_text(config.read_text(encoding="utf-8").replace('secret_file = "var/secret"\n', ""), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--port", str(free_port())],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "set the environment variable FLYGBLAD_SECRET" in result.stderr


def test_subscribe_confirm_unsubscribe_in_a_browser(site, browser) -> None:
    """A person in Chromium: subscribe, confirm from the email, then leave with the mail client's one-click POST."""
    settings, server = site
    page = browser.new_page()
    page.goto(f"{server.url}/subscribe/nyhetsbrev")
    page.get_by_label("E-postadress").fill("browser@example.org")
    page.get_by_label("Namn (frivilligt)").fill("Webb Läsare")
    page.get_by_role("button", name="Prenumerera").click()
    page.wait_for_load_state()
    assert "Tack! Om adressen är rätt" in page.content()
    page.goto(_confirm_link(settings, "browser@example.org"))
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "browser@example.org").status == "unconfirmed"
    page.get_by_role("button", name="Bekräfta").click()
    page.wait_for_load_state()
    assert "Du prenumererar nu på Produktionslyftets nyhetsbrev" in page.content()
    page.close()
    with Store.open(settings.storage_url) as store:
        subscriber = store.subscriber("nyhetsbrev", "browser@example.org")
        assert subscriber.status == "active" and subscriber.name == "Webb Läsare"
    data = next(d for d in _sent_issue(settings, []) if b"browser@example.org" in d)
    url = re.fullmatch(r"<(\S+)>", BytesParser(policy=policy.default).parsebytes(data)["List-Unsubscribe"]).group(1)
    answer = requests.post(
        url, data="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 200
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "browser@example.org").status == "unsubscribed"


def test_unconfigured_webhooks_are_not_there(site) -> None:
    _, server = site
    for provider in ("postmark", "sendgrid", "mailgun", "ses"):
        assert requests.post(f"{server.url}/webhooks/{provider}", json={}).status_code == 404


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``flygblad`` in a subprocess, signing with the same secret as the server under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    env.update(FLYGBLAD_SECRET=SECRET, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=settings.base_dir, env=env, capture_output=True, text=True
    )


def test_the_preview_is_the_message_as_sent_with_a_link_that_says_preview(site) -> None:
    settings, server = site
    assert _cli(settings, "preview").returncode == 0
    message = BytesParser(policy=policy.default).parsebytes((settings.base_dir / "preview" / "issue.eml").read_bytes())
    assert message["List-Id"] == "Produktionslyftets nyhetsbrev <nyhetsbrev.produktionslyftet.example>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(\S+)>", message["List-Unsubscribe"]).group(1)
    assert url.startswith(server.url + "/unsubscribe/") and url in message.get_body(("html",)).get_content()
    for answer in (
        requests.get(url),
        requests.post(
            url, data="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ),
    ):
        assert answer.status_code == 200 and "förhandsvisning" in answer.text, answer.text
    with Store.open(settings.storage_url) as store:
        assert store.count_subscribers("nyhetsbrev") == 0, "a preview's link changes nothing"


def test_an_old_unsubscribe_link_after_removal_says_the_address_is_not_subscribed(site) -> None:
    settings, server = site
    [data] = _sent_issue(settings, ["anna@example.org"])
    url = re.fullmatch(r"<(\S+)>", BytesParser(policy=policy.default).parsebytes(data)["List-Unsubscribe"]).group(1)
    assert _cli(settings, "subscribers", "remove", "--list", "nyhetsbrev", "anna@example.org").returncode == 0
    answer = requests.post(url)
    assert answer.status_code == 200 and "Adressen prenumererar inte på Produktionslyftets nyhetsbrev" in answer.text
    assert "Länken fungerar inte" not in answer.text


def test_a_stopped_server_never_writes_into_a_file_that_reuses_its_descriptors(site, tmp_path) -> None:
    """waitress wakes its loop by writing b"x" to a pipe; a request thread that finished after the server was
    closed wrote that "x" into whatever file had reused the pipe's descriptor (a config being copied: "not valid
    TOML at line 1, column 2"; a subprocess's output: a stray "x" before its JSON)."""
    import os

    _settings, server = site
    requests.get(server.url + "/archive/")
    trigger = server.server.trigger
    close_server(server.server, server.thread)
    opened = []
    try:
        while True:  # the lowest free descriptors first: take them until the trigger's is reused
            path = tmp_path / f"file-{len(opened)}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT)
            opened.append((fd, path))
            if fd == trigger.trigger or len(opened) > 50:
                break
        trigger.pull_trigger()  # what a late request thread does when its response is ready
        for fd, path in opened:
            assert path.read_bytes() == b"", f"{path.name} (descriptor {fd}) got a stray byte"
    finally:
        for fd, _path in opened:
            os.close(fd)

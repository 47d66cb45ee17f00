"""The desk's safety, over HTTP against the real server: sessions, CSRF, the sign-in limit, cookies, passwords.

Accounts are made the way an operator makes them (``flygblad admin add`` in a subprocess).
Cookies are carried by hand: the session cookie is ``Secure``, which requests' cookie jar
rightly keeps off plain http (Chromium allows it on loopback: tests/test_admin_browser.py).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from pipeline.config import Settings, load_settings
from pipeline.store import Store
from tests.smtp_sink import free_port
from tests.test_jobs import SECRET, _env, flygblad
from tests.test_web import Server, _configure

EMAIL = "redaktor@example.org"
PASSWORD = "korrekt-häst-batteri-häftstift"
HOSTILE_TITLE = '<img src=x onerror="document.title=1">Farlig<script>document.title=2</script>'


def add_account(settings: Settings, email: str = EMAIL, password: str = PASSWORD, *, verbose: bool = False):
    """``flygblad admin add EMAIL --password-stdin``, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *(["-vv"] if verbose else []), "admin", "add", email, "--password-stdin"],
        cwd=settings.base_dir,
        env=_env(),
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def hostile_news(settings: Settings) -> None:
    """A news entry whose title and text carry markup that would run if it reached a page unescaped."""
    page = settings.base_dir / "examples" / "site" / "nyheter.xml"
    title = HOSTILE_TITLE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    entry = (
        f"<item><title>{title}</title><link>https://www.produktionslyftet.example/nyheter/farlig</link>"
        "<description>&lt;p&gt;Text&lt;script&gt;document.title=3&lt;/script&gt;"
        '&lt;a href="javascript:document.title=4"&gt;klicka&lt;/a&gt;&lt;/p&gt;</description></item><item>'
    )
    page.write_text(page.read_text(encoding="utf-8").replace("<item>", entry, 1), encoding="utf-8")


@dataclass
class Desk:
    """A browser of the desk over requests: cookies by hand, the CSRF token from the last page."""

    url: str
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""

    def _remember(self, response: requests.Response) -> None:
        for header in response.raw.headers.getlist("Set-Cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        if found:
            self.csrf = found.group(1)

    def _cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def get(self, path: str, **kwargs: object) -> requests.Response:
        response = requests.get(self.url + path, headers=self._cookie_header(), allow_redirects=False, **kwargs)
        self._remember(response)
        return response

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True, **kwargs: object):
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        response = requests.post(
            self.url + path, data=form, headers=self._cookie_header(), allow_redirects=False, **kwargs
        )
        self._remember(response)
        return response

    def sign_in(self, email: str = EMAIL, password: str = PASSWORD) -> requests.Response:
        self.get("/admin/login")
        answer = self.post("/admin/login", {"email": email, "password": password, "next": "/admin/"})
        if answer.status_code == 303:
            self.get("/admin/")  # the desk's own CSRF token
        return answer


@pytest.fixture
def desk(example_settings, monkeypatch) -> Iterator[tuple[Settings, Server]]:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    made = add_account(settings)
    assert made.returncode == 0, made.stderr
    with Server(settings, port) as server:
        yield settings, server


def _admin_paths(settings: Settings) -> list[tuple[str, str]]:
    """Every route of the desk with its methods, filled in with the sample's list and issue 1."""
    from pipeline.web import create_app

    app = create_app(settings)
    app.extensions["flygblad_mail_pump"].stop()
    paths = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin"):
            continue
        path = rule.rule.replace("<list_name>", "nyhetsbrev").replace("<int:number>", "1")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.append((method, path))
    return paths


def test_every_admin_route_refuses_without_a_session_and_shows_no_data(desk) -> None:
    settings, server = desk
    assert flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "hemlig@example.org").returncode == 0
    open_paths = {"/admin/login", "/admin/admin.css"}
    paths = [p for p in _admin_paths(settings) if p[1] not in open_paths]
    assert len(paths) >= 20, paths  # the whole desk, not a sample of it
    secrets_shown = ("hemlig@example.org", "Utmanande", "Produktionslyftets nyhetsbrev", EMAIL)
    for cookie in (None, "forged-session-value", "x" * 5000):
        visitor = Desk(server.url, {"flygblad_admin": cookie} if cookie else {})
        for method, path in paths:
            answer = visitor.get(path) if method == "GET" else visitor.post(path, {"email": "hemlig@example.org"})
            if method == "GET":
                assert answer.status_code == 303, (path, answer.status_code)
                assert answer.headers["Location"].startswith("/admin/login?next="), path
            else:
                assert answer.status_code == 401, (method, path, answer.status_code)
            assert not any(s in answer.text for s in secrets_shown), (method, path, answer.text[:300])
            assert answer.headers["Cache-Control"] == "no-store"
    with Store.open(settings.storage_url) as store:  # the POSTs changed nothing
        assert store.subscriber("nyhetsbrev", "hemlig@example.org").status == "active"


def test_a_form_without_the_csrf_token_gets_400_and_changes_nothing(desk) -> None:
    settings, server = desk
    editor = Desk(server.url)
    assert editor.sign_in().status_code == 303
    for data in (
        {"subject": "Kapat"},
        {"subject": "Kapat", "csrf_token": "fel"},
        {"subject": "Kapat", "csrf_token": ""},
    ):
        answer = editor.post("/admin/lists/nyhetsbrev/draft", data, csrf=False)
        assert answer.status_code == 400, data
    approve = editor.post("/admin/lists/nyhetsbrev/approve", {}, csrf=False)
    assert approve.status_code == 400
    with Store.open(settings.storage_url) as store:
        choices = store.draft_choices("nyhetsbrev")
        assert choices.subject is None and not choices.approved
    # The sign-in form is guarded too (a signed nonce matching its cookie).
    stranger = Desk(server.url)
    answer = stranger.post("/admin/login", {"email": EMAIL, "password": PASSWORD}, csrf=False)
    assert answer.status_code == 400 and "flygblad_admin" not in stranger.cookies
    # With the token, the same edit goes through.
    assert editor.post("/admin/lists/nyhetsbrev/draft", {"subject": "Rätt"}).status_code == 303
    with Store.open(settings.storage_url) as store:
        assert store.draft_choices("nyhetsbrev").subject == "Rätt"


def test_sign_in_is_rate_limited(desk) -> None:
    _settings, server = desk
    guesser = Desk(server.url)
    codes = [guesser.sign_in(password=f"gissning-nummer-{n}").status_code for n in range(5)]
    assert codes == [401] * 5
    assert guesser.sign_in().status_code == 429, "the right password too, once the limit is reached"
    assert "flygblad_admin" not in guesser.cookies


def test_session_cookie_flags_sign_out_and_no_open_redirect(desk) -> None:
    _settings, server = desk
    editor = Desk(server.url)
    editor.get("/admin/login")
    answer = editor.post(
        "/admin/login", {"email": EMAIL.upper(), "password": PASSWORD, "next": "https://evil.example/admin/"}
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/"
    [cookie] = [h for h in answer.raw.headers.getlist("Set-Cookie") if h.startswith("flygblad_admin=")]
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path"} <= set(flags), cookie
    assert flags["samesite"] == "SameSite=Strict" and flags["path"] == "Path=/admin"
    page = editor.get("/admin/")
    assert page.status_code == 200 and "Produktionslyftets nyhetsbrev" in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    stolen = dict(editor.cookies)
    assert editor.post("/admin/logout").status_code == 303
    assert Desk(server.url, stolen).get("/admin/").status_code == 303, "a signed-out cookie opens nothing"


def test_passwords_are_never_logged_or_stored_in_clear(desk, caplog) -> None:
    settings, server = desk
    second = "ett-annat-lösenord-som-är-långt"
    made = add_account(settings, "tva@example.org", second, verbose=True)
    assert made.returncode == 0, made.stderr
    assert second not in made.stdout + made.stderr
    short = add_account(settings, "tre@example.org", "kort")
    assert short.returncode == 1 and "at least 12 characters" in short.stderr and "kort\n" not in short.stderr
    caplog.set_level(logging.DEBUG)
    for password in (second, "fel-lösenord-här-1234"):
        Desk(server.url).sign_in("tva@example.org", password)
    assert second not in caplog.text and "fel-lösenord" not in caplog.text
    database = settings.storage_url.removeprefix("sqlite:///")
    raw = open(database, "rb").read()
    for password in (PASSWORD, second):
        assert password.encode() not in raw
    with Store.open(settings.storage_url) as store:
        assert store.admin("tva@example.org").password_hash.startswith("$argon2id$")


def test_collected_hostile_html_is_inert_in_the_desk(desk) -> None:
    settings, server = desk
    hostile_news(settings)
    assert flygblad(settings, "collect").returncode == 0
    editor = Desk(server.url)
    editor.sign_in()
    page = editor.get("/admin/lists/nyhetsbrev/draft")
    assert page.status_code == 200
    assert "&lt;img src=x onerror=" in page.text and "<img src=x" not in page.text
    assert "<script>document.title" not in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]  # and no script would run anyway
    preview = editor.get("/admin/lists/nyhetsbrev/preview")
    assert "<script" not in preview.text.lower() and "javascript:" not in preview.text
    assert "frame-ancestors 'self'" in preview.headers["Content-Security-Policy"]
    assert "script" not in preview.headers["Content-Security-Policy"]
    sources = editor.get("/admin/sources")
    assert sources.status_code == 200 and "<script>" not in sources.text


def test_subscribers_and_sources_at_the_desk(desk, tmp_path) -> None:
    """Add, search, import with a report by line, export, suppress, remove; a dead source's last collect."""
    settings, server = desk
    editor = Desk(server.url)
    editor.sign_in()
    base = "/admin/lists/nyhetsbrev/subscribers"
    added = editor.post(base + "/add", {"email": "Karin@Example.org", "name": "Karin Berg", "status": "active"})
    assert added.status_code == 303 and "1+added" in added.headers["Location"]
    bad = editor.post(base + "/add", {"email": "inte-en-adress", "status": "active"})
    assert "problem=" in bad.headers["Location"]
    csv_text = "E-post;Namn\nolle@example.org;Olle\nfel@@example;Fel\n\ufeff"
    answer = requests.post(
        server.url + base + "/import",
        data={"csrf_token": editor.csrf, "status": "active"},
        files={"file": ("lista.csv", csv_text.encode("utf-8"), "text/csv")},
        headers=editor._cookie_header(),
        allow_redirects=False,
    )
    assert answer.status_code == 200 and "Import av lista.csv" in answer.text
    assert "line 3" in answer.text and "1 added" in answer.text, answer.text
    found = editor.get(base + "?q=karin")
    assert "karin@example.org" in found.text.lower() and "olle@example.org" not in found.text
    export = editor.get("/admin/lists/nyhetsbrev/subscribers.csv")
    assert (
        export.headers["Content-Type"].startswith("text/csv") and "attachment" in export.headers["Content-Disposition"]
    )
    lines = export.text.splitlines()
    assert lines[0] == "email,name,language,status,created" and any(
        line.startswith("olle@example.org,Olle") for line in lines
    )
    assert editor.post(base + "/suppress", {"email": "olle@example.org"}).status_code == 303
    suppressed = editor.get("/admin/lists/nyhetsbrev/suppressed")
    assert "olle@example.org" in suppressed.text and "avregistrerad" in suppressed.text
    assert editor.post(base + "/remove", {"email": "karin@example.org"}).status_code == 303
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "karin@example.org") is None
        assert store.subscriber("nyhetsbrev", "olle@example.org").status == "unsubscribed"

    dead = free_port()  # nothing listens there
    text = settings.path.read_text(encoding="utf-8")
    text += f'\n[[sources]]\nname = "borta"\nkind = "feed"\nurl = "http://127.0.0.1:{dead}/feed.xml"\ncategory = "article"\n'
    settings.path.write_text(text, encoding="utf-8")
    assert flygblad(settings, "collect").returncode == 1
    with Server(load_settings(settings.path), free_port()) as second:
        other = Desk(second.url)
        other.sign_in()
        page = other.get("/admin/sources")
    rows = re.findall(r"<tr>.*?</tr>", page.text, flags=re.S)
    [gone] = [row for row in rows if "borta" in row]
    assert "cannot connect (connection refused)" in gone, gone
    [ledare] = [row for row in rows if ">ledare<" in row]
    assert "not collected yet" not in ledare


def test_send_now_from_the_desk_and_follow_its_progress(desk) -> None:
    settings, server = desk
    editor = Desk(server.url)
    editor.sign_in()
    nobody = editor.post("/admin/lists/nyhetsbrev/send")
    assert nobody.status_code == 303 and "has+no+active+subscribers" in nobody.headers["Location"], nobody.headers
    for address in ("a@example.org", "b@example.org", "c@example.org"):
        assert flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", address).returncode == 0
    editor = Desk(server.url)
    editor.sign_in()
    started = editor.post("/admin/lists/nyhetsbrev/send")
    assert started.status_code == 303 and started.headers["Location"].startswith("/admin/lists/nyhetsbrev/issues")
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = editor.get("/admin/lists/nyhetsbrev/issues")
        if "<td>skickat</td>" in page.text:
            break
        time.sleep(0.2)
    assert "3 av 3" in page.text and '<progress max="3" value="3"' in page.text, page.text
    assert 'http-equiv="refresh"' not in page.text, "a finished send stops refreshing"
    log = editor.get("/admin/lists/nyhetsbrev/issues/1")
    assert '<th scope="row">skickat</th><td>3</td>' in log.text
    assert len(list(settings.outbox_dir.glob("nyhetsbrev.1.*.eml"))) == 3
    again = editor.post("/admin/lists/nyhetsbrev/send")
    assert again.status_code == 303
    assert len(list(settings.outbox_dir.glob("nyhetsbrev.1.*.eml"))) == 3, "sent once"


def test_the_desk_speaks_the_sites_language(example_settings, monkeypatch) -> None:
    """Swedish for a Swedish site (the sample), English for an English one, and a project may reword it."""
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    # The project's rewording, there from the start (strings files are looked at once a second).
    own = settings.templates_dir / "admin" / "strings.toml"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text('[en]\n"Sign in" = "Log in to the newsroom"\n', encoding="utf-8")
    with Server(settings, port) as server:
        swedish = requests.get(server.url + "/admin/login")
    assert '<html lang="sv">' in swedish.text and ">Logga in</button>" in swedish.text
    text = settings.path.read_text(encoding="utf-8").replace('language = "sv"', 'language = "en"', 1)
    settings.path.write_text(text, encoding="utf-8")
    port = free_port()
    with Server(load_settings(settings.path), port) as server:
        english = requests.get(server.url + "/admin/login")
    assert '<html lang="en">' in english.text and ">Log in to the newsroom</button>" in english.text
    assert "Email address" in english.text

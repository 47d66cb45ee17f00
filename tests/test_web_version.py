"""What a subscriber sees after "Visa i webbläsaren": the issue's web version beside the email, in Chromium.

The issue is sent for real (file sender) to a subscriber without a name, whose
greeting is the same neutral "Hej!" the web version shows; the email is the
HTML part of that message. The web version is served by ``flygblad serve``'s
own server (waitress on 127.0.0.1) with its real headers, CSP included.
"""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
import requests

from pipeline.config import Settings
from pipeline.delivery import sender_for
from pipeline.delivery.send import send_issue
from pipeline.jobs import freeze_next
from pipeline.store import Store
from pipeline.subscribers import ImportReport, candidate
from tests.browser import axe_violations, pixel_difference, screenshot
from tests.smtp_sink import free_port
from tests.test_web import Server, _configure, _confirm_link, _form

SECRET = "web-version-secret-0123456789abcdef-0123"
WIDTHS = (320, 375, 600)
#: Share of pixels that may differ between the web version and the email. The two are the same HTML
#: but for the footer's one link ("Avsluta prenumerationen" to a subscriber, "Prenumerera på …" on the
#: web): one line of ~20 px in a page of ~3,000–4,000 px at 320–600 px wide, at most ~1 % of the
#: pixels. Anything structural (styles blocked, preheader shown, a column reflowed) moves everything
#: below it and differs on most of the page.
MAX_DIFFERENCE = 0.02


@pytest.fixture
def published(example_settings, monkeypatch, tmp_path) -> tuple[Settings, Server, Path]:
    """Issue 1 sent to one subscriber; the web side serving; the received HTML part as a file."""
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers("nyhetsbrev", [candidate("anna@example.org", None)], report=ImportReport())
        issue = freeze_next(settings, store, settings.lists[0]).issue
        assert issue is not None
        send_issue(settings, store, issue, sender_for(settings))
    [eml] = sorted(settings.outbox_dir.glob("nyhetsbrev.*.eml"))
    message = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    html = message.get_body(preferencelist=("html",)).get_content()
    email_file = tmp_path / "received.html"
    email_file.write_text(html, encoding="utf-8")
    with Server(settings, port) as server:
        yield settings, server, email_file


def _open(browser, url: str, width: int, *, scheme: str = "light", bypass_csp: bool = False):
    context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme, bypass_csp=bypass_csp)
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(url)
    page.wait_for_load_state("load")
    return context, page, violations


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", WIDTHS)
def test_the_web_version_looks_like_the_email(browser, published, width: int, scheme: str) -> None:
    settings, server, email_file = published
    url = f"{server.url}/archive/nyhetsbrev/1"
    web_context, web, violations = _open(browser, url, width, scheme=scheme)
    assert violations == [], f"the page's own styles are refused: {violations[:2]}"
    assert web.evaluate("document.documentElement.scrollWidth") <= width, "no horizontal scroll"
    with Store.open(settings.storage_url) as store:
        preheader = store.issue("nyhetsbrev", 1).preheader
    shown = web.evaluate(
        """(text) => [...document.querySelectorAll('body div')]
            .filter(d => d.textContent.trim().startsWith(text.slice(0, 40)) && d.children.length === 0)
            .map(d => getComputedStyle(d).display)""",
        preheader,
    )
    assert shown and all(d == "none" for d in shown), "the preheader is hidden on the web version, as in the email"
    button = web.get_by_role("link", name="Läs hela ledaren").first
    colour = button.evaluate("a => getComputedStyle(a).color")
    assert colour == "rgb(255, 255, 255)", f"the button's text is white on its blue, not {colour}"
    loaded = web.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert loaded, "the issue's images come from flygblad's own /media/"
    email_context, email, _ = _open(browser, email_file.as_uri(), width, scheme=scheme)
    web_png = screenshot(web, f"web-version-{width}-{scheme}")
    email_png = screenshot(email, f"email-{width}-{scheme}")
    difference = pixel_difference(web_png, email_png)
    assert difference <= MAX_DIFFERENCE, f"{difference:.1%} of the pixels differ (sizes must match)"
    web_context.close()
    email_context.close()


def test_the_web_version_offers_the_list_not_an_unsubscribe_link(published) -> None:
    settings, server, _ = published
    page = requests.get(f"{server.url}/archive/nyhetsbrev/1").text
    assert "Avsluta prenumerationen" not in page, "no one to unsubscribe on a page anyone may read"
    assert re.search(rf'<a [^>]*href="{server.url}/subscribe/nyhetsbrev"[^>]*>Prenumerera</a>', page)
    index = requests.get(f"{server.url}/archive/nyhetsbrev/")
    assert index.status_code == 200
    assert 'href="/subscribe/nyhetsbrev"' in index.text
    assert f'href="{server.url}/archive/nyhetsbrev/1"' in index.text
    assert requests.get(f"{server.url}/archive/no-such-list/").status_code == 404


def test_the_web_version_allows_its_own_styles_and_no_script(published) -> None:
    _, server, _ = published
    response = requests.get(f"{server.url}/archive/nyhetsbrev/1")
    csp = response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert "'sha256-" in csp, "each of the email's styles allowed by its hash"


def test_public_pages_pass_axe(browser, published) -> None:
    settings, server, email_file = published
    [eml] = sorted(settings.outbox_dir.glob("nyhetsbrev.*.eml"))
    unsubscribe = re.search(r"<(http\S+/unsubscribe/\S+)>", eml.read_text(encoding="utf-8")).group(1)
    session = requests.Session()
    token = _form(session, f"{server.url}/subscribe/nyhetsbrev")
    session.post(f"{server.url}/subscribe/nyhetsbrev", data={"csrf_token": token, "email": "ny@example.org"})
    pages = {
        "confirm": _confirm_link(settings, "ny@example.org"),
        "unsubscribe": unsubscribe,
        "email": email_file.as_uri(),
        "web version": f"{server.url}/archive/nyhetsbrev/1",
        "archive": f"{server.url}/archive/",
        "list archive": f"{server.url}/archive/nyhetsbrev/",
        "subscribe": f"{server.url}/subscribe/nyhetsbrev",
        "bad link": f"{server.url}/unsubscribe/forged",
    }
    found = {}
    for name, url in pages.items():
        context, page, _ = _open(browser, url, 375, bypass_csp=True)
        found[name] = axe_violations(page)
        context.close()
    assert not any(found.values()), found

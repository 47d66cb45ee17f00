"""A communicator's week at the desk, in Chromium: sign in, shape the issue, test, approve; a firing sends it.

Every page of the desk is checked with axe-core on the way (0 serious or critical violations), and
the screenshots of the walk are the README's pictures (docs/desk-*.png).
"""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
import requests

from pipeline.config import load_settings
from pipeline.store import Store
from tests.browser import axe_violations, screenshot
from tests.smtp_sink import free_port
from tests.test_admin import EMAIL, PASSWORD, add_account, hostile_news
from tests.test_jobs import SECRET, add_news, flygblad, with_list_options, with_schedule
from tests.test_web import Server, _configure

DOCS = Path(__file__).parent.parent / "docs"


def _message(path: Path):
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


@pytest.fixture
def week(example_settings, monkeypatch):
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    with_list_options(settings, 'approval = "required"', "track_clicks = true")
    settings = with_schedule(settings)
    assert add_account(settings).returncode == 0
    for address in ("anna@example.org", "bertil@example.org"):
        assert flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", address).returncode == 0
    settings = load_settings(settings.path)
    with Server(settings, port) as server:
        yield settings, server


def _checked(page, name: str, failures: list[str]) -> None:
    """axe-core on the page as it is now; its violations are kept for the test's one assertion."""
    failures.extend(f"{name}: {line}" for line in axe_violations(page))


def test_a_communicators_week_in_the_browser(week, browser) -> None:
    settings, server = week
    failures: list[str] = []
    # Monday: a collect fills the draft (one new text since the sample's).
    add_news(settings, "mandag")
    assert flygblad(settings, "collect").returncode == 0

    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})  # axe is a script
    page = context.new_page()
    page.goto(f"{server.url}/admin/lists/nyhetsbrev/draft")
    assert "/admin/login" in page.url, "no session: sent to sign in"
    _checked(page, "login", failures)
    page.get_by_label("E-postadress").fill(EMAIL)
    page.get_by_label("Lösenord").fill(PASSWORD)
    page.get_by_role("button", name="Logga in").click()
    page.wait_for_url("**/admin/lists/nyhetsbrev/draft")
    [cookie] = [c for c in context.cookies() if c["name"] == "flygblad_admin"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    items = page.locator("ol.items > li .item-title a")
    titles = items.all_inner_texts()
    assert "Nytt: mandag" in titles and len(titles) == 9, titles
    assert page.get_by_text("Inte godkänt").is_visible()
    _checked(page, "draft", failures)

    # Write a note and change the subject.
    page.get_by_label("Ämne", exact=True).fill("Veckans nyhetsbrev: smart industri")
    page.get_by_label("Redaktörens inledning").fill(
        "**Välkommen** till veckans nummer! [Anmäl dig](https://example.org/anmal)"
    )
    page.get_by_role("button", name="Spara", exact=True).click()
    assert page.get_by_role("status").inner_text() == "Utkastet är sparat."
    # Drop one item; move a leader up to the top.
    page.get_by_role("button", name="Ta bort: Reflektionsdagarna 2018: hållbarhet i fokus").click()
    assert "Borttagen: Reflektionsdagarna" in page.get_by_role("status").inner_text()
    for _ in range(2):
        page.get_by_role("button", name="Flytta upp: Ett år med Smart industri").click()
    titles = items.all_inner_texts()
    assert titles[0] == "Ett år med Smart industri" and "Reflektionsdagarna 2018: hållbarhet i fokus" not in titles
    assert page.get_by_role("button", name="Ta tillbaka: Reflektionsdagarna 2018: hållbarhet i fokus").is_visible()
    (DOCS / "desk-draft.png").write_bytes(screenshot(page, "desk-draft"))

    # The preview at phone width: the note is there, and nothing is wider than the phone.
    page.get_by_role("link", name="Mobil (375 px)").click()
    frame_element = page.locator("iframe")
    assert frame_element.get_attribute("width") == "375"
    frame = frame_element.content_frame
    frame.get_by_text("till veckans nummer!").wait_for()
    assert frame.locator("strong", has_text="Välkommen").count() == 1
    assert frame.locator("h2, h3").first.inner_text() == "Ett år med Smart industri"
    assert frame.locator("html").evaluate("e => e.scrollWidth") <= 375
    page.set_viewport_size({"width": 1280, "height": 1600})
    shot = screenshot(page, "desk-phone-preview")
    (DOCS / "desk-phone-preview.png").write_bytes(shot)

    # A test to herself, then approve.
    page.get_by_label("Skicka ett test till").fill("redaktor@example.org")
    page.get_by_role("button", name="Skicka test").click()
    assert "skickat till redaktor@example.org" in page.get_by_role("status").inner_text()
    [test] = [p for p in settings.outbox_dir.glob("*.eml") if "redaktor" in _message(p)["To"]]
    assert _message(test)["Subject"] == "[TEST] Veckans nyhetsbrev: smart industri"
    test.unlink()
    page.get_by_role("button", name="Godkänn numret").click()
    assert f"Godkänt av {EMAIL}" in page.locator(".state").inner_text()
    _checked(page, "draft approved", failures)

    # Thursday 07:30: the schedule fires and sends the approved issue.
    fired = flygblad(settings, "schedule", "--run", "veckan")
    assert fired.returncode == 0 and "fired: done" in fired.stdout, fired.stdout + fired.stderr
    sent = sorted(settings.outbox_dir.glob("nyhetsbrev.1.*.eml"))
    assert len(sent) == 2
    message = _message(sent[0])
    assert message["Subject"] == "Veckans nyhetsbrev: smart industri"
    html = message.get_body(("html",)).get_content()
    assert "Reflektionsdagarna" not in html and "<strong>Välkommen</strong>" in html

    # A reader follows a link in the sent message: the click is counted, not the reader.
    link = re.search(r'href="(http://127\.0\.0\.1:\d+/c/[^"]+)"', html).group(1)
    followed = requests.get(link, allow_redirects=False)
    assert followed.status_code == 302

    # Friday: the delivery log and the clicks.
    page.goto(f"{server.url}/admin/lists/nyhetsbrev/issues")
    _checked(page, "issues", failures)
    page.get_by_role("link", name="1", exact=True).click()
    page.wait_for_url("**/issues/1")
    counts = page.get_by_role("table", name="Mottagare per status")
    assert counts.get_by_role("row", name="skickat 2").count() == 1
    clicks = page.get_by_role("table", name="Klick per länk (aldrig per person)")
    assert clicks.get_by_role("cell", name=followed.headers["Location"]).count() == 1
    assert clicks.locator("td").nth(1).inner_text() == "1"
    _checked(page, "issue", failures)
    (DOCS / "desk-issue.png").write_bytes(screenshot(page, "desk-issue"))

    # The rest of the desk, each page checked.
    for name, path in (
        ("lists", "/admin/"),
        ("subscribers", "/admin/lists/nyhetsbrev/subscribers"),
        ("suppressed", "/admin/lists/nyhetsbrev/suppressed"),
        ("schedules", "/admin/schedules"),
        ("sources", "/admin/sources"),
    ):
        page.goto(server.url + path)
        assert page.locator("h1").count() == 1, name
        _checked(page, name, failures)
    page.goto(f"{server.url}/admin/schedules")
    assert "klar" in page.get_by_role("table", name="Senaste körningar av veckan").inner_text()
    page.get_by_role("button", name="Logga ut").click()
    page.wait_for_url("**/admin/login")
    context.close()
    assert not failures, "\n".join(failures)


def test_hostile_html_is_inert_in_the_desk_in_a_browser(week, browser) -> None:
    """A collected title and text that would run script, seen in Chromium with the desk's own CSP on."""
    settings, server = week
    hostile_news(settings)
    assert flygblad(settings, "collect").returncode == 0
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server.url}/admin/login")
    page.get_by_label("E-postadress").fill(EMAIL)
    page.get_by_label("Lösenord").fill(PASSWORD)
    page.get_by_role("button", name="Logga in").click()
    page.goto(f"{server.url}/admin/lists/nyhetsbrev/draft")
    assert page.get_by_role("link", name=re.compile("Farlig")).count() == 1
    assert page.locator("ol.items img").count() == 0, "the title's <img> is text"
    frame = page.frame_locator("iframe")
    frame.get_by_text("klicka").wait_for()
    assert frame.locator("a[href^='javascript:']").count() == 0
    page.wait_for_timeout(300)
    titles = {page.title(), page.frames[1].title()}
    assert not any(t in ("1", "2", "3", "4") for t in titles) and not dialogs, titles
    with Store.open(settings.storage_url) as store:
        assert store.count_items() >= 9
    context.close()

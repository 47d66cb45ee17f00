"""The email as a reader sees it: headless Chromium at phone and desktop widths, and SpamAssassin.

Chromium is Debian's (/usr/bin/chromium) driven by Playwright; Playwright never
downloads a browser here. Without Chromium these tests skip with a reason on a
developer's machine; CI sets FLYGBLAD_REQUIRE_BROWSER=1, which makes them fail
instead. SpamAssassin likewise, with FLYGBLAD_REQUIRE_SPAMASSASSIN=1.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pipeline.issues import next_issue
from pipeline.store import Store
from tests.browser import screenshot
from tests.conftest import require


@pytest.fixture
def preview(example_settings, tmp_path) -> dict[str, Path]:
    from pipeline.cli import _preview_files

    with Store.open(example_settings.storage_url) as store:
        draft = next_issue(example_settings, store, example_settings.lists[0])
    assert draft is not None
    html, text, eml = _preview_files(example_settings, draft, tmp_path / "preview")
    return {"html": html, "text": text, "eml": eml}


LAYOUT = """() => {
    const box = e => { const r = e.getBoundingClientRect(); return {x: r.x, right: r.right, y: r.y, bottom: r.bottom}; };
    const text = [...document.querySelectorAll('h3')].map(box);
    return {
        scroll: document.documentElement.scrollWidth,
        headings: [...document.querySelectorAll('h1, h2, h3, h4')].map(h => [h.tagName, h.textContent.trim()]),
        images: [...document.querySelectorAll('img')].map(i => ({alt: i.alt, ...box(i)})),
        textLeft: Math.min(...text.map(t => t.x)),
        textRight: Math.max(...text.map(t => t.right)),
    };
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [320, 375, 600])
def test_layout_in_chromium(browser, preview, width: int, scheme: str) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    page.goto(preview["html"].as_uri())
    screenshot(page, f"issue-{width}-{scheme}")
    layout = page.evaluate(LAYOUT)
    assert layout["scroll"] <= width, "no horizontal scroll"
    levels = [int(tag[1]) for tag, _ in layout["headings"]]
    assert levels.count(1) == 1 and layout["headings"][0] == ["H1", "Produktionslyftet"], layout["headings"]
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:], strict=False)), f"headings skip a level: {levels}"
    assert ["H2", "Artiklar"] in layout["headings"], "the articles have a heading of their own"
    for image in layout["images"]:
        if image["right"] - image["x"] >= width - 1:
            continue  # a leader's lead image: the whole width, above the text
        assert image["x"] >= layout["textLeft"] - 1 and image["right"] <= width - 27, f"image outside the text: {image}"
        if width < 480:
            assert abs(image["x"] - layout["textLeft"]) <= 1, f"a card's image starts where its text does: {image}"
    background = page.evaluate("getComputedStyle(document.querySelector('.card')).backgroundColor")
    assert (background == "rgb(255, 255, 255)") == (scheme == "light"), f"{scheme}: the card is {background}"
    # On a phone the article cards stack: the card's text sits below its image, not beside it.
    card_title = page.locator("h3", has_text="Robotlyftet")
    card_image = page.locator("img[alt^='En industrirobot']")
    title_box, image_box = card_title.bounding_box(), card_image.bounding_box()
    if width < 480:
        assert title_box["y"] >= image_box["y"] + image_box["height"] - 1
    else:
        assert title_box["x"] >= image_box["x"] + image_box["width"]
    context.close()


def test_every_card_has_one_link_and_a_byline(preview) -> None:
    """One clear link per card (its title, or a leader's button); author and date on every card that has them."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(preview["html"].read_text(encoding="utf-8"), "html.parser")
    links: dict[str, int] = {}
    for a in soup.find_all("a", href=True):
        links[a["href"]] = links.get(a["href"], 0) + 1
    items = [h.a["href"] for h in soup.find_all("h3")] + [
        a["href"] for a in soup.find_all("a") if a.get_text(strip=True) == "Läs hela ledaren"
    ]
    assert items and all(links[url] == 1 for url in items), {url: links[url] for url in items}
    robot = (
        soup.find("h3", string=lambda s: s and "Robotlyftet" in s)
        or soup.find("a", string=lambda s: s and "Robotlyftet" in s).parent
    )
    byline = robot.find_next("p", class_="byline")
    assert byline is not None and "Karin Ek" in byline.get_text() and "2018" in byline.get_text(), (
        "the image card has its byline"
    )


def test_outlook_and_apple_mail_get_what_others_get(preview) -> None:
    """Outlook sizes columns from the MSO tables: a card's image and its padding fit the image column.
    iOS turned dates and the address into blue links of its own."""
    html = preview["html"].read_text(encoding="utf-8")
    columns = re.findall(r'<td class="card-image-outlook" style="vertical-align:top;width:(\d+)px;">', html)
    images = re.findall(
        r'<div class="[^"]*card-image"[^>]*>.*?padding:0 0 12px (\d+)px;.*?<img [^>]*width="(\d+)"', html
    )
    assert columns and len(columns) == len(images), (columns, images)
    for column, (padding, width) in zip(columns, images, strict=True):
        assert int(padding) + int(width) <= int(column), f"{padding} + {width} px in a {column} px column"
    assert 'name="format-detection" content="telephone=no, date=no, address=no, email=no, url=no"' in html
    assert "a[x-apple-data-detectors]" in html
    assert 'name="color-scheme" content="light dark"' in html


def test_the_preheader_is_written_for_the_issue_and_stops_the_preview(preview) -> None:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(preview["html"].read_text(encoding="utf-8"), "html.parser")
    hidden = soup.find("div", class_="preheader")
    text = hidden.get_text()
    readable = text.split("\u034f")[0].strip()
    assert readable.startswith("8 nya texter: Utmanande, lärorikt och inspirerande · Hållbarhet"), readable
    assert len(readable) <= 110, readable
    assert text.count("\u034f\u200c\u00a0") >= 50, "padded, so the inbox preview ends with the preheader"


def test_spamassassin_offline_score(preview) -> None:
    require(
        "spamassassin",
        "FLYGBLAD_REQUIRE_SPAMASSASSIN",
        "the score check needs SpamAssassin (apt-get install spamassassin)",
    )
    result = subprocess.run(
        ["spamassassin", "-L", "-t"], input=preview["eml"].read_bytes(), capture_output=True, timeout=120
    )
    report = result.stdout.decode("utf-8", "replace")
    score = float(re.search(r"X-Spam-Status: \w+, score=(-?[\d.]+)", report).group(1))
    assert score <= 0.5, report[report.find("Content analysis details") :]

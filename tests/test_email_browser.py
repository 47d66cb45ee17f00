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
from tests.browser import ARTIFACTS
from tests.conftest import require


@pytest.fixture
def preview(example_settings, tmp_path) -> dict[str, Path]:
    from pipeline.cli import _preview_files

    with Store.open(example_settings.storage_url) as store:
        draft = next_issue(example_settings, store, example_settings.lists[0])
    assert draft is not None
    html, text, eml = _preview_files(example_settings, draft, tmp_path / "preview")
    return {"html": html, "text": text, "eml": eml}


@pytest.mark.parametrize("width", [375, 600])
def test_layout_in_chromium(browser, preview, width: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(preview["html"].as_uri())
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"issue-{width}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "no horizontal scroll"
    leader = page.locator("h1").first
    assert leader.inner_text().strip() == "Utmanande, lärorikt och inspirerande"
    assert leader.is_visible()
    first_article = page.locator("h2").first
    assert leader.bounding_box()["y"] < first_article.bounding_box()["y"], "the leader comes before the articles"
    # On a phone the article cards stack: the card's text sits below its image, not beside it.
    card_title = page.locator("h2", has_text="Robotlyftet")
    card_image = page.locator("img[alt^='En industrirobot']")
    title_box, image_box = card_title.bounding_box(), card_image.bounding_box()
    if width < 480:
        assert title_box["y"] >= image_box["y"] + image_box["height"] - 1
    else:
        assert title_box["x"] >= image_box["x"] + image_box["width"]
    page.close()


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
    assert score <= 2.0, report[report.find("Content analysis details") :]

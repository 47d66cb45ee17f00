"""Newsletter issues as email: what a subscriber sees, what a communicator previews."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import lxml.html
import pytest

from pipeline.config import Settings
from pipeline.errors import RenderError
from pipeline.issues import next_issue, rendered_of
from pipeline.jobs import freeze_next
from pipeline.render import RecipientValues, render_issue, token_pattern
from pipeline.render.mime import MessageTemplate, mailbox
from pipeline.render.templates import BUILTIN_TEMPLATES
from pipeline.store import Store, StoredItem

WHEN = datetime(2018, 12, 21, 7, 30, tzinfo=UTC)
NONCE = "0123456789abcdef"
GOLDEN = Path(__file__).parent / "golden" / "issue.json"
VALUES = RecipientValues(
    greeting="Hej Åsa!",
    name="Åsa Öberg",
    email="asa@example.org",
    view_url="https://www.produktionslyftet.example/archive/nyhetsbrev/1",
    unsubscribe_url="https://www.produktionslyftet.example/unsubscribe/abc.def",
)


def _items(settings: Settings) -> list[StoredItem]:
    with Store.open(settings.storage_url) as store:
        return store.items()


def _render(settings: Settings, items: list[StoredItem] | None = None, **changes: object):
    mailing_list = settings.lists[0].model_copy(update=changes)
    items = items or _items(settings)
    with Store.open(settings.storage_url) as store:
        images = store.media_for(s.item.image for s in items if s.item.image)
    return render_issue(settings, mailing_list, items, date=WHEN, number=1, nonce=NONCE, images=images)


def _doc(html: str) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(html)


def test_leaders_first_then_articles_newest_first(example_settings) -> None:
    rendered = _render(example_settings)
    html, _ = rendered.fill(VALUES)
    doc = _doc(html)
    leaders = [h.text_content().strip() for h in doc.find_class("headline")]
    articles = [h.text_content().strip() for h in doc.iter("h3")]
    assert leaders == [
        "Utmanande, lärorikt och inspirerande",
        "Hållbarhet är en konkurrensfördel",
        "Ett år med Smart industri",
    ]
    assert articles == [
        "Ny omgång av Startprogrammet i Norrland",
        "Robotlyftet ger resultat i Västra Götaland",
        "Digitaliseringslyftet startar i vår",
        "Reflektionsdagarna 2018: hållbarhet i fokus",
        "Produktionslyftet på Elmia Subcontractor",
    ]
    assert rendered.subject == "Utmanande, lärorikt och inspirerande"
    assert (
        rendered.preheader == "8 nya texter: Utmanande, lärorikt och inspirerande · Hållbarhet är en konkurrensfördel"
    )
    text = doc.text_content()
    assert "Birgitta Öjmertz, Programdirektör Produktionslyftet · 20 december 2018" in " ".join(text.split())
    assert text.count("Läs hela ledaren") == 3, "a leader's one link is its button"
    assert "Läs mer" not in text, "an article's one link is its title, not five identical buttons"
    assert "Visa i webbläsaren" in text and "Avsluta prenumerationen" in text
    assert "Box 1234, 411 00 Göteborg" in text
    assert "Hej Åsa!" in text


def test_content_rules_hold(example_settings) -> None:
    html, _ = _render(example_settings).fill(VALUES)
    doc = _doc(html)
    assert doc.get("lang") == "sv"
    assert len(html.encode("utf-8")) < 102 * 1024
    images = list(doc.iter("img"))
    assert images, "the sample issue has images"
    for img in images:
        assert img.get("alt", "").strip()
        assert img.get("src").startswith("https://www.produktionslyftet.example/media/"), "kept by flygblad"
        assert int(img.get("width")) > 0 and int(img.get("height")) > 0, "space reserved while it loads"
    for a in doc.iter("a"):
        assert re.match(r"^(https://|mailto:)", a.get("href", "")), a.get("href")
    hrefs = [a.get("href") for a in doc.iter("a")]
    assert VALUES.unsubscribe_url in hrefs and VALUES.view_url in hrefs


def test_css_is_inlined_and_media_queries_kept(example_settings) -> None:
    html, _ = _render(example_settings).fill(VALUES)
    doc = _doc(html)
    headline = doc.find_class("headline")[0]
    assert "font-size: 30px" in headline.get("style", "").replace(":30px", ": 30px")
    styles = " ".join(s.text_content() for s in doc.iter("style"))
    assert "@media only screen and (max-width: 480px)" in styles
    assert "@media (prefers-color-scheme: dark)" in styles
    assert not re.search(r"(^|\})\s*\.headline\s*\{", styles), "inline rules left the <style>"
    assert "<mj-" not in html
    assert "fonts.googleapis.com" not in html, "no web-font request from the reader's client"


def test_text_part_is_written_from_the_content(example_settings) -> None:
    _, text = _render(example_settings).fill(VALUES)
    assert "<" not in text.replace("<http", "")
    assert (
        "LEDARE\n\nUtmanande, lärorikt och inspirerande\nBirgitta Öjmertz, Programdirektör Produktionslyftet · 20 december 2018"
        in text
    )
    assert "Läs hela ledaren: https://www.produktionslyftet.example/ledare/utmanande-larorikt-och-inspirerande" in text
    assert "ARTIKLAR" in text
    assert f"Avsluta prenumerationen: {VALUES.unsubscribe_url}" in text
    assert max(len(line) for line in text.splitlines() if "http" not in line) <= 72


def test_english_list(example_settings) -> None:
    html, text = _render(example_settings, language="en").fill(VALUES)
    assert _doc(html).get("lang") == "en"
    assert "Read the full leader" in html and "Unsubscribe" in html
    assert "December 20, 2018" in text


def test_same_issue_renders_the_same_bytes(example_settings) -> None:
    first, second = _render(example_settings), _render(example_settings)
    assert (first.html, first.text, first.subject) == (second.html, second.text, second.subject)


HOSTILE = [
    "</mj-text></mj-column></mj-section><mj-section><mj-column><mj-text>Injected",
    "{{ 7 * 7 }} {% include 'newsletter.txt.j2' %}",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "<mj-raw><iframe src='https://evil.example'></iframe></mj-raw>",
    "%%fb-0123456789abcdef-unsubscribe_url%%",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_collected_text_is_data_never_markup(example_settings, hostile: str) -> None:
    items = _items(example_settings)
    baseline = _doc(_render(example_settings, items).fill(VALUES)[0])
    seed = items[0]
    evil = replace(
        seed,
        item=replace(
            seed.item,
            title=f"Rubrik {hostile}",
            summary=f"Text {hostile}",
            author=hostile,
            body_html=f"<p>Stycke {hostile}</p>",
        ),
    )
    rendered = _render(example_settings, [evil, *items[1:]])
    html, text = rendered.fill(VALUES)
    doc = _doc(html)
    assert len(list(doc.iter("table"))) == len(list(baseline.iter("table"))), "the layout is unchanged"
    assert not list(doc.iter("script")) and not list(doc.iter("iframe"))
    assert "49" not in doc.text_content().replace("2018", "")
    assert doc.find_class("headline")[0].text_content().strip() == f"Rubrik {hostile}"
    assert f"Rubrik {hostile}" in " ".join(text.split())
    hrefs = [a.get("href") for a in doc.iter("a")]
    assert token_pattern(rendered.nonce).search(html + text) is None, "no placeholder left unfilled"
    assert hrefs.count(VALUES.unsubscribe_url) == 1, "content cannot add an unsubscribe link"
    for img in doc.iter("img"):
        assert img.get("onerror") is None


def test_values_are_escaped_in_html(example_settings) -> None:
    values = replace(VALUES, greeting='Hej "><script>alert(1)</script>!')
    html, text = _render(example_settings).fill(values)
    assert "<script>alert(1)" not in html
    assert "Hej &quot;&gt;&lt;script&gt;" in html
    assert 'Hej "><script>alert(1)</script>!' in text


# ---------------------------------------------------------------- errors name file and line


def _templates_copy(settings: Settings, tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    shutil.copytree(BUILTIN_TEMPLATES, folder)
    return folder


def _with_templates(settings: Settings, folder: Path) -> Settings:
    return settings.model_copy(update={"render": settings.render.model_copy(update={"templates": str(folder)})})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            '{% endif %}\n        <mj-text padding="0 28px 18px">',
            '\n        <mj-text padding="0 28px 18px">',
            r"partials/leader\.mjml\.j2:\d+: template syntax error",
        ),
        (
            '<h2 class="headline">{{ item.title }}</h2>',
            '<h2 class="headline">{{ item.headline_missing }}</h2>',
            r"partials/leader\.mjml\.j2:8: .*headline_missing",
        ),
        (
            '<mj-text padding="0 28px 18px">',
            '<mj-textt padding="0 28px 18px">',
            r"partials/leader\.mjml\.j2:8: unknown MJML tag <mj-textt>",
        ),
        (
            '        <mj-divider padding="28px 28px 8px" />\n      </mj-column>',
            '        <mj-divider padding="28px 28px 8px" />\n',
            r"partials/leader\.mjml\.j2:12: </mj-section> closes <mj-column> opened on line 3",
        ),
    ],
    ids=["syntax", "missing-variable", "unknown-tag", "unclosed"],
)
def test_template_errors_name_file_and_line(example_settings, tmp_path, old: str, new: str, message: str) -> None:
    folder = _templates_copy(example_settings, tmp_path)
    leader = folder / "partials" / "leader.mjml.j2"
    source = leader.read_text(encoding="utf-8")
    assert old in source
    leader.write_text(source.replace(old, new, 1), encoding="utf-8")
    settings = _with_templates(example_settings, folder)
    with Store.open(settings.storage_url) as store:
        with pytest.raises(RenderError, match=message):
            freeze_next(settings, store, settings.lists[0], now=WHEN)
        assert store.issues() == [], "nothing is frozen"


# ---------------------------------------------------------------- issues and freezing


def test_issue_holds_what_is_new_since_the_previous_one(example_settings) -> None:
    settings = example_settings
    mailing_list = settings.lists[0]
    with Store.open(settings.storage_url) as store:
        first = freeze_next(settings, store, mailing_list, now=WHEN).issue  # back-dated: "new" is the store's clock
        assert first is not None and first.number == 1 and len(first.item_ids) == 8
        assert freeze_next(settings, store, mailing_list).issue == first, "unfinished: no second issue"
        store.finish_issue(first.id)  # sent (to nobody)
        assert freeze_next(settings, store, mailing_list).issue is None, "no new items: no issue"
        page = settings.base_dir / "examples" / "site" / "ledare" / "index.html"
        new_page = page.parent / "ny-ledare.html"
        new_page.write_text(
            (page.parent / "ett-ar-med-smart-industri.html")
            .read_text(encoding="utf-8")
            .replace("ett-ar-med-smart-industri", "ny-ledare")
            .replace("Ett år med Smart industri", "En ny ledare")
            .replace("19 december 2017", "10 januari 2019"),
            encoding="utf-8",
        )
        page.write_text(
            page.read_text(encoding="utf-8").replace(
                '<article class="teaser">',
                '<article class="teaser"><h2><a href="ny-ledare.html">En ny ledare</a></h2></article>\n<article class="teaser">',
                1,
            ),
            encoding="utf-8",
        )
        from pipeline.collect import collect

        assert collect(settings, store).total("new") == 1
        second = freeze_next(settings, store, mailing_list).issue
        assert second is not None and second.number == 2
        assert second.item_ids == ("https://www.produktionslyftet.example/ledare/ny-ledare",)
        assert second.subject == "En ny ledare"
        assert [i.number for i in store.issues(mailing_list.name)] == [2, 1]


def test_preview_of_a_frozen_issue_is_what_is_sent(example_settings) -> None:
    settings = example_settings
    with Store.open(settings.storage_url) as store:
        draft = next_issue(settings, store, settings.lists[0], now=WHEN)
        issue = freeze_next(settings, store, settings.lists[0], now=WHEN).issue
        again = store.issue("nyhetsbrev", 1)
    assert draft is not None and issue is not None and again == issue
    frozen = rendered_of(issue)
    assert frozen.fill(VALUES) == rendered_of(again).fill(VALUES)
    # The draft differs from the frozen issue only in its placeholders' nonce.
    assert draft.rendered.fill(VALUES) == frozen.fill(VALUES)


# ---------------------------------------------------------------- MIME


def test_message_is_complete_mime(example_settings) -> None:
    rendered = _render(example_settings)
    mailing_list = example_settings.lists[0]
    template = MessageTemplate(rendered, sender=mailing_list.from_, reply_to=mailing_list.reply_to, date=WHEN)
    data = template.message(
        to=mailbox("asa@example.org", "Åsa Öberg"), message_id="1.abc@produktionslyftet.example", values=VALUES
    )
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "Utmanande, lärorikt och inspirerande"
    assert "=?utf-8?" in data.split(b"\r\n\r\n")[0].decode("ascii"), "non-ASCII headers are RFC 2047 encoded"
    assert message["To"].addresses[0].display_name == "Åsa Öberg"
    assert message["From"].addresses[0].addr_spec == "nyhetsbrev@produktionslyftet.example"
    assert message["Message-ID"] == "<1.abc@produktionslyftet.example>"
    assert message["Date"].datetime == WHEN
    text_part, html_part = message.iter_parts()
    assert (text_part.get_content_type(), html_part.get_content_type()) == ("text/plain", "text/html")
    assert text_part.get_content_charset() == html_part.get_content_charset() == "utf-8"
    html, text = rendered.fill(VALUES)
    assert text_part.get_content().replace("\r\n", "\n") == text
    assert html_part.get_content().replace("\r\n", "\n") == html
    assert "lärorikt" in html_part.get_content() and "Åsa" in text_part.get_content()
    assert all(len(line) <= 76 for line in data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")), "RFC 2045 line length"


@pytest.mark.parametrize("field", ["greeting", "unsubscribe_url"])
def test_line_breaks_in_values_are_refused(example_settings, field: str) -> None:
    template = MessageTemplate(_render(example_settings), sender="A <a@example.org>", date=WHEN)
    with pytest.raises(RenderError, match="line break"):
        template.message(
            to="b@example.org", message_id="x@y", values=replace(VALUES, **{field: "x\r\nBcc: evil@example.org"})
        )
    with pytest.raises(RenderError, match="line break"):
        mailbox("b@example.org", "Name\r\nBcc: evil@example.org")


# ---------------------------------------------------------------- golden


def _structure(html: str) -> list[list[str]]:
    doc = _doc(html)
    out = []
    for element in doc.iter("h1", "h2", "h3", "p", "a", "img"):
        if element.tag == "img":
            out.append(["img", element.get("src"), element.get("alt")])
        elif element.tag == "a":
            out.append(["a", element.get("href"), " ".join(element.text_content().split())])
        else:
            out.append([element.tag, " ".join(element.text_content().split())])
    return out


def test_golden_issue(example_settings) -> None:
    """The compiled sample issue, compared as structure (headings, paragraphs, links, images).

    Regenerate with FLYGBLAD_UPDATE_GOLDEN=1 after an intended change, and read the diff.
    """
    html, text = _render(example_settings).fill(VALUES)
    current = {"structure": _structure(html), "text": text.splitlines()}
    if os.environ.get("FLYGBLAD_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(current, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    assert current == json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_a_twenty_item_issue_stays_well_under_gmails_clipping_size(example_settings) -> None:
    """At the default max_items (20) the HTML part was 97 KB as sent (Gmail clips at 102 KB): now under 90 KB."""
    import binascii

    from bench.render import twenty_items

    items = twenty_items(example_settings)
    assert len(items) == 20 == example_settings.lists[0].max_items
    html, _ = _render(example_settings, items).fill(VALUES)
    assert html.count("<img") >= 8, "with the cards' images"
    as_sent = len(binascii.b2a_qp(html.encode("utf-8"), istext=True).replace(b"\n", b"\r\n"))
    assert as_sent <= 90 * 1024, f"{as_sent / 1024:.1f} KB as sent"

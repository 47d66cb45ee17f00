"""Collecting HTML sites over real HTTP: every field, without per-site code."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bs4 import BeautifulSoup

from pipeline.collect import collect
from pipeline.config import load_settings
from pipeline.store import Store, StoredItem
from tests.conftest import EXAMPLE_SITE, SITES, source_toml

STOCKHOLM = ZoneInfo("Europe/Stockholm")
SEED = Path(__file__).parent / "data" / "seed.txt"


def _collect(config: Path) -> tuple[object, dict[str, StoredItem]]:
    settings = load_settings(config)
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        items = {s.item.title: s for s in store.items()}
    return report, items


def _text(body_html: str) -> str:
    return " ".join(BeautifulSoup(body_html, "html.parser").get_text(" ").split())


def _seed_page() -> str:
    """The shared seed text as a page with no classes and no metadata: only its shape."""
    lines = [line.strip() for line in SEED.read_text(encoding="utf-8").splitlines() if line.strip()]
    title, byline, *rest = lines
    footer = rest[-3:]
    body = []
    bullets = []
    for line in rest[:-3]:
        if line.startswith("•"):
            bullets.append(f"<li>{html.escape(line.lstrip('• '))}</li>")
            continue
        if bullets:
            body.append("<ul>" + "".join(bullets) + "</ul>")
            bullets = []
        body.append(f"<p>{html.escape(line)}</p>")
    if bullets:
        body.append("<ul>" + "".join(bullets) + "</ul>")
    foot = "".join(f"<h2>{html.escape(x)}</h2><p><a href='/x'>{html.escape(x)}</a></p>" for x in footer)
    return (
        "<!DOCTYPE html><html lang='sv'><head><meta charset='utf-8'><title>"
        + html.escape(title)
        + " | Produktionslyftet</title></head><body><nav><a href='/'>Start</a> <a href='/om'>Om oss</a></nav>"
        + f"<main><h1>{html.escape(title)}</h1><p>{html.escape(byline)}</p>"
        + "".join(body)
        + f"</main><footer>{foot}</footer></body></html>"
    )


def _assert_seed_leader(stored: StoredItem) -> None:
    item = stored.item
    assert item.title == "Utmanande, lärorikt och inspirerande"
    assert item.author == "Birgitta Öjmertz"
    assert item.author_role == "Programdirektör Produktionslyftet"
    assert item.published is not None
    assert item.published.astimezone(STOCKHOLM).date().isoformat() == "2018-12-20"
    assert item.category == "leader"
    text = _text(item.body_html)
    assert text.startswith("2018 har varit ett spännande och intensivt år")
    assert text.endswith("jag ser fram emot att fortsatt arbeta tillsammans med er!")
    assert BeautifulSoup(item.body_html, "html.parser").find_all("li")[2].get_text().startswith("Vår satsning")
    for noise in (
        "Produktionslyftets partner",
        "Intressenter",
        "Finansiärer",
        "Ledare ·",
        "Kontakt",
        "Om oss",
        "kakor",
        "Jag förstår",
        "Dela",
    ):
        assert noise not in text, noise
    assert item.summary and item.summary.startswith("2018 har varit")


def test_seed_page_every_field(site_server, write_config) -> None:
    site = site_server(EXAMPLE_SITE)
    config = write_config(source_toml("ledare", site.url("/ledare/index.html")))
    report, items = _collect(config)
    assert report.summary() == "collected 1 source: 3 new, 0 updated, 0 unchanged, 0 failed"
    seed = items["Utmanande, lärorikt och inspirerande"]
    _assert_seed_leader(seed)
    assert seed.item.url == "https://www.produktionslyftet.example/ledare/utmanande-larorikt-och-inspirerande"
    assert seed.item.id == seed.item.url
    assert seed.item.language == "sv"
    # Swedish written dates in the same byline form
    assert items["Hållbarhet är en konkurrensfördel"].item.published == datetime(2018, 6, 14, tzinfo=STOCKHOLM)
    assert items["Hållbarhet är en konkurrensfördel"].item.image_alt == "Montörer vid en monteringslina i en verkstad"


def test_seed_text_as_a_bare_page(site_server, write_config, tmp_path) -> None:
    """The seed exactly as shared (no classes, no metadata), as the only page of a source."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "ledare.html").write_text(_seed_page(), encoding="utf-8")
    site = site_server(root)
    config = write_config(source_toml("ledare", site.url("/ledare.html")))
    report, items = _collect(config)
    assert report.ok, report.problems()
    [seed] = items.values()
    _assert_seed_leader(seed)
    assert seed.item.url == site.url("/ledare.html")


def test_wordpress_blog_without_selectors(site_server, write_config) -> None:
    site = site_server(SITES / "wordpress")
    config = write_config(source_toml("blog", site.url("/"), category="article"))
    report, items = _collect(config)
    assert report.ok, report.problems()
    assert sorted(items) == ["Lighthouse restoration reaches the lantern room", "The new ferry timetable, explained"]
    ferry = items["The new ferry timetable, explained"].item
    assert ferry.author == "Eleanor Marsh"
    assert ferry.published == datetime.fromisoformat("2024-03-05T07:45:00+00:00")
    assert ferry.modified == datetime.fromisoformat("2024-03-06T12:00:00+00:00")
    assert ferry.url == site.url("/2024/03/new-ferry-timetable/")
    assert ferry.image == site.url("/wp-content/uploads/2024/03/ferry.jpg")
    text = _text(ferry.body_html)
    assert text.startswith("From April the ferry leaves every forty minutes")
    assert "Bicycles now board first" in text
    for noise in (
        "Share this",
        "Twitter",
        "Related",
        "Leave a Reply",
        "thoughts on",
        "Recent Posts",
        "cookies",
        "Proudly powered",
        "Posted in",
        "Previous post",
        "Eleanor Marsh",
    ):
        assert noise not in text, noise
    light = items["Lighthouse restoration reaches the lantern room"].item
    assert light.author == "Sam Okafor"
    assert light.published == datetime.fromisoformat("2024-03-01T16:20:00+00:00")
    assert 'href="' + site.url("/visit/") + '"' in light.body_html  # ../../../visit/ made absolute
    assert "<blockquote>" in light.body_html


def test_cms_with_metadata_only_in_json_ld(site_server, write_config) -> None:
    site = site_server(SITES / "cms")
    config = write_config(source_toml("nyheter", site.url("/nyheter/"), category="article", links="a.rubriklank"))
    report, items = _collect(config)
    assert report.ok, report.problems()
    school = items["Ny förskola öppnar i Björkdalen"].item
    assert school.author == "Sara Lund"  # an @id reference into the @graph
    assert school.author_role == "Kommunikatör"
    assert school.published == datetime(2024, 3, 5, 9, 0, tzinfo=STOCKHOLM)
    assert school.url == "https://kommunen.example/nyheter/ny-forskola"
    assert school.image == "https://kommunen.example/images/forskola.jpg"
    assert school.summary == "Den nya förskolan har plats för 120 barn och öppnar efter sommaren."
    text = _text(school.body_html)
    assert text.startswith("Den nya förskolan i Björkdalen har plats för 120 barn")
    assert "Eva Strand" in text
    for noise in ("Sök på webbplatsen", "Genvägar", "Lediga jobb", "Telefon", "Om kakor", "Björkdalen Den"):
        assert noise not in text, noise
    water = items["Vattenledningen på Storgatan byts"].item
    assert (water.author, water.author_role) == ("Per Ström", "Projektledare")
    assert water.published == datetime(2024, 2, 20, tzinfo=STOCKHOLM)  # a bare date, in the site's zone
    assert water.url == "https://kommunen.example/nyheter/vattenledning"
    assert water.image == "https://kommunen.example/images/storgatan.jpg"
    assert "Busslinje 3" in _text(water.body_html)


def test_selectors_override_extraction_field_by_field(site_server, write_config) -> None:
    site = site_server(SITES / "wordpress")
    config = write_config(
        source_toml(
            "blog",
            site.url("/2024/03/new-ferry-timetable/"),
            category="article",
            select={"title": ".comments-title", "body": ".entry-content h2 + p"},
        )
    )
    _, items = _collect(config)
    [stored] = items.values()
    assert stored.item.title == "3 thoughts on “The new ferry timetable, explained”"
    assert _text(stored.item.body_html) == "Bicycles now board first, through the side ramp."
    assert stored.item.author == "Eleanor Marsh"  # not overridden: still found automatically


def test_scraped_html_is_sanitized(site_server, write_config) -> None:
    site = site_server(SITES / "hostile")
    config = write_config(source_toml("farlig", site.url("/"), category="article"))
    report, items = _collect(config)
    assert report.ok, report.problems()
    [stored] = items.values()
    body = stored.item.body_html
    soup = BeautifulSoup(body, "html.parser")
    assert stored.item.author == "Eva Svensson"
    for bad in (
        "<script",
        "<style",
        "<iframe",
        "<form",
        "<input",
        "<svg",
        "onclick",
        "onerror",
        "onload",
        "javascript:",
        "vbscript:",
        "style=",
        "injicerad",
        "evil.example",
    ):
        assert bad not in body, bad
    hrefs = [a.get("href") for a in soup.find_all("a")]
    assert "https://hostile.example/relativ/sida.html" in hrefs  # relative to the canonical URL
    assert "mailto:red@hostile.example" in hrefs
    srcs = [img["src"] for img in soup.find_all("img")]
    assert srcs[0] == "https://hostile.example/artiklar/bilder/bild.png"
    assert all(src.startswith("https://") for src in srcs)
    assert "Första stycket" in soup.get_text()
    assert stored.item.title == "En sida med farlig markup"


def test_second_collect_is_all_304(site_server, write_config) -> None:
    """The second collect asks the listings (304 each) and, their lists unchanged, not the article pages it
    confirmed within the day; a day later it asks those again, conditionally."""
    from datetime import UTC, timedelta

    from sqlalchemy import update

    from pipeline.store.schema import fetch_state

    site = site_server(EXAMPLE_SITE)
    config = write_config(
        source_toml("ledare", site.url("/ledare/index.html"))
        + source_toml("artiklar", site.url("/artiklar/index.html"), category="article", links=".cards a.card-link")
        + source_toml("nyheter", site.url("/nyheter.xml"), kind="feed", category="article")
    )
    first, _ = _collect(config)
    assert first.summary() == "collected 3 sources: 8 new, 0 updated, 0 unchanged, 0 failed"
    first_pages = len(site.pages())
    assert first_pages == 1 + 3 + 1 + 3 + 1
    assert all(hit.user_agent.startswith("flygblad/") for hit in site.hits)
    listings = {"/ledare/index.html", "/artiklar/index.html", "/nyheter.xml"}
    for later in range(3):
        site.hits.clear()
        report, _ = _collect(config)
        assert report.summary() == "collected 3 sources: 0 new, 0 updated, 8 unchanged, 0 failed"
        pages = site.pages()
        assert all(hit.if_none_match for hit in pages) and {hit.status for hit in pages} == {304}
        if later == 1:  # a day went by: every page is asked again, conditionally
            assert len(pages) == first_pages
        else:
            assert {hit.path for hit in pages} == listings, "only the listings were asked"
        settings = load_settings(config)
        with Store.open(settings.storage_url) as store, store.engine.begin() as connection:
            if later == 0:  # the pages were confirmed a day and a minute ago
                a_day_ago = datetime.now(UTC) - timedelta(days=1, minutes=1)
                connection.execute(update(fetch_state).values(checked=a_day_ago))


def test_changed_page_is_updated_in_place(site_server, write_config, tmp_path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    page = root / "a.html"
    page.write_text(
        "<html lang=sv><body><h1>Rubrik</h1><p>Ledare · Anna Berg · Chefredaktör · 5 mars 2024</p>"
        "<p>Första versionen av texten, som är lång nog att räknas som en brödtext i en artikel.</p></body></html>",
        encoding="utf-8",
    )
    site = site_server(root)
    config = write_config(source_toml("ledare", site.url("/a.html")))
    first, before = _collect(config)
    assert (first.total("new"), first.total("updated")) == (1, 0)
    page.write_text(page.read_text(encoding="utf-8").replace("Första versionen", "Andra versionen"), encoding="utf-8")
    second, after = _collect(config)
    assert (second.total("new"), second.total("updated"), second.total("unchanged")) == (0, 1, 0)
    assert len(after) == 1
    [old], [new] = before.values(), after.values()
    assert new.first_seen == old.first_seen
    assert new.updated > old.updated
    assert "Andra versionen" in new.item.body_html
    third, _ = _collect(config)
    assert (third.total("new"), third.total("updated"), third.total("unchanged")) == (0, 0, 1)


def test_local_paths_and_file_urls_read_from_disk(write_config) -> None:
    config = write_config(
        source_toml("ledare", f"{EXAMPLE_SITE.as_uri()}/ledare/index.html")
        + source_toml("nyheter", str(EXAMPLE_SITE / "nyheter.xml"), kind="feed", category="article")
    )
    report, items = _collect(config)
    assert report.summary() == "collected 2 sources: 5 new, 0 updated, 0 unchanged, 0 failed"
    _assert_seed_leader(items["Utmanande, lärorikt och inspirerande"])
    again, _ = _collect(config)
    assert again.summary() == "collected 2 sources: 0 new, 0 updated, 5 unchanged, 0 failed"


def test_body_split_over_several_blocks_and_progress(site_server, write_config, tmp_path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(
        "<html><body>"
        + "".join(f"<article><h3><a href='p{n}.html'>P{n}</a></h3></article>" for n in (1, 2))
        + "</body></html>",
        encoding="utf-8",
    )
    for n in (1, 2):
        (root / f"p{n}.html").write_text(
            f"<html><head><meta property='og:title' content='Del {n}'><meta name='author' content='By Kim Berg'>"
            "<meta property='article:published_time' content='2024-03-05T10:00:00+01:00'></head><body>"
            "<div class='article__body'><p>Första delen av texten.</p></div><aside>Annons</aside>"
            "<div class='article__body'><p>Andra delen av texten.</p><div class='share'>Dela</div></div></body></html>",
            encoding="utf-8",
        )
    site = site_server(root)
    settings = load_settings(write_config(source_toml("delar", site.url("/"), category="article")))
    seen: list[tuple[str, str, int | None]] = []
    with Store.open(settings.storage_url) as store:
        collect(
            settings, store, progress=lambda source, url, outcome, expected: seen.append((source, outcome, expected))
        )
        [first, _] = store.items()
    assert _text(first.item.body_html) == "Första delen av texten. Andra delen av texten."
    assert first.item.author == "Kim Berg"
    assert seen == [("delar", "new", 2), ("delar", "new", 2)]


def test_collect_refresh_asks_every_page_again(site_server, write_config) -> None:
    """A correction on a web page whose listing did not change: seen at once with ``collect --refresh``."""
    import subprocess
    import sys

    site = site_server(EXAMPLE_SITE)
    config = write_config(
        source_toml("artiklar", site.url("/artiklar/index.html"), category="article", links=".cards a.card-link")
    )

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "--config", str(config), "collect", *extra],
            capture_output=True,
            text=True,
            check=False,
        )

    assert run().returncode == 0
    site.hits.clear()
    assert run().returncode == 0
    assert [hit.path for hit in site.pages()] == ["/artiklar/index.html"]
    site.hits.clear()
    done = run("--refresh")
    assert done.returncode == 0, done.stderr
    assert len(site.pages()) == 1 + 3 and {hit.status for hit in site.pages()} == {304}

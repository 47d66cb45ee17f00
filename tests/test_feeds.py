"""Feeds as readers get them: parsed by feedparser, Atom valid against RFC 4287, JSON Feed 1.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import feedparser
import lxml.etree as et
import pytest
import rnc2rng

from pipeline.collect import collect
from pipeline.config import Settings, load_settings
from pipeline.feeds import build_feeds, write_feeds
from pipeline.store import Store
from tests.conftest import EXAMPLE_SITE, ROOT, keep_sample_images

SCHEMA = Path(__file__).parent / "schemas" / "atom.rnc"
GOLDEN = Path(__file__).parent / "golden"
ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture(scope="module")
def atom_schema() -> et.RelaxNG:
    rng = rnc2rng.dumps(rnc2rng.load(str(SCHEMA)))
    return et.RelaxNG(et.fromstring(rng.replace('xmlns:local=""', "").encode()))


def _example_settings(tmp_path: Path) -> Settings:
    """The bundled default config, with its store and feeds in tmp_path."""
    shutil.copytree(EXAMPLE_SITE, tmp_path / "examples" / "site")
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    return load_settings(tmp_path / "config.toml")


@pytest.fixture
def feeds(tmp_path: Path) -> tuple[Settings, Path]:
    settings = _example_settings(tmp_path)
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        assert report.ok, report.problems()
        keep_sample_images(settings, store)
        write_feeds(settings.feeds_dir, build_feeds(settings, store))
    return settings, settings.feeds_dir


def test_every_feed_file_is_written(feeds) -> None:
    _, directory = feeds
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    assert names == sorted(
        f"{n}.{s}" for n in ("all", "ledare", "artiklar", "nyheter") for s in ("rss", "atom", "json")
    )


@pytest.mark.parametrize("suffix", ["rss", "atom"])
def test_feedparser_reads_without_complaint(feeds, suffix: str) -> None:
    _, directory = feeds
    parsed = feedparser.parse((directory / f"all.{suffix}").read_bytes())
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.feed.title == "Produktionslyftet"
    assert parsed.feed.language == "sv"
    assert parsed.feed.link == "https://www.produktionslyftet.example"  # the alternate, not the self link
    assert len(parsed.entries) == 8
    published = [e.published_parsed for e in parsed.entries]
    assert published == sorted(published, reverse=True), "newest first"
    seed = parsed.entries[0]
    assert seed.title == "Utmanande, lärorikt och inspirerande"
    assert seed.author == "Birgitta Öjmertz"
    assert seed.published.startswith("2018-12-20") or "20 Dec 2018" in seed.published
    assert seed.link == "https://www.produktionslyftet.example/ledare/utmanande-larorikt-och-inspirerande"
    assert seed.id == seed.link
    # Atom carries the machine term and the label; RSS has room for one: the label readers show.
    assert seed.tags[0].term == ("leader" if suffix == "atom" else "Ledare")
    assert seed.summary.startswith("2018 har varit")
    assert "<li>Vårt Utvecklingsprogram" in seed.content[0].value  # full HTML, not only the summary
    assert any(link.href.endswith(f"/feeds/all.{suffix}") and link.rel == "self" for link in parsed.feed.links)


def test_atom_is_valid_rfc4287(feeds, atom_schema) -> None:
    _, directory = feeds
    for path in sorted(directory.glob("*.atom")):
        document = et.parse(str(path))
        assert atom_schema.validate(document), (path.name, atom_schema.error_log)


def test_atom_entry_links_keep_rel_and_type(feeds) -> None:
    _, directory = feeds
    root = et.parse(str(directory / "all.atom")).getroot()
    entries = root.findall(f"{ATOM}entry")
    robot = next(e for e in entries if e.findtext(f"{ATOM}title").startswith("Robotlyftet"))
    links = {(link.get("rel"), link.get("type")): link.get("href") for link in robot.findall(f"{ATOM}link")}
    assert (
        links[("alternate", "text/html")] == "https://www.produktionslyftet.example/artiklar/robotlyftet-ger-resultat"
    )
    assert re.fullmatch(
        r"https://www\.produktionslyftet\.example/media/[0-9a-f]{32}-1200\.jpg", links[("enclosure", "image/jpeg")]
    )
    assert root.findtext(f"{ATOM}updated") == "2018-12-20T00:00:00+01:00"


def test_rss_has_content_encoded_creator_and_dates_in_site_zone(feeds) -> None:
    _, directory = feeds
    root = et.parse(str(directory / "all.rss")).getroot()
    item = root.find("channel/item")
    assert item.findtext("pubDate") == "Thu, 20 Dec 2018 00:00:00 +0100"
    assert item.findtext("{http://purl.org/dc/elements/1.1/}creator") == "Birgitta Öjmertz"
    assert "<ul>" in item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded")
    assert item.find("guid").get("isPermaLink") == "true"
    assert root.findtext("channel/link") == "https://www.produktionslyftet.example"


def test_json_feed_has_the_required_fields(feeds) -> None:
    _, directory = feeds
    for path in sorted(directory.glob("*.json")):
        feed = json.loads(path.read_text(encoding="utf-8"))
        assert feed["version"] == "https://jsonfeed.org/version/1.1"
        assert isinstance(feed["title"], str) and feed["title"]
        assert feed["feed_url"].endswith(f"/feeds/{path.name}")
        assert isinstance(feed["items"], list) and feed["items"], path.name
        ids = [entry["id"] for entry in feed["items"]]
        assert len(ids) == len(set(ids)), "ids are unique"
        for entry in feed["items"]:
            assert isinstance(entry["id"], str) and entry["id"]
            assert entry.get("content_html") or entry.get("content_text")
            assert entry["date_published"][:4].isdigit() and "+" in entry["date_published"][10:]
            assert all(
                key
                in (
                    "id",
                    "url",
                    "title",
                    "content_html",
                    "summary",
                    "image",
                    "date_published",
                    "date_modified",
                    "tags",
                    "authors",
                    "language",
                )
                or key.startswith("_")
                for key in entry
            )
    seed = json.loads((directory / "ledare.json").read_text(encoding="utf-8"))["items"][0]
    assert seed["authors"] == [{"name": "Birgitta Öjmertz"}]
    assert seed["_flygblad"]["author_role"] == "Programdirektör Produktionslyftet"
    assert seed["date_published"] == "2018-12-20T00:00:00+01:00"


def test_feeds_are_rewritten_only_when_they_change(feeds) -> None:
    settings, directory = feeds
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    time.sleep(0.01)
    with Store.open(settings.storage_url) as store:
        assert write_feeds(directory, build_feeds(settings, store)) == []
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before
    leader = settings.base_dir / "examples" / "site" / "ledare" / "ett-ar-med-smart-industri.html"
    leader.write_text(
        leader.read_text(encoding="utf-8").replace("glädjer mig mest", "gläder mig allra mest"), encoding="utf-8"
    )
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        assert report.total("updated") == 1
        written = write_feeds(directory, build_feeds(settings, store))
    assert sorted(p.name for p in written) == sorted(
        f"{n}.{s}" for n in ("all", "ledare") for s in ("rss", "atom", "json")
    )
    assert not list(directory.glob(".*")), "no temp files left behind"


def _kept_images_named(text: str) -> str:
    """Kept images are named by the hash of their bytes, which a Pillow release may encode differently."""
    return re.sub(r'length="\d+"', 'length="N"', re.sub(r"[0-9a-f]{32}-(\d+)\.(jpg|png)", r"IMAGE-\1.\2", text))


def _comparable_atom(path: Path) -> list[dict[str, object]]:
    parsed = feedparser.parse(_kept_images_named(path.read_text("utf-8")))
    return [
        {
            "id": e.id,
            "title": e.title,
            "author": e.get("author"),
            "published": e.published,
            "updated": e.updated,
            "links": sorted((link.rel, link.get("type", ""), link.href) for link in e.links),
            "summary": e.summary,
            "content": e.content[0].value,
            "category": [t.term for t in e.tags],
        }
        for e in parsed.entries
    ]


@pytest.mark.parametrize("name", ["all.json", "all.atom"])
def test_golden_feeds_of_the_sample_site(feeds, name: str) -> None:
    """The sample site's feeds, compared parsed: a real change shows up as a readable diff.

    Regenerate with FLYGBLAD_UPDATE_GOLDEN=1 after an intended change, and read the diff.
    """
    _, directory = feeds
    golden = GOLDEN / name
    if os.environ.get("FLYGBLAD_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        shutil.copy(directory / name, golden)
    if name.endswith(".json"):
        current, expected = ((directory / name).read_text("utf-8"), golden.read_text("utf-8"))
        assert json.loads(_kept_images_named(current)) == json.loads(_kept_images_named(expected))
    else:
        assert _comparable_atom(directory / name) == _comparable_atom(golden)

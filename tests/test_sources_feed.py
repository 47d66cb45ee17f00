"""Feed sources over real HTTP: RSS 0.91, 1.0, 2.0 and Atom, sanitized, conditional."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime

import pytest

from pipeline.collect import collect
from pipeline.config import load_settings
from pipeline.store import Store
from tests.conftest import EXAMPLE_SITE, SITES, source_toml


def _config(write_config, site, *paths: str) -> str:
    return write_config(
        "".join(source_toml(f"f{n}", site.url(path), kind="feed", category="article") for n, path in enumerate(paths))
    )


def test_every_feed_format(site_server, write_config) -> None:
    site = site_server(SITES / "feeds")
    config = _config(write_config, site, "/rss091.xml", "/rss10.rdf", "/atom.xml")
    settings = load_settings(config)
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        assert report.summary() == "collected 3 sources: 4 new, 0 updated, 0 unchanged, 0 failed"
        items = {s.item.title: s.item for s in store.items()}
    old = items["Första nyheten på Rådhuset"]  # ISO-8859-1 in RSS 0.91
    assert old.url == "http://old.example/1" and old.id == old.url
    assert old.body_html == "<p>Kort text om rådhuset.</p>"
    rdf = items["Artikel i RSS 1.0"]
    assert rdf.author == "Olle Berg"
    assert rdf.published == datetime(2024, 3, 5, 9, 15, tzinfo=UTC)
    atom = items["Ledare: Våren är här"]  # an HTML title becomes text
    assert atom.id == "tag:atom.example,2024:ledare-1"
    assert atom.url == "https://atom.example/ledare/1"
    assert atom.author == "Lisa Ek"
    assert atom.summary == "Sammanfattning av våren."
    assert atom.image == "https://atom.example/bild.jpg"
    assert atom.modified == datetime(2024, 3, 6, 12, tzinfo=UTC)
    assert "<script" not in atom.body_html and "alert" not in atom.body_html
    # With no xml:base, a relative link in an entry's content is relative to the entry's own page (its link).
    assert 'href="https://atom.example/v%C3%A5r"' in atom.body_html


def test_unchanged_feed_is_one_304(site_server, write_config) -> None:
    site = site_server(EXAMPLE_SITE)
    config = _config(write_config, site, "/nyheter.xml")
    settings = load_settings(config)
    with Store.open(settings.storage_url) as store:
        assert collect(settings, store).total("new") == 2
        site.hits.clear()
        again = collect(settings, store)
    assert again.summary() == "collected 1 source: 0 new, 0 updated, 2 unchanged, 0 failed"
    assert [(h.path, h.status) for h in site.pages()] == [("/nyheter.xml", 304)]


def test_unreadable_feed_is_reported_and_others_still_run(site_server, write_config) -> None:
    site = site_server(SITES / "feeds")
    config = _config(write_config, site, "/broken.xml", "/missing.xml", "/atom.xml")
    settings = load_settings(config)
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        assert store.count_items() == 1
    assert not report.ok
    problems = report.problems()
    assert len(problems) == 2
    assert problems[0].startswith("source 'f0' failed: ") and "not a readable RSS or Atom feed" in problems[0]
    assert problems[1] == f"source 'f1' failed: {site.url('/missing.xml')}: HTTP 404 NOT FOUND"
    assert report.summary() == "collected 3 sources: 1 new, 0 updated, 0 unchanged, 2 failed"


def test_many_feeds_are_parsed_in_other_processes_to_the_same_items(
    site_server, write_config, monkeypatch, tmp_path
) -> None:
    """From PROCESSES_FROM sources on, feeds are parsed and article pages read in other processes; what
    is stored, and what a feed that is not one reports, are the same as read in place, and the same again
    when those processes have died (each page is then read in the collect's own)."""
    import os
    import shutil
    from contextlib import contextmanager

    import pipeline.sources.reading as reading

    root = tmp_path / "site"
    shutil.copytree(EXAMPLE_SITE, root)
    for path in (SITES / "feeds").iterdir():
        shutil.copy(path, root / path.name)
    site = site_server(root)
    readable = ["/rss091.xml", "/rss10.rdf", "/atom.xml"]
    paths = [f"{path}?copy={n}" for n in range(6) for path in readable] + ["/broken.xml"]
    pages = source_toml("ledare", site.url("/ledare/index.html")) + source_toml(
        "artiklar", site.url("/artiklar/index.html"), category="article", links=".cards a.card-link"
    )
    assert len(paths) >= reading.PROCESSES_FROM
    pools: list[bool] = []
    real = reading.readers
    kill = False

    @contextmanager
    def watched(settings, sources: int, **options):  # type: ignore[no-untyped-def]
        with real(settings, sources, **options) as pool:
            pools.append(pool is not None)
            if pool is not None and kill:  # a reading process dies (killed, out of memory): the pool is broken
                with pytest.raises(BrokenProcessPool):
                    pool.pool.submit(os._exit, 1).result()
            yield pool

    monkeypatch.setattr(reading, "readers", watched)
    stored = []
    for threshold, kill in ((reading.PROCESSES_FROM, False), (10_000, False), (reading.PROCESSES_FROM, True)):
        monkeypatch.setattr(reading, "PROCESSES_FROM", threshold)
        config = write_config(
            "".join(source_toml(f"f{n}", site.url(p), kind="feed", category="article") for n, p in enumerate(paths))
            + pages,
            name=f"config-{threshold}-{kill}.toml",
        )
        settings = load_settings(config)
        with Store.open(settings.storage_url.replace("flygblad.db", f"flygblad-{threshold}-{kill}.db")) as store:
            report = collect(settings, store)
            items = sorted(
                (s.item.id, s.item.source, s.item.title, s.item.body_html, s.item.published) for s in store.items()
            )
        errors = {s.name: s.error for s in report.sources if s.error}
        stored.append((report.summary(), items, errors))
    assert pools == [True, False, True], "the first and last collects had processes to parse in, the second none"
    assert stored[0] == stored[1] == stored[2]
    summary, items, errors = stored[0]
    assert summary == "collected 21 sources: 30 new, 0 updated, 0 unchanged, 1 failed" and len(items) == 4 + 6
    assert list(errors) == [f"f{len(paths) - 1}"] and "broken.xml" in errors[f"f{len(paths) - 1}"]

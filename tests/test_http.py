"""The network side of sources: robots.txt, retries, dead hosts, User-Agent, per-host delay."""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.collect import collect
from pipeline.config import HttpSettings, load_settings
from pipeline.errors import SourceError
from pipeline.sources.http import Fetcher, NotModified, Page
from pipeline.store import Store
from tests.conftest import EXAMPLE_SITE, source_toml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_source_does_not_stop_the_others(site_server, write_config) -> None:
    site = site_server(EXAMPLE_SITE)
    dead = f"http://127.0.0.1:{_free_port()}/ledare/"
    config = write_config(source_toml("dead", dead) + source_toml("ledare", site.url("/ledare/index.html")))
    settings = load_settings(config)
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        assert store.count_items() == 3
    assert report.summary() == "collected 2 sources: 3 new, 0 updated, 0 unchanged, 1 failed"
    [problem] = report.problems()
    assert problem.startswith(f"source 'dead' failed: {dead}: cannot connect")


def test_a_missing_item_page_is_skipped_and_reported(site_server, write_config, tmp_path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(
        "<html><body><article><h2><a href='gone.html'>Borta</a></h2></article>"
        "<article><h2><a href='here.html'>Här</a></h2></article></body></html>",
        encoding="utf-8",
    )
    (root / "here.html").write_text(
        "<html><body><h1>Här</h1><p>Ledare · Ann Ek · Redaktör · 2024-01-02</p>"
        "<p>En text som är lång nog för att vara en artikel på riktigt, med flera ord.</p></body></html>",
        encoding="utf-8",
    )
    site = site_server(root)
    settings = load_settings(write_config(source_toml("ledare", site.url("/"))))
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
    assert report.summary() == "collected 1 source: 1 new, 0 updated, 0 unchanged, 1 failed"
    assert report.problems() == [f"source 'ledare': {site.url('/gone.html')}: HTTP 404 NOT FOUND"]


def test_robots_txt_is_respected(site_server, write_config) -> None:
    site = site_server(EXAMPLE_SITE)
    site.overrides["/robots.txt"] = (
        200,
        "User-agent: flygblad\nDisallow: /ledare/hallbarhet\n\nUser-agent: *\nDisallow:\n",
    )
    settings = load_settings(write_config(source_toml("ledare", site.url("/ledare/index.html"))))
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
    assert report.total("new") == 2
    [problem] = report.problems()
    assert "hallbarhet-ar-en-konkurrensfordel.html: robots.txt does not allow flygblad" in problem
    assert "/ledare/hallbarhet-ar-en-konkurrensfordel.html" not in [h.path for h in site.hits]


def test_robots_txt_is_asked_for_once_a_day(site_server, write_config) -> None:
    """A collect that ran within the day uses the robots.txt it kept (RFC 9309 2.4: at most 24 hours);
    its rules still hold, and after a day it is asked for again."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from pipeline.store.schema import robots

    site = site_server(EXAMPLE_SITE)
    site.overrides["/robots.txt"] = (200, "User-agent: *\nDisallow: /ledare/hallbarhet\n")
    settings = load_settings(write_config(source_toml("ledare", site.url("/ledare/index.html"))))
    with Store.open(settings.storage_url) as store:
        for _run in range(2):
            report = collect(settings, store)
            assert len(report.problems()) == 1 and "robots.txt does not allow" in report.problems()[0]
        assert [h.path for h in site.hits].count("/robots.txt") == 1, "the second run used the kept copy"
        with store.engine.begin() as connection:  # a day later
            connection.execute(update(robots).values(fetched=datetime.now(UTC) - timedelta(hours=25)))
        collect(settings, store)
    assert [h.path for h in site.hits].count("/robots.txt") == 2
    assert "/ledare/hallbarhet-ar-en-konkurrensfordel.html" not in [h.path for h in site.hits]


def test_retries_with_backoff_on_503(site_server) -> None:
    site = site_server(EXAMPLE_SITE)
    site.fail_first["/nyheter.xml"] = 2
    with Fetcher(HttpSettings(retries=2, backoff_seconds=0, delay_seconds=0, respect_robots=False)) as fetcher:
        page = fetcher.get(site.url("/nyheter.xml"))
    assert isinstance(page, Page) and b"Startprogrammet" in page.content
    assert [h.status for h in site.hits] == [503, 503, 200]


def test_gives_up_after_the_retries(site_server) -> None:
    site = site_server(EXAMPLE_SITE)
    site.fail_first["/nyheter.xml"] = 5
    with Fetcher(HttpSettings(retries=1, backoff_seconds=0, delay_seconds=0, respect_robots=False)) as fetcher:
        with pytest.raises(SourceError, match=r"nyheter\.xml: HTTP 503"):
            fetcher.get(site.url("/nyheter.xml"))
    assert len(site.hits) == 2


def test_conditional_get_and_user_agent(site_server) -> None:
    site = site_server(EXAMPLE_SITE)
    with Fetcher(HttpSettings(delay_seconds=0), "https://test.example") as fetcher:
        page = fetcher.get(site.url("/nyheter.xml"))
        assert isinstance(page, Page) and page.validators.etag
        again = fetcher.get(site.url("/nyheter.xml"), page.validators)
    assert isinstance(again, NotModified)
    hit = site.hits[-1]
    assert hit.status == 304 and hit.if_none_match == page.validators.etag
    assert hit.user_agent.startswith("flygblad/") and "+https://test.example" in hit.user_agent


def test_per_host_delay(site_server) -> None:
    site = site_server(EXAMPLE_SITE)
    with Fetcher(HttpSettings(delay_seconds=0.3, respect_robots=False)) as fetcher:
        start = time.monotonic()
        fetcher.get(site.url("/index.html"))
        fetcher.get(site.url("/nyheter.xml"))
        fetcher.get(site.url("/ledare/index.html"))
        waited = time.monotonic() - start
    # Behaviour, not speed: three requests to one host are at least two delays apart.
    assert waited >= 0.6


def test_local_file_validators(tmp_path) -> None:
    page_file = tmp_path / "a.html"
    page_file.write_text("<p>hej</p>", encoding="utf-8")
    with Fetcher(HttpSettings()) as fetcher:
        page = fetcher.get(page_file.as_uri())
        assert isinstance(page, Page) and page.text == "<p>hej</p>"
        assert isinstance(fetcher.get(page_file.as_uri(), page.validators), NotModified)
        page_file.write_text("<p>hej igen</p>", encoding="utf-8")
        assert isinstance(fetcher.get(page_file.as_uri(), page.validators), Page)
        with pytest.raises(SourceError, match="no such file"):
            fetcher.get((tmp_path / "nope.html").as_uri())

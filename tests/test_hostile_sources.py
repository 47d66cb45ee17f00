"""Sources are untrusted: a hostile server over real HTTP cannot read local files, exhaust memory or hang a collect."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

from werkzeug import Request, Response

from tests.conftest import source_toml

INDEX = """<html><body><main>
<h1>Nyheter</h1>
<ul class="news">{links}</ul>
</main></body></html>"""
PAGE = """<html lang="sv"><head><title>{title}</title></head><body><article><h1>{title}</h1>
<p>Publicerad 5 mars 2024. {text}</p></article></body></html>"""


def _collect(config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_remote_index_cannot_make_flygblad_read_local_files(httpserver, write_config, tmp_path) -> None:
    private = tmp_path / "private.txt"
    private.write_text("HEMLIGT-INNEHÅLL", encoding="utf-8")
    links = (
        f'<li><a class="item" href="file://{private}">Hemligt</a></li>'
        '<li><a class="item" href="/ok.html">Vanlig nyhet</a></li>'
        '<li><a class="item" href="file:///dev/zero">Noll</a></li>'
    )
    httpserver.expect_request("/").respond_with_data(INDEX.format(links=links), content_type="text/html")
    httpserver.expect_request("/ok.html").respond_with_data(
        PAGE.format(title="Vanlig nyhet", text="Det här är en vanlig nyhet."), content_type="text/html"
    )
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    config = write_config(source_toml("nyheter", httpserver.url_for("/"), category="article", links="a.item"))
    done = _collect(config, "collect")
    assert done.returncode == 0, done.stderr
    items = json.loads(_collect(config, "items", "--json").stdout)
    assert [i["title"] for i in items] == ["Vanlig nyhet"]
    assert "HEMLIGT" not in json.dumps(items)


def test_a_gzip_bomb_is_stopped_at_max_bytes_and_the_others_go_on(httpserver, write_config) -> None:
    bomb = gzip.compress(b"<p>" + b"A" * 60_000_000 + b"</p>")
    httpserver.expect_request("/bomb/").respond_with_response(
        Response(bomb, headers={"Content-Encoding": "gzip", "Content-Type": "text/html"})
    )
    httpserver.expect_request("/ok/").respond_with_data(
        PAGE.format(title="Lugn nyhet", text="Allt är lugnt."), content_type="text/html"
    )
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    config = write_config(
        source_toml("bomb", httpserver.url_for("/bomb/"), category="article")
        + source_toml("ok", httpserver.url_for("/ok/"), category="article")
    )
    done = _collect(config, "collect")
    assert done.returncode == 1
    assert "larger than [http] max_bytes (10,000,000 bytes once decompressed)" in done.stderr
    assert "source 'ok'" not in done.stderr


def test_a_server_dripping_one_byte_at_a_time_fails_after_total_timeout(httpserver, write_config) -> None:
    def drip(request: Request) -> Response:
        def body():
            for _ in range(40):
                yield b" "
                time.sleep(0.25)

        return Response(body(), content_type="text/html")

    httpserver.expect_request("/slow/").respond_with_handler(drip)
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    config = write_config(
        source_toml("slow", httpserver.url_for("/slow/"), category="article")
        + "\n[http]\ndelay_seconds = 0\nretries = 0\ntotal_timeout = 2\n"
    )
    done = _collect(config, "collect")
    assert done.returncode == 1
    assert "took longer than [http] total_timeout (2 s)" in done.stderr, "it gave up instead of reading on"


RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Nyheter</title><link>{base}</link><description>d</description>
{items}
</channel></rss>"""
RSS_ITEM = '<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">{guid}</guid></item>'


def test_javascript_links_in_a_feed_are_left_out_not_republished(httpserver, write_config) -> None:
    """A feed entry linking to javascript: was republished as the item's link in RSS, Atom and JSON."""
    base = httpserver.url_for("/")
    items = "".join(
        RSS_ITEM.format(title=title, link=link, guid=guid)
        for title, link, guid in [
            ("Klicka här", "javascript:alert(document.cookie)", "g1"),
            ("Data", "data:text/html,<script>alert(1)</script>", "g2"),
            ("Riktig nyhet", f"{base}nyhet.html", "g3"),
        ]
    )
    httpserver.expect_request("/feed.xml").respond_with_data(
        RSS.format(base=base, items=items), content_type="application/rss+xml"
    )
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    config = write_config(source_toml("nyheter", httpserver.url_for("/feed.xml"), kind="feed", category="article"))
    done = _collect(config, "collect")
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr and "javascript:alert" in done.stderr, "the operator is told, once per entry"
    assert "1 new" in done.stdout and "2 skipped" in done.stdout
    published = _collect(config, "feeds")
    assert published.returncode == 0, published.stderr
    feeds = config.parent / "feeds"
    texts = {path.name: path.read_text(encoding="utf-8") for path in feeds.glob("*.*") if path.is_file()}
    assert {"nyheter.rss", "nyheter.atom", "nyheter.json"} <= set(texts), sorted(texts)
    for name, text in texts.items():
        assert "Riktig nyhet" in text or name.startswith("all"), name
        assert "javascript:" not in text and "data:text" not in text, name


def test_a_page_nested_thousands_deep_fails_fast_and_alone(httpserver, write_config) -> None:
    """A 440 KB page nested 20,000 deep took a minute in the noise pass (or crashed the source with RecursionError)."""
    deep = "<div class='entry-content'>" * 20_000 + "<p>djupt</p>" + "</div>" * 20_000
    links = '<li><a class="item" href="/deep.html">Djup</a></li><li><a class="item" href="/ok.html">Vanlig</a></li>'
    httpserver.expect_request("/").respond_with_data(INDEX.format(links=links), content_type="text/html")
    httpserver.expect_request("/deep.html").respond_with_data(
        PAGE.format(title="Djup", text=deep), content_type="text/html"
    )
    httpserver.expect_request("/ok.html").respond_with_data(
        PAGE.format(title="Vanlig", text="En vanlig nyhet."), content_type="text/html"
    )
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    config = write_config(source_toml("nyheter", httpserver.url_for("/"), category="article", links="a.item"))
    done = _collect(config, "collect")  # it used to take a minute, or crash the source: timings are in bench/
    assert done.returncode == 1
    assert "page too deeply nested (more than 256 levels of elements)" in done.stderr, done.stderr
    assert "1 new" in done.stdout, "the other page of the source is still read"

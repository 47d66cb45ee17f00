"""Feeds read exactly as written (issue 15), each case a small feed of its own served over HTTP to `flygblad collect`."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

from tests.conftest import source_toml

ITEM = "<item><title>{title}</title><link>{link}</link><guid>{link}</guid><pubDate>{date}</pubDate></item>"


def _rss(items: str, declaration: str = '<?xml version="1.0" encoding="utf-8"?>') -> str:
    return f'{declaration}<rss version="2.0"><channel><title>Feed</title><link>https://x.example/</link>{items}</channel></rss>'


def _serve(httpserver, data: str | bytes, content_type: str = "application/rss+xml") -> str:
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    httpserver.expect_request("/feed.xml").respond_with_data(data, content_type=content_type)
    return httpserver.url_for("/feed.xml")


def _collect(config) -> list[dict]:
    run = [sys.executable, "-m", "pipeline", "--config", str(config)]
    done = subprocess.run([*run, "collect"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([*run, "items", "--json"], capture_output=True, text=True, timeout=120)
    return json.loads(listed.stdout)


def test_rss_dates_keep_their_zone(httpserver, write_config) -> None:
    """`Thu, 20 Dec 2018 08:00:00 +0000` was read as Stockholm time: an hour off in winter, two in summer."""
    items = "".join(
        ITEM.format(title=title, link=f"https://x.example/{n}", date=date)
        for n, (title, date) in enumerate(
            [
                ("UTC", "Thu, 20 Dec 2018 08:00:00 +0000"),
                ("GMT", "Thu, 20 Dec 2018 08:00:00 GMT"),
                ("New York", "Thu, 20 Dec 2018 08:00:00 -0500"),
                ("EST", "Thu, 20 Dec 2018 08:00:00 EST"),
                ("Sommar", "Mon, 02 Jul 2018 08:00:00 +0000"),
            ]
        )
    )
    config = write_config(source_toml("nyheter", _serve(httpserver, _rss(items)), kind="feed", category="article"))
    found = {item["title"]: datetime.fromisoformat(item["published"]) for item in _collect(config)}
    assert found["UTC"].isoformat() == "2018-12-20T09:00:00+01:00", "the instant, shown in the site's zone"
    assert found["GMT"] == found["UTC"]
    assert found["New York"].isoformat() == found["EST"].isoformat() == "2018-12-20T14:00:00+01:00"
    assert found["Sommar"].isoformat() == "2018-07-02T10:00:00+02:00"


def test_the_http_charset_is_honoured(httpserver, write_config) -> None:
    """A KOI8-R feed declared only in Content-Type came out as mojibake, exit 0."""
    title = "Новости недели"
    body = _rss(
        ITEM.format(title=title, link="https://x.example/1", date="Thu, 20 Dec 2018 08:00:00 +0000"),
        declaration='<?xml version="1.0"?>',
    )
    url = _serve(httpserver, body.encode("koi8-r"), "application/rss+xml; charset=KOI8-R")
    config = write_config(source_toml("nyheter", url, kind="feed", category="article"))
    assert [item["title"] for item in _collect(config)] == [title]


def test_plain_text_titles_stay_text(httpserver, write_config) -> None:
    """ "Using Vec<T> and Box<dyn Error>" became "Using Vec and Box"; `&amp;amp;` was unescaped twice."""
    items = (
        ITEM.format(title="Using Vec&lt;T&gt; and Box&lt;dyn Error&gt; &amp;amp;c", link="https://x.example/1", date="")
        + ITEM.format(title="Fish &amp;amp; chips", link="https://x.example/2", date="")  # HTML: decoded once
        + ITEM.format(title="&lt;b&gt;Fet&lt;/b&gt; rubrik", link="https://x.example/3", date="")
    )
    config = write_config(source_toml("nyheter", _serve(httpserver, _rss(items)), kind="feed", category="article"))
    titles = sorted(item["title"] for item in _collect(config))
    assert titles == ["Fet rubrik", "Fish & chips", "Using Vec<T> and Box<dyn Error> &amp;c"], titles

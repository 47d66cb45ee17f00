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


def _one_item(httpserver, write_config, items: str) -> tuple[dict, object]:
    """The one item a feed of *items* gives, and the config that collected it."""
    config = write_config(source_toml("nyheter", _serve(httpserver, _rss(items)), kind="feed", category="article"))
    [item] = _collect(config)
    return item, config


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


def test_a_repeated_guid_keeps_the_first_entry_and_says_so_once(httpserver, write_config) -> None:
    """The later of two entries with one guid overwrote the earlier one, silently."""
    entry = (
        '<item><title>{title}</title><link>https://x.example/{n}</link><guid isPermaLink="false">samma</guid></item>'
    )
    items = "".join(entry.format(title=title, n=n) for n, title in enumerate(["Första", "Andra"]))
    config = write_config(source_toml("nyheter", _serve(httpserver, _rss(items)), kind="feed", category="article"))
    run = [sys.executable, "-m", "pipeline", "--config", str(config)]
    done = subprocess.run([*run, "collect"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.count("repeats the id 'samma'") == 1, done.stderr
    listed = json.loads(subprocess.run([*run, "items", "--json"], capture_output=True, text=True).stdout)
    assert [item["title"] for item in listed] == ["Första"]


def test_impossible_dates_are_not_publication_dates(httpserver, write_config) -> None:
    """A year-0001 placeholder was printed as the publication date; so would a date in 2099 be."""
    items = ITEM.format(title="Platshållare", link="https://x.example/1", date="Mon, 01 Jan 0001 00:00:00 +0000")
    items += ITEM.format(title="Framtid", link="https://x.example/2", date="Thu, 01 Jan 2099 00:00:00 +0000")
    items += ITEM.format(title="Riktig", link="https://x.example/3", date="Thu, 20 Dec 2018 08:00:00 +0000")
    config = write_config(source_toml("nyheter", _serve(httpserver, _rss(items)), kind="feed", category="article"))
    published = {item["title"]: item["published"] for item in _collect(config)}
    assert published == {"Platshållare": None, "Framtid": None, "Riktig": "2018-12-20T09:00:00+01:00"}


def test_a_page_with_a_placeholder_date_falls_back_to_its_real_one(httpserver, write_config) -> None:
    page = """<html lang="sv"><head><title>Rubrik</title>
    <script type="application/ld+json">{"@type": "NewsArticle", "headline": "Rubrik",
     "datePublished": "0001-01-01T01:12:12+01:12"}</script></head>
    <body><article><h1>Rubrik</h1><time datetime="2024-03-05T10:15:00+01:00">5 mars 2024</time>
    <p>En text som är lång nog att vara en artikel, med flera ord i sig.</p></article></body></html>"""
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    httpserver.expect_request("/a.html").respond_with_data(page, content_type="text/html; charset=utf-8")
    config = write_config(source_toml("sida", httpserver.url_for("/a.html"), category="article"))
    [item] = _collect(config)
    assert item["published"] == "2024-03-05T10:15:00+01:00"


def test_a_guid_that_is_not_a_url_is_never_the_link(httpserver, write_config) -> None:
    """A `tag:` guid became the item's link and was republished as isPermaLink="true"."""
    items = (
        "<item><title>Nyhet</title><link>https://x.example/nyhet</link>"
        '<guid isPermaLink="false">tag:x.example,2024:1</guid></item>'
    )
    item, config = _one_item(httpserver, write_config, items)
    assert (item["id"], item["url"]) == ("tag:x.example,2024:1", "https://x.example/nyhet")
    run = [sys.executable, "-m", "pipeline", "--config", str(config)]
    assert subprocess.run([*run, "feeds"], capture_output=True, text=True).returncode == 0
    rss = (config.parent / "feeds" / "nyheter.rss").read_text(encoding="utf-8")
    assert '<guid isPermaLink="false">tag:x.example,2024:1</guid>' in rss
    assert "<link>https://x.example/nyhet</link>" in rss


def test_an_author_is_a_name_not_an_address(httpserver, write_config) -> None:
    """`info@example.org (Name)` came out mangled; a bare address is no byline."""
    atom = """<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
    <id>https://x.example/</id><updated>2024-03-05T10:00:00Z</updated>
    <entry><title>Ett</title><link href="https://x.example/1"/><id>https://x.example/1</id>
      <updated>2024-03-05T10:00:00Z</updated><author><name>info@example.org (Anna Ek)</name></author></entry>
    <entry><title>Två</title><link href="https://x.example/2"/><id>https://x.example/2</id>
      <updated>2024-03-05T10:00:00Z</updated><author><name>Bo Berg &lt;bo@example.org&gt;</name></author></entry>
    <entry><title>Tre</title><link href="https://x.example/3"/><id>https://x.example/3</id>
      <updated>2024-03-05T10:00:00Z</updated><author><name>redaktionen@example.org</name></author></entry>
    </feed>"""
    url = _serve(httpserver, atom, "application/atom+xml")
    config = write_config(source_toml("nyheter", url, kind="feed", category="article"))
    authors = {item["title"]: item["author"] for item in _collect(config)}
    assert authors == {"Ett": "Anna Ek", "Två": "Bo Berg", "Tre": None}


def test_the_extractors_own_log_lines_stay_quiet_unless_asked(httpserver, write_config) -> None:
    """trafilatura's "WARNING trafilatura.core: discarding data: …" reached the terminal on every empty page."""
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    httpserver.expect_request("/").respond_with_data(
        '<html><body><main><ul><li><a class="item" href="/tom.html">Tom</a></li></ul></main></body></html>',
        content_type="text/html",
    )
    httpserver.expect_request("/tom.html").respond_with_data(
        "<html><head><title>Tom</title></head><body></body></html>", content_type="text/html"
    )
    config = write_config(source_toml("sida", httpserver.url_for("/"), category="article", links="a.item"))
    run = [sys.executable, "-m", "pipeline", "--config", str(config)]
    quiet = subprocess.run([*run, "collect"], capture_output=True, text=True, timeout=120)
    assert "no article text" in quiet.stderr, quiet.stderr  # flygblad's own line says what failed
    assert "trafilatura" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([*run, "-v", "collect"], capture_output=True, text=True, timeout=120)
    assert "trafilatura" in loud.stderr, "with -v the library's lines are shown"


def test_an_episode_known_by_its_enclosure_is_collected(httpserver, write_config) -> None:
    """Entries with neither guid nor link (podcast episodes known by their enclosure) were refused."""
    items = (
        "<item><title>Avsnitt 12</title><pubDate>Thu, 20 Dec 2018 08:00:00 +0000</pubDate>"
        '<enclosure url="https://x.example/avsnitt-12.mp3" length="1000" type="audio/mpeg"/></item>'
    )
    item, _config = _one_item(httpserver, write_config, items)
    assert (item["id"], item["url"]) == ("https://x.example/avsnitt-12.mp3", "https://x.example/avsnitt-12.mp3")


def test_relative_links_in_content_are_relative_to_the_entrys_page_or_its_xml_base(httpserver, write_config) -> None:
    """feedparser resolved them against the feed's URL: the sample's "Anmäl intresse" link lost its href, and an
    RSS item's `bild.jpg` pointed into the feed's folder instead of the article's."""
    rss = (
        "<item><title>Med bild</title><link>https://x.example/2024/03/artikel.html</link>"
        '<description>&lt;p&gt;&lt;img src="bild.jpg" alt="Bild"&gt; &lt;a href="/om"&gt;Om oss&lt;/a&gt;'
        "&lt;/p&gt;</description></item>"
    )
    url = _serve(httpserver, _rss(rss))
    atom = """<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
    <id>https://y.example/</id><updated>2024-03-05T10:00:00Z</updated>
    <entry xml:base="https://blog.example/linked/"><title>Länkad</title><link href="https://elsewhere.example/story"/>
      <id>https://blog.example/linked/1</id><updated>2024-03-05T10:00:00Z</updated>
      <content type="html">&lt;p&gt;Via &lt;a href="2024/03/kommentar"&gt;min kommentar&lt;/a&gt;.&lt;/p&gt;</content></entry>
    </feed>"""
    httpserver.expect_request("/feed.atom").respond_with_data(atom, content_type="application/atom+xml")
    config = write_config(
        source_toml("rss", url, kind="feed", category="article")
        + source_toml("atom", httpserver.url_for("/feed.atom"), kind="feed", category="article")
    )
    _collect(config)
    run = [sys.executable, "-m", "pipeline", "--config", str(config)]
    subprocess.run([*run, "feeds"], capture_output=True, text=True, check=True)
    feed = json.loads((config.parent / "feeds" / "all.json").read_text(encoding="utf-8"))
    html = {entry["title"]: entry["content_html"] for entry in feed["items"]}
    assert 'src="https://x.example/2024/03/bild.jpg"' in html["Med bild"], html["Med bild"]
    assert 'href="https://x.example/om"' in html["Med bild"]
    # An xml:base the feed declares is the author's word: not the linked site's address.
    assert 'href="https://blog.example/linked/2024/03/kommentar"' in html["Länkad"], html["Länkad"]


def test_entries_without_a_title_are_notes(httpserver, write_config) -> None:
    """RSS 2.0 allows items without <title> (microblogs, link blogs): they were refused, and `collect` exited 1
    whenever such a feed changed."""
    items = (
        "<item><description>Just shipped version 2 of the app. Dark mode is here, finally!</description>"
        "<link>https://x.example/notes/1</link><guid>https://x.example/notes/1</guid>"
        "<pubDate>Thu, 20 Dec 2018 08:00:00 +0000</pubDate></item>"
        + ITEM.format(title="Med rubrik", link="https://x.example/2", date="Thu, 20 Dec 2018 09:00:00 +0000")
    )
    config = write_config(source_toml("mikro", _serve(httpserver, _rss(items)), kind="feed", category="article"))
    found = {item["url"]: item for item in _collect(config)}  # exit 0 asserted there
    note = found["https://x.example/notes/1"]
    assert (note["title"], note["note"]) == ("Just shipped version 2 of the app.", True)
    assert found["https://x.example/2"]["note"] is False
    run = [sys.executable, "-m", "pipeline", "--config", str(config)]
    subprocess.run([*run, "feeds"], capture_output=True, text=True, check=True)
    json_feed = json.loads((config.parent / "feeds" / "mikro.json").read_text(encoding="utf-8"))
    [as_json] = [entry for entry in json_feed["items"] if entry["url"] == "https://x.example/notes/1"]
    assert "title" not in as_json and "Dark mode is here" in as_json["content_html"]  # a micropost, as written
    rss = (config.parent / "feeds" / "mikro.rss").read_text(encoding="utf-8")
    assert rss.count("<title>") == 2  # the channel's and "Med rubrik": the note has none, as in its source
    atom = (config.parent / "feeds" / "mikro.atom").read_text(encoding="utf-8")
    assert "<title>Just shipped version 2 of the app.</title>" in atom  # Atom requires one


def test_one_item_in_two_sources_belongs_to_each_and_the_strongest_category_wins(httpserver, write_config) -> None:
    """A WordPress RSS + Atom pair (or a category feed inside the main feed) list the same posts: the second source
    came out empty, so its feeds had nothing and its `category = "leader"` never applied."""
    posts = "".join(
        ITEM.format(title=f"Inlägg {n}", link=f"https://x.example/{n}", date=f"Thu, 2{n} Dec 2018 08:00:00 +0000")
        for n in range(3)
    )
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    httpserver.expect_request("/feed.xml").respond_with_data(_rss(posts), content_type="application/rss+xml")
    httpserver.expect_request("/ledare.xml").respond_with_data(
        _rss(ITEM.format(title="Inlägg 1", link="https://x.example/1", date="Fri, 21 Dec 2018 08:00:00 +0000")),
        content_type="application/rss+xml",
    )
    config = write_config(
        source_toml("alla", httpserver.url_for("/feed.xml"), kind="feed", category="article")
        + source_toml("ledare", httpserver.url_for("/ledare.xml"), kind="feed", category="leader")
        + '\n[organisation]\nname = "Föreningen"\naddress = "Box 1, 111 11 Stad"\n'
        + '\n[[lists]]\nname = "brev"\ntitle = "Brevet"\nfrom = "Föreningen <brev@x.example>"\n'
        + "first_issue_days = 36500\n"  # the posts are from 2018
    )
    run = [sys.executable, "-m", "pipeline", "--config", str(config)]
    done = subprocess.run([*run, "collect"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "collected 2 sources: 4 new" in done.stdout + done.stderr  # 3 in "alla", 1 more listing in "ledare"
    listed = json.loads(subprocess.run([*run, "items", "--json"], capture_output=True, text=True).stdout)
    assert len(listed) == 3
    shared = next(item for item in listed if item["title"] == "Inlägg 1")
    assert (shared["sources"], shared["category"]) == (["alla", "ledare"], "leader")
    subprocess.run([*run, "feeds"], capture_output=True, text=True, check=True)
    ledare = json.loads((config.parent / "feeds" / "ledare.json").read_text(encoding="utf-8"))
    assert [(entry["title"], entry["tags"]) for entry in ledare["items"]] == [("Inlägg 1", ["leader"])]
    alla = json.loads((config.parent / "feeds" / "alla.json").read_text(encoding="utf-8"))
    assert {entry["title"]: entry["tags"] for entry in alla["items"]}["Inlägg 1"] == [
        "article"
    ]  # as that source has it
    preview = subprocess.run([*run, "preview", "--out", str(config.parent / "preview")], capture_output=True, text=True)
    assert preview.returncode == 0, preview.stderr
    text = (config.parent / "preview" / "issue.txt").read_text(encoding="utf-8")
    assert text.index("Inlägg 1") < text.index("Inlägg 2"), "a leader comes first in the issue"
    again = subprocess.run([*run, "collect"], capture_output=True, text=True, timeout=120)
    assert "0 new, 0 updated" in again.stdout + again.stderr, "the two sources never take turns rewriting it"


def test_odd_entries_real_feeds_carry(httpserver, write_config) -> None:
    """From the real-feeds row: an HTML title's inline markup ran apart ("ft<sup>2</sup>" read "ft 2"), an entry whose
    only alternate is a PDF was skipped, and an empty <entry/> failed the source on every collect."""
    atom = """<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
    <id>https://y.example/</id><updated>2024-03-05T10:00:00Z</updated>
    <entry><title type="html">Lägenhet 42 m&lt;sup&gt;2&lt;/sup&gt;, &lt;b&gt;₹&lt;/b&gt;4 000</title>
      <link href="https://y.example/a"/><id>https://y.example/a</id><updated>2024-03-05T10:00:00Z</updated></entry>
    <entry><title>Uppsatsen</title><id>tag:y.example,2024:uppsats</id><updated>2024-03-05T10:00:00Z</updated>
      <link rel="alternate" type="application/pdf" href="https://y.example/uppsats.pdf"/></entry>
    <entry><id>tag:y.example,2024:tom</id></entry>
    </feed>"""
    config = write_config(source_toml("y", _serve(httpserver, atom, "application/atom+xml"), kind="feed"))
    run = [sys.executable, "-m", "pipeline", "--config", str(config)]
    done = subprocess.run([*run, "collect"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'tag:y.example,2024:tom' has neither a title nor any text" in done.stderr
    listed = json.loads(subprocess.run([*run, "items", "--json"], capture_output=True, text=True).stdout)
    assert {item["title"]: item["url"] for item in listed} == {
        "Lägenhet 42 m2, ₹4 000": "https://y.example/a",
        "Uppsatsen": "https://y.example/uppsats.pdf",
    }

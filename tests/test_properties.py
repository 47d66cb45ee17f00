"""Property-based tests: whatever the world sends, flygblad answers with a result or its own clear error.

Each property runs over generated input (hypothesis): the date parser, the page
and feed extractors, the config loader, the CSV importer, the MIME builder and
the public web side. None may raise anything but the error it documents
(SourceError, ConfigError, SubscriberError, RenderError), nor answer 500.

How many examples: the ``ci`` profile (the default, registered in conftest.py)
runs 200 per property, 1,800 in all; ``python -m bench.fuzz`` runs the same
properties under the ``fuzz`` profile (5,000 each) and reports the count.
"""

from __future__ import annotations

import csv
import io
import json
import re
import string
import textwrap
import threading
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from zoneinfo import ZoneInfo

import feedparser
import pytest
import requests
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import load_settings
from pipeline.errors import ConfigError, RenderError, SourceError
from pipeline.render import RecipientValues, Rendered, token
from pipeline.render.mime import MessageTemplate, mailbox
from pipeline.sources.dates import find_date, parse_date
from pipeline.sources.extract import extract_page
from pipeline.sources.feed import FeedSource
from pipeline.subscribers import SubscriberError, candidate, read_csv

STHLM = ZoneInfo("Europe/Stockholm")
SLOW_INPUT = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- strategies

WORDS = st.sampled_from(
    "mars March december dec. 2024 2018 den 5 20th kl. 10.15 10:15 T Z +0100 -05:00 UTC GMT "
    "torsdag Thursday , . : - / Publicerad Uppdaterad av by 0001-01-01 9999 31 29 februari".split()
)
DATE_LIKE = (
    st.lists(WORDS, max_size=8).map(" ".join)
    | st.text(max_size=60)
    | st.from_regex(r"\A\d{1,5}-\d{1,2}-\d{1,2}([T ]\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?\Z")
)

TAGS = st.sampled_from(
    "div p span a article main section aside nav header footer h1 h2 time img figure ul li table td "
    "script style form iframe svg math template noscript meta link title body html".split()
)
ATTRIBUTE_NAMES = st.sampled_from(
    "class id href src datetime content property name rel itemprop itemtype onclick style srcset alt lang".split()
)
ATTRIBUTE_VALUES = st.sampled_from(
    [
        "entry-content",
        "sidebar",
        "byline",
        "author",
        "og:title",
        "article:published_time",
        "canonical",
        "javascript:alert(1)",
        "https://example.org/a.jpg",
        "/relative/path",
        "file:///etc/passwd",
        "2024-03-05T10:15:00+01:00",
        "0001-01-01T00:00:00",
        "articleBody",
        "headline",
        "",
    ]
) | st.text(max_size=30)
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
JSON_LD = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["@type", "@graph", "headline", "author", "name", "datePublished", "image", "url", "articleBody"]
            )
            | TEXT,
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> str:
    tag = draw(TAGS)
    attributes = draw(st.dictionaries(ATTRIBUTE_NAMES, ATTRIBUTE_VALUES, max_size=3))
    rendered = "".join(f' {k}="{v.replace(chr(34), "&quot;")}"' for k, v in attributes.items())
    if tag == "script" and draw(st.booleans()):
        rendered, inner = ' type="application/ld+json"', json.dumps(draw(JSON_LD))
        if draw(st.booleans()):
            inner = f"<![CDATA[{inner}]]>"
    elif depth < 4:
        inner = "".join(draw(st.lists(st.one_of(TEXT, elements(depth + 1)), max_size=4)))
    else:
        inner = draw(TEXT)
    closing = draw(st.sampled_from([f"</{tag}>", f"</{tag}>", ""]))  # pages leave tags open too
    return f"<{tag}{rendered}>{inner}{closing}"


PAGES = st.lists(elements(), max_size=6).map(lambda parts: "<!doctype html><html><body>" + "".join(parts))


def _config(tmp: Path, body: str = "") -> Path:
    path = tmp / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [site]
            title = "Sajten"
            base_url = "https://sajten.example"

            [[sources]]
            name = "nyheter"
            kind = "feed"
            url = "https://sajten.example/feed.xml"
            category = "article"
            """
        )
        + body,
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def feed_source(tmp_path_factory: pytest.TempPathFactory) -> FeedSource:
    settings_ = load_settings(_config(tmp_path_factory.mktemp("feed")))
    return FeedSource(settings_, settings_.sources[0])


# ---------------------------------------------------------------- dates


@given(DATE_LIKE)
def test_the_date_parser_answers_an_aware_date_or_none(text: str) -> None:
    for found in (parse_date(text, STHLM), find_date(text, STHLM)):
        assert found is None or (isinstance(found, datetime) and found.utcoffset() is not None), (text, found)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.timezones()))
def test_an_iso_date_with_its_offset_keeps_its_instant(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    parsed = parse_date(moment.isoformat(), STHLM)
    # Compared in UTC: Python calls two aware datetimes in different zones unequal around a DST change.
    assert parsed is not None and parsed.astimezone(UTC) == moment.astimezone(UTC), (moment.isoformat(), parsed)


# ---------------------------------------------------------------- extractors


@SLOW_INPUT
@given(PAGES, st.sampled_from(["https://sajten.example/a", "http://127.0.0.1/x?y=1#z"]))
def test_page_extraction_never_crashes_and_never_passes_on_script(html: str, url: str) -> None:
    try:
        extracted = extract_page(html, url, tz=STHLM)
    except SourceError:
        return
    for element in BeautifulSoup(extracted.body_html, "html.parser").find_all(True):
        assert element.name not in ("script", "style", "iframe", "form", "svg", "math"), extracted.body_html
        for name, value in element.attrs.items():
            assert not name.lower().startswith("on"), extracted.body_html
            if name in ("href", "src"):
                assert not str(value).strip().lower().startswith(("javascript:", "data:text")), extracted.body_html
    for link in (extracted.canonical_url, extracted.image):
        assert link is None or re.match(r"^https?://", link), link
    assert extracted.published is None or extracted.published.utcoffset() is not None


FEED_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=40)


@st.composite
def feeds(draw: st.DrawFn) -> bytes:
    def esc(value: str) -> str:
        return value.replace("&", "&amp;").replace("<", "&lt;")

    entries = []
    for _ in range(draw(st.integers(0, 4))):
        fields = {
            "title": draw(FEED_TEXT | PAGES),
            "link": draw(ATTRIBUTE_VALUES),
            "guid": draw(FEED_TEXT),
            "pubDate": draw(DATE_LIKE),
            "description": draw(PAGES | FEED_TEXT),
            "author": draw(FEED_TEXT),
        }
        kept = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
        entries.append("<item>" + "".join(f"<{k}>{esc(fields[k])}</{k}>" for k in kept) + "</item>")
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        + "".join(entries)
        + "</channel></rss>"
    ).encode("utf-8")


@SLOW_INPUT
@given(feeds())
def test_feed_entries_become_items_or_clear_errors(feed_source: FeedSource, data: bytes) -> None:
    parsed = feedparser.parse(data, response_headers={"content-location": "https://sajten.example/feed.xml"})
    for entry in parsed.entries:
        try:
            item = feed_source.read_entry(entry, "sv")
        except SourceError:
            continue
        assert re.match(r"^https?://", item.url), item.url
        assert item.title and item.title == item.title.strip() and not re.search(r"[\x00-\x08\x0b-\x1f]", item.title)
        assert item.published is None or item.published.utcoffset() is not None


# ---------------------------------------------------------------- config

CONFIG_KEYS = {
    "site": ["title", "base_url", "language", "timezone", "tilte"],
    "http": ["delay_seconds", "timeout", "retries", "max_bytes", "total_timeout", "user_agent"],
    "web": ["base_url", "secret_env", "trusted_proxies", "previous_secret_env", "port", "subscribe_rate_limit"],
    "sender": ["kind", "rate_per_second", "retry_base_seconds", "batch_size", "host", "connections"],
    "feeds": ["dir", "max_items"],
}
TOML_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats().map(lambda f: repr(f).replace("e+", "e")),
    st.booleans().map(lambda b: str(b).lower()),
    TEXT.map(json.dumps),
    st.lists(TEXT.map(json.dumps), max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
    st.sampled_from(['"https://x.example"', '"http://x.example"', '"file"', '"smtp"', '"10 per minute"', "1e300"]),
)


@st.composite
def configs(draw: st.DrawFn) -> str:
    """A config whose tables hold known keys (and a misspelt one) with values of any type."""
    lines = []
    for table, keys in CONFIG_KEYS.items():
        chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=3))
        if table == "site":
            lines += ["[site]", 'title = "Sajten"', 'base_url = "https://sajten.example"'] if not chosen else ["[site]"]
        elif chosen:
            lines.append(f"[{table}]")
        lines += [f"{key} = {draw(TOML_VALUES)}" for key in chosen]
    lines += [
        "[[sources]]",
        'name = "a"',
        'kind = "feed"',
        'url = "https://sajten.example/f.xml"',
        'category = "article"',
    ]
    return "\n".join(lines) + "\n"


@SLOW_INPUT
@given(configs())
def test_any_config_loads_or_names_its_bad_key(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path)
    except ConfigError as err:
        assert "config.toml: " in str(err), str(err)


# ---------------------------------------------------------------- CSV import

CSV_CELLS = st.one_of(st.emails().map(str), TEXT, st.sampled_from(["sv", "en", "xx-YY-zz", "", "a@b", "Ünï@cödé.se"]))


@SLOW_INPUT
@given(
    st.lists(st.lists(CSV_CELLS, min_size=0, max_size=4), max_size=8),
    st.sampled_from(["email,name,language", "Email,Name", "name,email", "e-mail"]),
    st.binary(max_size=20),
)
def test_a_csv_file_gives_subscribers_or_numbered_problems(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], header: str, junk: bytes
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    path = tmp_path_factory.mktemp("csv") / "list.csv"
    path.write_bytes((header + "\n").encode() + buffer.getvalue().encode("utf-8") + junk)
    problems: list[str] = []
    try:
        found = list(read_csv(path, problems))
    except SubscriberError as err:
        assert "line 1" in str(err)
        return
    for subscriber in found:
        assert "@" in subscriber.email and subscriber.email == subscriber.email.strip()
        assert subscriber.name is None or not re.search(r"[\x00-\x1f\x7f]", subscriber.name)
    for problem in problems:
        assert re.search(r"line \d+: ", problem), problem


# ---------------------------------------------------------------- MIME builder

NAMES = st.text(max_size=300) | st.sampled_from(
    ['Zoë "Z" O\'Brien, Jr.', "=?utf-8?q?x?=", "a\x1b]8;;x\x07b", ".", ".Punkt", "..a" + "b" * 80 + ".c"]
)


@SLOW_INPUT
@given(NAMES, st.emails().map(str) | st.sampled_from(["åsa@exempel.se", "info@exämpel.se"]), st.text(max_size=200))
def test_every_message_is_well_formed_mail_with_the_recipient_in_it(name: str, email: str, subject: str) -> None:
    nonce = "n0nce"
    html = f'<p>{token(nonce, "greeting")} {token(nonce, "name")}</p><a href="{token(nonce, "unsubscribe_url")}">x</a>'
    text = f"{token(nonce, 'greeting')} {token(nonce, 'name')}\n{token(nonce, 'unsubscribe_url')}\n"
    rendered = Rendered(subject="Nyhetsbrev", preheader="", html=html, text=text, nonce=nonce, language="sv")
    try:
        cleaned = candidate(email, name)
    except SubscriberError:
        return
    try:
        template = MessageTemplate(
            rendered,
            sender="Sajten <brev@sajten.example>",
            date=datetime(2026, 11, 25, tzinfo=UTC),
            subject=subject,
            headers=[("List-Unsubscribe", "<https://sajten.example/unsubscribe/abc>")],
        )
    except RenderError:
        assert "\r" in subject or "\n" in subject
        return
    values = RecipientValues(
        greeting="Hej",
        name=cleaned.name or "",
        email=cleaned.email,
        view_url="https://sajten.example/archive/1",
        unsubscribe_url="https://sajten.example/unsubscribe/abc",
    )
    data = template.message(to=mailbox(cleaned.email, cleaned.name), message_id="m.1@sajten.example", values=values)
    assert all(len(line) <= 998 for line in data.split(b"\r\n")), "no line longer than SMTP allows"
    # What the SMTP sender relies on to send it without dot-stuffing (Message.transparent): a line that began
    # with "." would lose it at the relay, and one that is only "." would end the message there.
    assert not data.startswith(b".") and b"\r\n." not in data and data.endswith(b"\r\n")
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert message["To"].addresses[0].display_name == (cleaned.name or "")
    html_part = message.get_body(("html",))
    assert html_part is not None and "Hej" in html_part.get_content()


@given(st.text(max_size=120).filter(lambda n: "\r" not in n and "\n" not in n and "=?" not in n), st.emails().map(str))
def test_a_recipients_name_is_written_as_the_email_package_writes_it(name: str, email: str) -> None:
    """mailbox() writes non-ASCII names itself (the email package's Charset was a tenth of a big send): the
    bytes must stay formataddr's, so no client shows a name differently than before."""
    from email.utils import formataddr

    from pipeline.addresses import ascii_domain

    address = ascii_domain(email)
    assert mailbox(address, name) == formataddr((name, address), charset="utf-8")


# ---------------------------------------------------------------- the public web side

PATHS = st.sampled_from(
    [
        "/subscribe/nyhetsbrev",
        "/subscribe/none",
        "/confirm/",
        "/unsubscribe/",
        "/archive/",
        "/archive/nyhetsbrev/",
        "/feeds/",
        "/webhooks/postmark",
        "/webhooks/mailgun",
        "/healthz",
        "/static/site.css",
    ]
)
SUFFIXES = st.text(alphabet=string.ascii_letters + string.digits + "-._~%/?=&#+!$'()*,;:@[]", max_size=40)


@pytest.fixture(scope="module")
def public_site(tmp_path_factory: pytest.TempPathFactory):
    import shutil

    from pipeline.web import close_server, make_server
    from tests.conftest import EXAMPLE_SITE, ROOT
    from tests.smtp_sink import free_port

    folder = tmp_path_factory.mktemp("web")
    shutil.copytree(EXAMPLE_SITE, folder / "examples" / "site")
    port = free_port()
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    text = text.replace(
        "[web]\n", f'[web]\nbase_url = "http://127.0.0.1:{port}"\nsubscribe_rate_limit = "100000 per second"\n', 1
    )
    (folder / "config.toml").write_text(text, encoding="utf-8")
    server = make_server(load_settings(folder / "config.toml"), host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    session = requests.Session()
    yield f"http://127.0.0.1:{port}", session
    close_server(server, thread)


@SLOW_INPUT
@given(
    st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]),
    PATHS,
    SUFFIXES,
    st.dictionaries(st.sampled_from(["email", "name", "csrf_token", "List-Unsubscribe"]), TEXT, max_size=4),
    st.sampled_from(["application/x-www-form-urlencoded", "application/json", "multipart/form-data", "text/plain"]),
)
def test_no_request_gets_a_server_error(
    public_site, method: str, path: str, suffix: str, form: dict, kind: str
) -> None:
    url, session = public_site
    answer = session.request(method, url + path + suffix, data=form, headers={"Content-Type": kind}, timeout=10)
    assert answer.status_code < 500, (method, path + suffix, form, answer.status_code)
    if answer.status_code >= 400 and method != "HEAD" and "text/html" in answer.headers.get("Content-Type", ""):
        assert "<html" in answer.text.lower(), "an error is a page, not a bare status"

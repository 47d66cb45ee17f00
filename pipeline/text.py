"""Text that every stage handles: scraped HTML made safe, plain text cleaned and shortened.

Scraped HTML is untrusted: make it safe to store, republish and mail.

Two steps, in this order: every link and image URL is made absolute against the
page's canonical URL (so it still works in a feed reader or an inbox), then the
HTML is cleaned by nh3 (ammonia) against an allow-list: no script, style,
iframe, form or other active content, no event handlers, no ``style``
attributes, and only http, https, mailto and tel URLs.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin

import nh3

ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "cite",
    "code",
    "dd",
    "del",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "li",
    "mark",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "small",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "abbr": {"title"},
    "q": {"cite"},
    "blockquote": {"cite"},
}
#: Elements removed together with everything inside them.
DROP_WITH_CONTENT = {
    "script",
    "style",
    "iframe",
    "form",
    "noscript",
    "template",
    "object",
    "embed",
    "svg",
    "math",
    "canvas",
    "button",
    "select",
    "textarea",
    "nav",
    "aside",
    "footer",
}
URL_SCHEMES = {"http", "https", "mailto", "tel"}  # tel: as phones and mail clients open it
_URL_ATTRIBUTES = (("a", "href"), ("img", "src"), ("q", "cite"), ("blockquote", "cite"))


def html_fragment(html: str) -> Any:
    """*html* parsed by lxml.html as the children of a ``<div>``; markup lxml.html cannot place becomes text.

    lxml.html's fragment parser raises AssertionError ("too many bodies") for input such as
    ``<HTML></div>``, which hostile feeds and pages can hold (tests/test_properties.py found it).
    """
    import html as html_module

    import lxml.html

    try:
        return lxml.html.fragment_fromstring(html, create_parent="div")
    except AssertionError:
        return lxml.html.fragment_fromstring(html_module.escape(html), create_parent="div")


def absolutize_tree(root: Any, base_url: str) -> None:
    """Make every link and image URL under the lxml element *root* absolute against *base_url* (a lazy image's
    ``data-src`` standing in for a missing or placeholder ``src``)."""
    for tag, attribute in _URL_ATTRIBUTES:
        for element in root.iter(tag):
            value = element.get(attribute)
            if tag == "img":
                lazy = (element.get("data-src") or "").strip()
                if lazy and (not (value or "").strip() or urljoin(base_url, value.strip()) == base_url):
                    value = lazy  # lazy-loaded images
            if value is None or (value.startswith(("https://", "http://")) and value == value.strip()):
                continue  # already absolute (most are): urljoin would give it back as it is
            # A control character makes no URL (and lxml refuses it in an attribute).
            element.set(attribute, _CONTROL.sub("", urljoin(base_url, _CONTROL.sub("", value).strip())))


#: A link or image attribute whose value may not be an absolute http(s) URL, or a lazy image: only then does
#: absolutizing need a parse. feedparser has resolved most feed content already; a parse per entry was the
#: largest cost of a first collect of many feeds (bench.hosts, py-spy).
_MAY_BE_RELATIVE = re.compile(r"""\b(?:href|src|cite)\s*=\s*(?!["']?https?://)|data-src""", re.IGNORECASE)


def absolutize(html: str, base_url: str) -> str:
    """Make every link and image URL in *html* absolute against *base_url* (see :func:`absolutize_tree`)."""
    from lxml import etree

    if not html.strip() or not _MAY_BE_RELATIVE.search(html):
        return html
    try:
        root = html_fragment(html)
    except (etree.ParserError, ValueError):
        return html  # nothing lxml can read as markup: nh3 still decides what of it may stay
    absolutize_tree(root, base_url)
    inner = etree.tostring(root, encoding="unicode", method="html")
    return inner[len("<div>") : -len("</div>")]


_BLOCKS = ("<p", "<ul", "<ol", "<div", "<h2", "<h3", "<h4", "<blockquote", "<table", "<figure", "<pre")


def clean_html(html: str, base_url: str | None = None) -> str:
    """Absolutize (when *base_url* is given) and sanitize *html* for republishing.

    Plain text (a feed's bare description) becomes paragraphs, so every body is HTML.
    """
    if html.strip() and not any(tag in html.lower() for tag in _BLOCKS):
        paragraphs = [p.strip() for p in html.replace("\r\n", "\n").split("\n\n") if p.strip()]
        html = "".join(f"<p>{p}</p>" for p in paragraphs)
    if base_url:
        html = absolutize(html, base_url)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags=DROP_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
    ).strip()


#: C0 and C1 control characters: never part of a title or a name (a backspace in a feed's title went to Subject).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_text(text: str | None) -> str | None:
    """Collapse white space in a plain-text field, control characters counted as space; ``None`` for nothing left."""
    if text is None:
        return None
    value = " ".join(_CONTROL.sub(" ", text).split())
    return value or None


#: How long a summary may be: what feed readers and inbox previews show.
SUMMARY_LENGTH = 280


def shorten(text: str | None, limit: int = SUMMARY_LENGTH) -> str | None:
    """*text* cut at a word boundary to at most *limit* characters, with an ellipsis."""
    if not text or len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,.;:–-")
    return f"{cut}…"


#: How long a note's title may be: its first words, as a feed reader's list shows a title.
NOTE_TITLE_LENGTH = 80


def title_from_text(text: str | None) -> str | None:
    """A note's title: its first sentence when that is short, else its first words up to NOTE_TITLE_LENGTH."""
    text = clean_text(text)
    if not text:
        return None
    sentence = re.match(r"^(.{10,}?[.!?])(?:\s|$)", text)
    if sentence and len(sentence.group(1)) <= NOTE_TITLE_LENGTH:
        return sentence.group(1)
    return shorten(text, NOTE_TITLE_LENGTH)


_EMAIL = r"[^\s@<>()]+@[^\s@<>()]+\.[^\s@<>()]+"
_EMAIL_THEN_NAME = re.compile(rf"^{_EMAIL}\s*\((?P<name>[^()]+)\)$")
_NAME_THEN_EMAIL = re.compile(rf"^(?P<name>[^<>]+?)\s*<{_EMAIL}>$")
_ONLY_EMAIL = re.compile(rf"^(?:mailto:)?{_EMAIL}$", re.IGNORECASE)
#: What precedes a name in a byline ("Av Anna Ek", "by Anna Ek"): not part of the name.
BYLINE_PREFIX = re.compile(r"^(?:av|by|text|skriven av|written by)[:\s]+", re.IGNORECASE)
_HANDLE = re.compile(r"\s+@\w{1,30}\b")


def clean_author(text: str | None) -> str | None:
    """A byline's name as readers should see it: ``info@example.org (Anna Ek)`` and ``Anna Ek <a@b.se>`` are
    "Anna Ek", "by"/"av" and @handles go, and a bare address is no name at all (None)."""
    value = clean_text(text)
    if not value:
        return None
    for form in (_EMAIL_THEN_NAME, _NAME_THEN_EMAIL):
        found = form.match(value)
        if found:
            value = found.group("name").strip()
            break
    if _ONLY_EMAIL.match(value):
        return None
    value = _HANDLE.sub("", BYLINE_PREFIX.sub("", value)).strip(" ,·|-")
    return value or None

"""Reading one article page without per-site code.

The page is decoded once (a byte-order mark, else the HTTP ``charset``, else as UTF-8 when it is valid
UTF-8, else by its ``<meta>``) and parsed once, by lxml. Each field is then taken from the strongest
evidence the page offers, strongest first:

* title: ``[sources.select]``; JSON-LD ``headline``/``name``, OpenGraph, Twitter, Dublin Core, microformats
  (the first that the page's ``<title>`` contains, else the first there is); else the ``<h1>`` outside the
  page's header (when the <title> contains it or is too short to be a headline), else the <title> less the
  site's name. The site's own name is never the title;
* author: ``[sources.select]``, JSON-LD ``author``, ``<meta name=author>`` and its kin, ``itemprop=author`` /
  ``rel=author`` / microformats / byline classes, then the byline form of the seed page
  (``Ledare · Birgitta Öjmertz · Programdirektör · 2018-12-20``, looked for near the ``<h1>``); each candidate
  cleaned of "by", handles and what follows the name (a date, "2 min read"), and the first that is a name wins;
* dates: ``[sources.select]``, JSON-LD, ``article:published_time`` and its kin, ``<time>`` elements, the
  byline; a date before 1990 or more than a day ahead is a placeholder, not a publication date.

JSON-LD wrapped in ``<![CDATA[ … ]]>`` or an HTML comment is read as browsers read it, and HTML entities
left in metadata (``&#8217;``) are decoded in every text field.

The body is chosen between candidates, none of which deletes anything before looking (only what a reader
cannot see, ``hidden``, ``aria-hidden``, ``display:none``, ``visibility:hidden``, and the byline, which is
metadata, are taken out first):

* **trafilatura**'s extraction (its fast pass), which judges boilerplate in context (link density, text
  length, position, landmark elements, comments);
* **readability**'s (trafilatura's port: the element with the most paragraph text, with its siblings);
* the page's own **container** for the article (``itemprop=articleBody``, ``.entry-content`` …, the largest
  one with its sibling parts), with what is never part of an article removed from inside it only
  (share buttons, related posts, comments, forms), never the container itself.

The rule, in order:

1. Trafilatura's body is the default. Readability's replaces it when trafilatura found nothing or readability
   finds more than twice as much (the rule trafilatura's own full mode applies).
2. A container-based body (readability's, then the container) replaces it when it *extends* it: it holds at
   least 95 % of trafilatura's words, is longer (at most five times), and adds no more than a twentieth of
   its length after the last paragraph the two share in another element than that paragraph's (what
   follows an article is related posts and comments). That is the class of page where trafilatura drops text
   the article has: a repeated paragraph, a table, the paragraphs around a widget.
3. Otherwise, what trafilatura has outside readability's article is cut when the two agree on the article
   (95 % of readability's words in trafilatura's) and the rest is page furniture: nearly all link text (a
   menu, related articles), or a tenth of the body at most after the last shared paragraph (a footer line).
4. A body under 50 words gets trafilatura's full pass (its justext and baseline rescues) where the page has
   more text, and under 250 characters, where trafilatura dumps the page's whole text as one paragraph, a
   container-based body with the same words keeps the article's shape.
5. A short body made of the page's link texts is its menu: no article.

On mozilla/readability's 130 test pages this scores F1 0.97 where bare trafilatura scores 0.93, at about
1.3 times its CPU (``python -m bench.extract``).

The result is plain data (:class:`Extracted`); the body is sanitized here, so nothing downstream ever sees
the page's raw markup.
"""

from __future__ import annotations

import codecs
import html as html_module
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree
from lxml.cssselect import CSSSelector

from pipeline.config import SelectSettings
from pipeline.errors import SourceError
from pipeline.sources import attr
from pipeline.sources.dates import find_date, parse_date, plausible
from pipeline.text import (
    BYLINE_PREFIX,
    absolutize_tree,
    clean_author,
    clean_html,
    clean_text,
    html_fragment,
    shorten,
)

log = logging.getLogger(__name__)

ARTICLE_TYPES = {
    "article",
    "newsarticle",
    "blogposting",
    "opinionnewsarticle",
    "reportagenewsarticle",
    "analysisnewsarticle",
    "reviewnewsarticle",
    "backgroundnewsarticle",
    "scholarlyarticle",
    "techarticle",
    "report",
    "socialmediaposting",
    "liveblogposting",
    "posting",
}

#: The first field of a seed-style byline: what kind of text this is.
BYLINE_KINDS = {
    "ledare",
    "huvudledare",
    "krönika",
    "debatt",
    "kommentar",
    "analys",
    "recension",
    "nyhet",
    "artikel",
    "reportage",
    "intervju",
    "blogg",
    "insändare",
    "leader",
    "editorial",
    "opinion",
    "column",
    "comment",
    "analysis",
    "review",
    "news",
    "article",
    "feature",
    "blog",
    "interview",
}
_BYLINE_SPLIT = re.compile(r"\s+[·•|–—]\s+|\s*[·•]\s*")

#: The page's own container for the article text (class and itemprop tokens, not substrings).
CONTAINER_CLASSES = frozenset(
    "entry-content e-content post-content article-body article__body post-body story-body article-content".split()
)


#: Every container class names "content" or "body": one pass over the page finds the few elements to look at.
_CONTAINER_PREFILTER = etree.XPath(
    "//body//*[(@class and (contains(@class, 'content') or contains(@class, 'body'))) "
    "or contains(@itemprop, 'articleBody')]"
)


def _containers(tree: Any) -> list[Any]:
    found = []
    for element in _CONTAINER_PREFILTER(tree):
        if (
            CONTAINER_CLASSES.intersection((element.get("class") or "").split())
            or "articleBody" in (element.get("itemprop") or "").split()
        ):
            found.append(element)
    return found


#: Inside an article's container (never the container itself), what is not part of the article: one XPath pass.
_NOISE_TAGS = ("script", "style", "noscript", "nav", "aside", "footer", "form", "iframe", "button")
_NOISE_CLASSES = ("share", "social", "cookie", "consent", "comment", "related", "newsletter", "sharedaddy")
_NOISE_EXACT = ("post-navigation", "nav-links", "screen-reader-text")
CONTAINER_NOISE = etree.XPath(
    ".//*["
    + " or ".join(f"self::{tag}" for tag in _NOISE_TAGS)
    + " or @role='navigation' or @role='complementary' or @role='contentinfo'"
    + "".join(f" or contains(@class, '{name}')" for name in _NOISE_CLASSES)
    + " or contains(@id, 'cookie') or contains(@id, 'comment')"
    + "".join(f" or contains(concat(' ', normalize-space(@class), ' '), ' {name} ')" for name in _NOISE_EXACT)
    + "]"
)
#: What a reader cannot see: never body text, whatever the page's classes say.
_HIDDEN_CANDIDATES = etree.XPath(
    "//body//*[@hidden or @aria-hidden='true' or (@style and (contains(@style, 'none') or contains(@style, 'hidden')))]"
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_BYLINE_STRINGS = etree.XPath(
    ".//text()[contains(., '·') or contains(., '•') or contains(., ' | ') or contains(., ' – ') or contains(., ' — ')]"
)
_INLINE = {"span", "a", "strong", "em", "b", "i", "time", "small"}
PLACEHOLDER_IMAGE = re.compile(
    r"(spacer|pixel|blank|preload|loading|lazy|transparent|1x1|placeholder)[^/]*\.(gif|png|svg)$", re.I
)
#: Meta tags (name, property or itemprop, lower-cased) that carry these fields, strongest first.
META_AUTHOR = (
    "author",
    "article:author",
    "article_author",
    "dc.creator",
    "dcterms.creator",
    "byl",
    "sailthru.author",
    "parsely-author",
)
META_PUBLISHED = (
    "article:published_time",
    "og:published_time",
    "datepublished",
    "article_date_original",
    "article:published",
    "publish-date",
    "publishdate",
    "pubdate",
    "sailthru.date",
    "parsely-pub-date",
    "dc.date.issued",
    "dcterms.issued",
    "dc.date",
    "dcterms.created",
    "date",
)
META_MODIFIED = ("article:modified_time", "og:updated_time", "datemodified", "article_date_updated", "dcterms.modified")
#: Elements that name an article's author, strongest first (after JSON-LD and meta tags): itemprop and rel=author,
#: microformats, then the class names sites give a byline.
AUTHOR_ELEMENTS = tuple(
    CSSSelector(selector)
    for selector in (
        "[itemprop~=author] [itemprop~=name]",
        "a[rel~=author]",
        ".author.vcard .fn, .vcard .fn, .h-entry .p-author",
        "[itemprop~=author]",
        ".byline .author, .author-name, .byline__name, .author, .byauthor, [class*=byline] a[href*=author]",
        "[class*=byline], [class*=Byline]",
    )
)
PUBLISHED_ELEMENTS = tuple(
    CSSSelector(selector)
    for selector in (
        "time[itemprop~=datePublished]",
        "[itemprop~=datePublished]",
        "time.published, time.dt-published, time.entry-date",
        "article time[datetime]",
        "main time[datetime]",
        "time[pubdate]",
        "time[datetime]",
        ".published, .dt-published",
    )
)
MODIFIED_ELEMENTS = tuple(
    CSSSelector(selector)
    for selector in ("time[itemprop~=dateModified]", "[itemprop~=dateModified]", "time.updated", ".dt-updated")
)
TITLE_ELEMENTS = CSSSelector(".entry-title, .h-entry .p-name, [itemprop~=headline]")
ROLE_ELEMENTS = CSSSelector(".p-job-title, [itemprop~=jobTitle], .author-role, .author-title")

#: Deeper than any real page (the deepest of 130 saved news pages: 38 levels). libxml2 stops nesting at 256
#: levels, so a page that reaches this depth was deeper still.
MAX_DEPTH = 255
#: More elements than any real article page (the most of those 130: 9,888, Wikipedia).
MAX_ELEMENTS = 50_000
_COUNT = etree.XPath("count(//*)")
_TOO_DEEP = etree.XPath("boolean(/" + "/".join(["*"] * (MAX_DEPTH + 1)) + ")")

#: How much of trafilatura's text a container-based body must hold to replace it, how much longer it may be,
#: and how much it may add after the last paragraph the two share.
EXTENDS_SHARE = 0.95
EXTENDS_RATIO = 5
TRAILING_SHARE = 0.05
#: What trafilatura's body has after the article's last paragraph, outside readability's element, is cut when it
#: is at most this share of its words (a footer line, a related link); more is article readability missed.
TRAILING_CUT = 0.1
#: ...and cut whatever its size when this share of its words is link text (a menu, a list of related articles).
LINK_LISTS = 0.9
#: A body shorter than this made (LINK_LISTS) of the page's link texts is its menu, not an article.
MENU_WORDS = 200
#: A body shorter than this is read again by trafilatura in its full mode (its justext and baseline rescues):
#: one page in ten among the 130 saved pages, mostly short test pages, so the rescue costs little on average.
RESCUE_WORDS = 50


@dataclass(frozen=True)
class Byline:
    """A byline of the seed's form: ``Kind · Name · Role · Date``."""

    kind: str | None
    name: str | None
    role: str | None
    date: datetime | None
    element: Any  # the lxml element holding it


@dataclass(frozen=True)
class Extracted:
    """The fields read from one article page (body sanitized, URLs absolute)."""

    title: str | None
    author: str | None
    author_role: str | None
    published: datetime | None
    modified: datetime | None
    summary: str | None
    body_html: str
    image: str | None
    image_alt: str | None
    canonical_url: str
    language: str | None
    kind: str | None = None
    #: Which evidence gave the body: "select", "trafilatura", "readability", "container", "json-ld" or "".
    body_from: str = ""
    #: Words a reader sees on the whole page (for saying why a page gave no article text).
    page_words: int = 0

    @property
    def looks_like_article(self) -> bool:
        """Whether the page has the makings of an item (a title and some text)."""
        return bool(self.title and self.body_html)


# ---------------------------------------------------------------- decoding and parsing

_PARSER = lxml.html.HTMLParser(remove_comments=True, remove_pis=True, collect_ids=False, default_doctype=False)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*>")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""",
    re.IGNORECASE,
)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
#: The WHATWG encoding standard's aliases that matter: these labels mean windows-1252 on the web.
_WEB_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
}


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _WEB_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode(content: bytes | str, charset: str | None = None) -> str:
    """A page's text: by its byte-order mark, else the HTTP ``charset``, else as UTF-8 when it is valid
    UTF-8, else by its ``<meta>``, else as windows-1252.

    (The HTML standard's order, with one step added: a BOM is the strongest evidence of all, and a page whose
    ``<meta>`` disagrees with its Content-Type is read as the server said. Bytes that are valid UTF-8 are
    UTF-8, whatever a ``<meta>`` copied from an older template says: no other encoding of non-ASCII text
    is valid UTF-8 by accident.) Bytes that do not decode become U+FFFD.
    """
    if isinstance(content, str):
        return content
    for bom, name in _BOMS:
        if content.startswith(bom):
            return content.decode(name, errors="replace")
    declared = _codec(charset)
    if declared is None:
        try:
            return content.decode("utf-8")  # valid UTF-8 is UTF-8, whatever a copied <meta> says
        except UnicodeDecodeError:
            pass
        found = _META_CHARSET.search(content[:4096])
        declared = _codec(found.group(1).decode("ascii", "replace")) if found else None
        if declared in ("utf-16", "utf-16-le", "utf-16-be", "utf-32"):
            declared = "utf-8"  # a page that says so in ASCII is not UTF-16 (the HTML standard's rule)
    if declared is None:
        declared = "cp1252"
    return content.decode(declared, errors="replace")


def parse(text: str, page_url: str) -> lxml.html.HtmlElement:
    """The page's tree (comments and processing instructions dropped); SourceError for an empty page."""
    # C0 control characters are no text; lxml parses them but refuses them in any text it is given back.
    text = _CONTROL_CHARACTERS.sub("", _XML_DECLARATION.sub("", text, count=1))
    if not text.strip():
        raise SourceError("the page is empty", url=page_url)
    try:
        return lxml.html.document_fromstring(text, parser=_PARSER)
    except (etree.ParserError, ValueError) as err:
        raise SourceError(f"the page is not readable HTML ({err})", url=page_url) from err


def _check_shape(tree: Any, page_url: str) -> None:
    """SourceError for a page no real article has: nested MAX_DEPTH deep or with more than MAX_ELEMENTS."""
    if _TOO_DEEP(tree):
        raise SourceError("page too deeply nested (more than 256 levels of elements): not read", url=page_url)
    if _COUNT(tree) > MAX_ELEMENTS:
        raise SourceError(f"page has more than {MAX_ELEMENTS:,} elements: not read", url=page_url)


# ---------------------------------------------------------------- text helpers

_TEXT_PARSER = etree.HTMLParser(recover=True, no_network=True, remove_comments=True)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def page_text(value: str | None) -> str | None:
    """A metadata string as a reader should see it: entities left in it decoded, tags dropped, space collapsed."""
    if not value:
        return None
    if "&" in value and _ENTITY.search(value):
        value = html_module.unescape(value)  # "&#8217;" in a meta tag's content was escaped twice
    if "<" in value and ">" in value:
        try:
            # libxml2's HTML parser directly: lxml.html's fragment helpers assert on input such as
            # "<TITLE><HTML>" (found by tests/test_properties.py), and an AssertionError is no answer.
            root = etree.fromstring(value, _TEXT_PARSER)
            value = " ".join(root.itertext()) if root is not None else value
        except (etree.ParserError, etree.XMLSyntaxError, ValueError):
            pass
    return clean_text(value)


def drop(element: Any) -> None:
    """Remove *element* and what is inside it, keeping the text that follows it (lxml.html's drop_tree, for any
    lxml element)."""
    parent = element.getparent()
    if parent is None:
        return
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


#: Elements that start a new line: their text never runs on into the text around them.
BLOCK_LEVEL = frozenset(
    "address article aside blockquote br caption dd details div dl dt figcaption figure footer form h1 h2 h3 h4 h5 "
    "h6 header hr li main nav ol p pre section summary table tbody td tfoot th thead tr ul".split()
)


def element_text(element: Any) -> str:
    """The text of an element as a reader sees it: blocks apart, inline elements run on (``länk</a>.`` is
    ``länk.``), space collapsed."""
    parts: list[str] = []
    for event, node in etree.iterwalk(element, events=("start", "end")):
        tag = node.tag
        if not isinstance(tag, str):
            continue  # a comment or processing instruction
        if event == "start":
            if tag in BLOCK_LEVEL:
                parts.append(" ")
            if node.text and tag not in ("script", "style"):
                parts.append(node.text)
        else:
            if tag in BLOCK_LEVEL:
                parts.append(" ")
            if node.tail and node is not element:
                parts.append(node.tail)
    return " ".join("".join(parts).split())


def _attribute(element: Any, *names: str) -> str | None:
    for name in names:
        value = element.get(name)
        if value and value.strip():
            return value.strip()
    return None


# ---------------------------------------------------------------- JSON-LD

_JSON_WRAPPERS = re.compile(r"^\s*(?:<!--|//\s*<!\[CDATA\[|<!\[CDATA\[)|(?:-->|//\s*\]\]>|\]\]>)\s*$")


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("@type", [])
    kinds = kind if isinstance(kind, list) else [kind]
    return {str(k).rsplit("/", 1)[-1].lower() for k in kinds}


def _walk_jsonld(data: Any) -> Iterator[dict[str, Any]]:
    if isinstance(data, list):
        for entry in data:
            yield from _walk_jsonld(entry)
    elif isinstance(data, dict):
        yield data
        if "@graph" in data:
            yield from _walk_jsonld(data["@graph"])


def jsonld_nodes(tree: Any) -> list[dict[str, Any]]:
    """Every JSON-LD object on the page, ``@graph`` members flattened in.

    A script wrapped in ``<![CDATA[ … ]]>`` or ``<!-- … -->`` is read as browsers read it.
    """
    nodes: list[dict[str, Any]] = []
    for script in tree.iter("script"):
        if "ld+json" not in (script.get("type") or "").lower():
            continue
        text = _JSON_WRAPPERS.sub("", script.text or "")
        try:
            data = json.loads(text, strict=False)
        except (json.JSONDecodeError, TypeError, RecursionError):
            continue  # broken JSON-LD is common; other evidence still counts
        nodes.extend(_walk_jsonld(data))
    return nodes


def _article_node(nodes: list[dict[str, Any]]) -> dict[str, Any] | None:
    for node in nodes:
        if _types(node) & ARTICLE_TYPES:
            return node
    for node in nodes:  # a WebPage whose mainEntity is the article
        main = node.get("mainEntity")
        if isinstance(main, dict) and _types(main) & ARTICLE_TYPES:
            return main
    return None


def _resolve(value: Any, nodes: list[dict[str, Any]]) -> Any:
    """Follow an ``{"@id": ...}`` reference to the node it names."""
    if isinstance(value, dict) and set(value) == {"@id"}:
        for node in nodes:
            if node.get("@id") == value["@id"] and len(node) > 1:
                return node
    return value


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return page_text(value)
    if isinstance(value, list) and value:
        return _text(value[0])
    if isinstance(value, dict):
        return _text(value.get("name") or value.get("@value"))
    return None


def _people(value: Any, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    values = value if isinstance(value, list) else [value]
    people = []
    for entry in values:
        entry = _resolve(entry, nodes)
        if isinstance(entry, str):
            people.append({"name": entry})
        elif isinstance(entry, dict) and entry.get("name"):
            people.append(entry)
    return people


def _url_of(value: Any, nodes: list[dict[str, Any]]) -> str | None:
    value = _resolve(value, nodes)
    if isinstance(value, list) and value:
        return _url_of(value[0], nodes)
    if isinstance(value, dict):
        return _url_of(value.get("url") or value.get("contentUrl") or value.get("@id"), nodes)
    return value if isinstance(value, str) and value.strip() else None


# ---------------------------------------------------------------- meta tags


def meta_tags(tree: Any) -> dict[str, str]:
    """``property``/``name``/``itemprop`` of every meta tag (lower-cased) to its first content."""
    found: dict[str, str] = {}
    for meta in tree.iter("meta"):
        content = meta.get("content")
        if content is None:
            continue
        for attribute in ("property", "name", "itemprop"):
            for key in (meta.get(attribute) or "").split():  # RDFa allows several: property="dc:creator og:x"
                found.setdefault(key.lower(), content.strip())
    return found


# ---------------------------------------------------------------- bylines


def _byline_from_text(text: str, element: Any, tz: tzinfo) -> Byline | None:
    parts = [p.strip() for p in _BYLINE_SPLIT.split(text) if p.strip()]
    if len(parts) < 2 or len(text) > 240:
        return None
    date = parse_date(parts[-1], tz)
    if date is None:
        return None
    parts = parts[:-1]
    kind = None
    if parts and (parts[0].lower() in BYLINE_KINDS or len(parts) >= 3):
        kind, parts = parts[0], parts[1:]
    name = BYLINE_PREFIX.sub("", parts[0]).strip() if parts else None
    if name and (re.search(r"\d", name) or len(name.split()) > 6):
        return None
    role = " · ".join(parts[1:]) or None
    return Byline(kind, name or None, role, date, element)


def find_byline(tree: Any, tz: tzinfo) -> Byline | None:
    """The first ``Kind · Name · Role · Date`` line near the headline (within the first ``<h1>``'s grandparent, where
    the page has one: a byline stands by the headline), if any."""
    h1 = next(tree.iter("h1"), None)
    scope = h1.getparent() if h1 is not None else None
    scope = scope.getparent() if scope is not None and scope.getparent() is not None else scope
    for string in _BYLINE_STRINGS(scope if scope is not None else tree):
        element = string.getparent()
        if element is not None and string.is_tail:
            element = element.getparent()
        while element is not None and element.tag in _INLINE:
            element = element.getparent()
        if element is None or element.tag in ("script", "style", "title", "body"):
            continue
        byline = _byline_from_text(element_text(element), element, tz)
        if byline:
            return byline
    return None


# ---------------------------------------------------------------- fields


def _element_date(element: Any, tz: tzinfo) -> datetime | None:
    if element is None:
        return None
    for attribute in ("datetime", "content", "title"):
        value = element.get(attribute)
        if value:
            found = plausible(parse_date(value, tz))
            if found:
                return found
    text = element_text(element)
    return plausible(find_date(text, tz)) if len(text) < 200 else None


def _dates_from(tree: Any, selectors: tuple[CSSSelector, ...], tz: tzinfo) -> datetime | None:
    for selector in selectors:
        for element in selector(tree)[:3]:
            found = _element_date(element, tz)
            if found:
                return found
    return None


def _split_title(title: str | None) -> str | None:
    """``"Rubrik | Sajten"`` -> ``"Rubrik"`` for the <title> element."""
    if not title:
        return None
    return clean_text(re.split(r"\s+[|–—-]\s+", title)[0])


def _site_names(meta: dict[str, str], nodes: list[dict[str, Any]]) -> set[str]:
    """What the page calls the site or its publisher (never an article's title)."""
    names = {meta.get("og:site_name"), meta.get("application-name"), meta.get("twitter:site")}
    for node in nodes:
        if _types(node) & {"website", "organization", "newsmediaorganization", "corporation"}:
            names.add(_text(node.get("name")))
        publisher = _resolve(node.get("publisher"), nodes)
        if isinstance(publisher, dict):
            names.add(_text(publisher.get("name")))
    return {" ".join(name.lower().split()) for name in names if name}


def _in_page_chrome(element: Any) -> bool:
    """Inside the page's header, navigation or a home link (a logo), not an article's own header."""
    for parent in element.iterancestors():
        if parent.tag in ("nav",) or parent.get("role") in ("navigation", "banner"):
            return True
        if parent.tag == "header" and next(parent.iterancestors("article", "main"), None) is None:
            return True
        if parent.tag == "a" and (parent.get("href") or "").strip() in ("/", "./", "index.html"):
            return True
    return False


def _title(document_title: str | None, candidates: tuple[Any, ...], h1: str | None, site_names: set[str]) -> str | None:
    """The page's headline.

    Metadata first (JSON-LD, OpenGraph, Twitter, Dublin Core, microformats): the first candidate the page's
    ``<title>`` contains (the <title> is the headline plus the site's name, where a JSON-LD headline may be a
    description), else the first there is. Without metadata, the first ``<h1>`` outside the page's header and
    navigation (a logo is an <h1> on many sites) when the <title> contains it or is too short to be a headline;
    else the <title> less the site's name (an <h1> the <title> does not contain is as often a section's name or a
    photo caption). The site's own name is never the title."""
    whole = " ".join((document_title or "").lower().split())

    def agrees(value: str) -> bool:
        return bool(whole) and " ".join(value.lower().split()) in whole

    seen = []
    for make in candidates:
        value = make()
        if not value or " ".join(value.lower().split()) in site_names:
            continue
        if agrees(value):
            return value
        seen.append(value)
    if seen:
        return seen[0]
    if h1 and " ".join(h1.lower().split()) in site_names:
        h1 = None
    split = _split_title(document_title)
    if h1 and (agrees(h1) or not split or len(split.split()) < 4):
        return h1  # the <title> agrees, or is too short to be a headline ("Kommunen", "Nyheter")
    return split or h1


def _http(url: str | None, base: str) -> str | None:
    if not url:
        return None
    absolute = urljoin(base, url.strip())
    return absolute if urlsplit(absolute).scheme in ("http", "https") else None


_MONTH_WORDS = (
    "jan|feb|mar|apr|may|maj|jun|jul|aug|sep|oct|okt|nov|dec|januari|februari|mars|april|juni|juli|augusti|september"
    "|oktober|november|december|january|february|march|june|july|august|october"
)
#: Where a byline's name ends: a date (a digit, or a month name before a number), "5 min read", a separator.
_AFTER_NAME = re.compile(
    rf"\s*(?:\d|\b(?:{_MONTH_WORDS})\.?\s+\d|[·•|\n–—]|\s-\s|\bupdated\b|\buppdaterad\b|\bpublished\b|"
    rf"\bpublicerad\b).*$",
    re.IGNORECASE | re.DOTALL,
)


def _author_name(text: str | None) -> str | None:
    """A candidate author text as a name, or None when it is not one: "by", handles, and what follows the name
    (a date, "2 min read", a role after a separator) go; a URL, a bare address or a whole paragraph is no name."""
    if not text:
        return None
    text = text.strip()
    if re.match(r"^https?://", text):
        return None
    name = clean_author(_AFTER_NAME.sub("", clean_author(text) or ""))
    if not name or not re.search(r"[^\W\d_]", name):
        return None
    if len(name) > 80 or len(name.split()) > 6:
        return None
    return name


def _element_author(tree: Any) -> str | None:
    for selector in AUTHOR_ELEMENTS:
        for element in selector(tree)[:5]:
            name = _author_name(_attribute(element, "content") or element_text(element))
            if name:
                return name
    return None


def _selected(select: SelectSettings, html: str) -> dict[str, Any]:
    """What the communicator's ``[sources.select]`` selectors find (CSS as soupsieve reads it, as the config checks)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "lxml")
    found: dict[str, Any] = {}
    for name in ("title", "author", "date"):
        selector = getattr(select, name)
        element = soup.select_one(selector) if selector else None
        if element is not None:
            found[name] = clean_text(attr(element, "content") or attr(element, "datetime") or element.get_text(" "))
    if select.body:
        matches = soup.select(select.body)
        ids = {id(element) for element in matches}
        outer = [element for element in matches if not any(id(parent) in ids for parent in element.parents)]
        found["body"] = "\n".join("".join(str(child) for child in element.contents) for element in outer)
    if select.image:
        element = soup.select_one(select.image)
        if element is not None:
            found["image"] = attr(element, "src") or attr(element, "data-src") or attr(element, "content")
            found["image_alt"] = clean_text(attr(element, "alt"))
    return found


# ---------------------------------------------------------------- body


def _inner_html(element: Any) -> str:
    parts = [html_module.escape(element.text)] if element.text else []
    parts.extend(etree.tostring(child, encoding="unicode", method="html", with_tail=True) for child in element)
    return "".join(parts)


def _fragment(html: str) -> Any:
    return html_fragment(html)


_BLOCKS = ("p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "td", "th", "dt", "dd", "figcaption")


@dataclass
class Candidate:
    """One evidence source's body: its element (a ``div`` holding the body) and its words."""

    name: str
    root: Any

    def __post_init__(self) -> None:
        self.words = element_text(self.root).split() if self.root is not None else []

    def outer_blocks(self) -> list[tuple[Any, str]]:
        """The body's outermost blocks (paragraphs, items, headings, cells) with their texts, in order."""
        found = []
        for element in self.root.iter(*_BLOCKS):
            if any(parent.tag in _BLOCKS for parent in element.iterancestors()):
                continue
            text = element_text(element)
            if text:
                found.append((element, text))
        return found

    def blocks(self) -> list[str]:
        """The texts of the body's outermost blocks, in order."""
        return [text for _, text in self.outer_blocks()]


def extends(base: Candidate, other: Candidate) -> bool:
    """Whether *other* is *base* with text it dropped put back (see the module's docstring)."""
    if not base.words or not len(base.words) < len(other.words) <= EXTENDS_RATIO * len(base.words):
        return False
    shared = sum((Counter(base.words) & Counter(other.words)).values())
    if shared < EXTENDS_SHARE * len(base.words):
        return False
    joined = " ".join(base.words)
    blocks = other.outer_blocks()
    shown = [n for n, (_, text) in enumerate(blocks) if text in joined]
    if shown:
        last = blocks[shown[-1]][0]
        # After the last shared paragraph: its siblings continue the article; anything in another element (a
        # related-posts box, a comment section, a sign-up form) is what follows an article.
        after = sum(
            len(text.split())
            for element, text in blocks[shown[-1] + 1 :]
            if element.getparent() is not last.getparent()
        )
        if after > TRAILING_SHARE * len(other.words):
            return False
    return True


def within(inner: Candidate, outer: Candidate) -> bool:
    """Whether nearly all of *inner*'s words are in *outer* (the same text, less of the page around it)."""
    shared = sum((Counter(inner.words) & Counter(outer.words)).values())
    return bool(inner.words) and shared >= EXTENDS_SHARE * len(inner.words)


def _linked_words(element: Any) -> int:
    return sum(len(element_text(anchor).split()) for anchor in element.iter("a"))


def _cut_furniture(body: Candidate, article: Candidate) -> None:
    """Cut from trafilatura's *body* what lies outside readability's *article*, when the two agree on the article
    (nearly all of its words are in the body) and the rest is page furniture: blocks that are nearly all link
    text (menus, lists of related articles), or a little text after the article's last paragraph (a footer
    line), at most TRAILING_CUT of the body's words."""
    if not body.words or not within(article, body):
        return
    joined = " ".join(article.words)
    blocks = body.outer_blocks()
    shown = [n for n, (_, text) in enumerate(blocks) if text in joined]
    if not shown:
        return
    extra = [(element, text) for element, text in blocks if text not in joined]
    extra_words = sum(len(text.split()) for _, text in extra)
    if extra_words and sum(_linked_words(element) for element, _ in extra) >= LINK_LISTS * extra_words:
        cut = extra
    else:
        cut = blocks[shown[-1] + 1 :]
        if sum(len(text.split()) for _, text in cut) > TRAILING_CUT * len(body.words):
            return
    for element, _ in cut:
        drop(element)
    body.words = element_text(body.root).split()


def _trafilatura(tree: Any, base: str, *, fast: bool) -> Candidate:
    import trafilatura
    from trafilatura.htmlprocessing import convert_to_html

    document = trafilatura.bare_extraction(
        tree,  # a tree: trafilatura copies it, and the page is parsed once
        url=base,
        fast=fast,
        output_format="html",
        include_links=True,
        include_images=True,
        include_formatting=True,
        include_tables=True,
        include_comments=False,
    )
    name = "trafilatura" if fast else "trafilatura (full)"
    if document is None or isinstance(document, dict) or document.body is None:  # (a dict only when asked for)
        return Candidate(name, None)
    body = convert_to_html(document.body).find("body")  # the conversion extract() makes, without its re-parse
    if body is not None:
        body.tag = "div"
    return Candidate(name, body)


def _readability(tree: Any) -> Candidate:
    from trafilatura.readability_lxml import Document

    try:
        summary = Document(tree, min_text_length=25).summary()  # takes the tree apart
    except Exception:  # noqa: BLE001 - a second opinion that fails is no opinion, not a failed page
        log.debug("readability could not read the page", exc_info=True)
        return Candidate("readability", None)
    body = lxml.html.document_fromstring(summary).find("body") if summary.strip() else None
    if body is not None:
        body.tag = "div"
    return Candidate("readability", body)


def _container(tree: Any) -> Candidate:
    """The page's own article container (the largest, with its sibling parts), noise inside it removed."""
    found = _containers(tree)
    ids = {id(element) for element in found}
    outer = [element for element in found if not any(id(parent) in ids for parent in element.iterancestors())]
    if not outer:
        return Candidate("container", None)
    largest = max(outer, key=lambda element: len(element_text(element)))
    root = lxml.html.Element("div")
    for part in outer:
        if part is largest or part.getparent() is largest.getparent():
            part = deepcopy(part)
            part.tail = None
            for noise in CONTAINER_NOISE(part):
                drop(noise)
            root.append(part)
    return Candidate("container", root)


def choose_body(tree: Any, text: str, page_url: str, base: str) -> Candidate:
    """The body the evidence agrees on (see the module's docstring). Readability's pass takes the tree apart
    (its way of working): what needs the page whole runs before it, or on the page parsed again."""
    body = _trafilatura(tree, base, fast=True)
    short = len(body.words) < RESCUE_WORDS  # trafilatura's fast pass found little: its full pass may find more
    container = _container(tree)
    # Under 250 characters of text, trafilatura falls back to the page's whole text, a menu included.
    links = Counter(" ".join(_LINK_TEXT(tree)).split()) if len(body.words) < MENU_WORDS else None
    second = _readability(tree)
    if second.words and (not body.words or len(second.words) > 2 * len(body.words)):
        body = second  # trafilatura's own rule in its full mode: readability's when it finds twice as much
    else:
        for candidate in (second, container):
            if candidate.root is not None and extends(body, candidate):
                body = candidate
                break
        else:
            _cut_furniture(body, second)
    if short and len(body.words) < RESCUE_WORDS:
        whole = parse(text, page_url)
        _remove_hidden(whole)
        # The full pass only where the page has more text to find (it costs as much as all the rest).
        if _visible_words(whole) >= 2 * len(body.words) + RESCUE_WORDS:
            full = _trafilatura(whole, base, fast=False)  # its justext and baseline rescues, for the short page
            if len(full.words) > 2 * len(body.words):
                return full
        # Under 250 characters trafilatura gives the page's whole text as one paragraph (title, byline and buttons
        # included, links and images lost): a container-based body with the same words keeps the article's shape.
        same = [c for c in (second, container) if within(c, body) and 2 * len(c.words) >= len(body.words)]
        if same:
            body = max(same, key=lambda candidate: len(candidate.words))
    if links is not None and body.words and len(body.words) < MENU_WORDS:
        in_links = sum((Counter(body.words) & links).values())
        if in_links >= LINK_LISTS * len(body.words):
            return Candidate(body.name, None)  # the page's links and nothing else: a menu, not an article
    return body


def _drop_leading_heading(root: Any, title: str | None) -> None:
    """Drop a repeat of the title (a heading or a paragraph) from the start of a body."""
    if not title:
        return
    first = next((e for e in root.iter("h1", "h2", "h3", "h4", "p") if element_text(e)), None)
    if first is None or clean_text(element_text(first)) != clean_text(title):
        return
    if element_text(root).startswith(element_text(first)):  # nothing comes before it
        drop(first)


def _summary_from(body_html: str) -> str | None:
    if not body_html.strip():
        return None
    root = _fragment(body_html)
    for paragraph in root.iter("p"):
        text = clean_text(element_text(paragraph))
        if text and len(text) > 40:
            return shorten(text)
    return shorten(clean_text(element_text(root)))


#: The text of links that lead somewhere (not "#", not "javascript:"): what a menu is made of.
_LINK_TEXT = etree.XPath(
    "//body//a[@href and not(starts-with(normalize-space(@href), '#')) "
    "and not(starts-with(normalize-space(@href), 'javascript:'))]//text()"
)
_VISIBLE_TEXT = etree.XPath("//body//text()[not(ancestor::script or ancestor::style or ancestor::noscript)]")


def _visible_words(tree: Any) -> int:
    return len(" ".join(_VISIBLE_TEXT(tree)).split())


def _remove_hidden(tree: Any) -> None:
    """Take out what a reader cannot see: ``hidden``, ``aria-hidden="true"``, ``display:none``, ``visibility:hidden``."""
    for element in _HIDDEN_CANDIDATES(tree):
        if element.get("hidden") is not None or element.get("aria-hidden") == "true":
            drop(element)
        elif _HIDDEN_STYLE.search(element.get("style") or ""):
            drop(element)


# ---------------------------------------------------------------- main


class _Lazy:
    """The first truthy value of a sequence of thunks, each evaluated only when the ones before gave nothing."""

    @staticmethod
    def first(*thunks: Any) -> Any:
        for thunk in thunks:
            value = thunk() if callable(thunk) else thunk
            if value:
                return value
        return None


def extract_page(
    content: str | bytes,
    page_url: str,
    *,
    tz: tzinfo,
    select: SelectSettings | None = None,
    charset: str | None = None,
) -> Extracted:
    """Read title, author, role, dates, summary, body, image and canonical URL from a page.

    *charset* is the one the server declared in Content-Type, if any.
    """
    first = _Lazy.first
    text = decode(content, charset)
    tree = parse(text, page_url)
    _check_shape(tree, page_url)
    select = select or SelectSettings()
    chosen = _selected(select, text) if any(select.model_dump().values()) else {}
    nodes = jsonld_nodes(tree)
    article = _article_node(nodes) or {}
    meta = meta_tags(tree)

    canonical_href = ""
    for link in tree.iter("link"):
        if "canonical" in (link.get("rel") or "").lower().split():
            canonical_href = (link.get("href") or "").strip()
            break
    if not re.match(r"^(https?:)?/", canonical_href):
        canonical_href = ""  # a bare token ("8003098") is a CMS bug, not a URL to trust
    canonical = first(
        _http(canonical_href, page_url),
        lambda: _http(meta.get("og:url"), page_url),
        lambda: _http(_url_of(article.get("url") or article.get("mainEntityOfPage"), nodes), page_url),
    )
    base = canonical or page_url
    _remove_hidden(tree)
    byline = find_byline(tree, tz)

    # --- title: the strongest evidence that agrees with the page's <title>, else the strongest there is
    title_tag = next((page_text(e.text_content()) for e in tree.iter("title")), None)
    title = chosen.get("title") or _title(
        title_tag,
        (
            lambda: _text(article.get("headline")),
            lambda: _text(article.get("name")),
            lambda: page_text(meta.get("og:title")),
            lambda: page_text(meta.get("twitter:title")),
            lambda: page_text(meta.get("dc.title")),
            lambda: next((page_text(element_text(e)) for e in TITLE_ELEMENTS(tree)), None),
        ),
        next((page_text(element_text(e)) for e in tree.iter("h1") if not _in_page_chrome(e)), None),
        _site_names(meta, nodes),
    )

    # --- author and role: the first candidate, strongest evidence first, that is a name
    people = _people(article.get("author"), nodes)
    author = first(
        lambda: clean_author(chosen.get("author")),
        lambda: ", ".join(dict.fromkeys(n for n in (_author_name(_text(p.get("name"))) for p in people) if n)),
        *(lambda key=key: _author_name(page_text(meta.get(key))) for key in META_AUTHOR),
        lambda: _element_author(tree),
        lambda: byline.name if byline else None,
    )
    role = author and first(  # a role belongs to a name
        lambda: _text(people[0].get("jobTitle")) if people else None,
        lambda: next((clean_text(element_text(e)) for e in ROLE_ELEMENTS(tree)), None),
        lambda: byline.role if byline else None,
    )

    # --- dates: a placeholder (0001-01-01) or a date in the future falls through to the next candidate
    published = first(
        lambda: plausible(parse_date(chosen.get("date"), tz)),
        lambda: plausible(parse_date(_text(article.get("datePublished")), tz)),
        *(lambda key=key: plausible(parse_date(meta.get(key), tz)) for key in META_PUBLISHED),
        lambda: _dates_from(tree, PUBLISHED_ELEMENTS, tz),
        lambda: plausible(byline.date) if byline else None,
    )
    modified = first(
        lambda: plausible(parse_date(_text(article.get("dateModified")), tz)),
        *(lambda key=key: plausible(parse_date(meta.get(key), tz)) for key in META_MODIFIED),
        lambda: _dates_from(tree, MODIFIED_ELEMENTS, tz),
    )

    # --- body
    if byline is not None:
        drop(byline.element)  # a byline is metadata, not body text
    body_html, body_from = "", ""
    selected = _fragment(chosen["body"]) if chosen.get("body") else None
    if selected is not None:
        for noise in CONTAINER_NOISE(selected):  # share buttons, comments and the like inside the chosen element
            drop(noise)
    if selected is not None and clean_text(selected.text_content()):
        body_html, body_from = _inner_html(selected), "select"
    else:
        body = choose_body(tree, text, page_url, base)
        if body.words:
            _drop_leading_heading(body.root, title)
            absolutize_tree(body.root, base)
            body_html, body_from = _inner_html(body.root), body.name
    if not body_html.strip() and isinstance(article.get("articleBody"), str):
        paragraphs = str(article["articleBody"]).split("\n")
        body_html = "".join(f"<p>{html_module.escape(p.strip())}</p>" for p in paragraphs if p.strip())
        body_from = "json-ld"
    if body_from in ("select", "json-ld"):
        body_html = clean_html(body_html, base)
    body_html = clean_html(body_html) if body_html.strip() else ""

    # --- summary and image
    summary = first(
        lambda: _text(article.get("description")),
        lambda: page_text(meta.get("og:description")),
        lambda: page_text(meta.get("description")),
        lambda: page_text(meta.get("twitter:description")),
        lambda: _summary_from(body_html),
    )
    first_image = next(_fragment(body_html).iter("img"), None) if body_html else None
    jsonld_image = _resolve(article.get("image"), nodes)
    image = first(
        lambda: _http(chosen.get("image"), base),
        lambda: _http(_url_of(article.get("image"), nodes), base),
        lambda: _http(meta.get("og:image") or meta.get("og:image:url") or meta.get("og:image:secure_url"), base),
        lambda: _http(meta.get("twitter:image"), base),
        lambda: first_image.get("src") if first_image is not None else None,
    )
    if image and PLACEHOLDER_IMAGE.search(image.split("?")[0]):
        image = None  # a lazy-loading or tracking placeholder, not the article's picture
    image_alt = first(
        chosen.get("image_alt"),
        lambda: _text(jsonld_image.get("caption")) if isinstance(jsonld_image, dict) else None,
        lambda: page_text(meta.get("og:image:alt") or meta.get("twitter:image:alt")),
        lambda: (
            clean_text(first_image.get("alt")) if first_image is not None and first_image.get("src") == image else None
        ),
    )

    locale = meta.get("og:locale")
    language = first(
        clean_text(tree.get("lang")),
        lambda: _text(article.get("inLanguage")),
        lambda: locale.split("_")[0] if locale else None,
    )

    return Extracted(
        title=title,
        author=author,
        author_role=role,
        published=published,
        modified=modified,
        summary=summary,
        body_html=body_html,
        image=image,
        image_alt=image_alt,
        canonical_url=base,
        language=language,
        kind=byline.kind if byline else _text(article.get("articleSection")),
        body_from=body_from,
        page_words=0 if body_html else _visible_words(parse(text, page_url)),
    )

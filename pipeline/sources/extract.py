"""Reading one article page without per-site code.

Each field is taken from the strongest evidence the page offers, in this order:

1. ``[sources.select]`` CSS selectors, when the communicator configured them;
2. JSON-LD (``Article``, ``NewsArticle``, ``BlogPosting`` …, also inside ``@graph``);
3. OpenGraph, ``article:*`` and ``name=author`` meta tags;
4. ``<time datetime>`` elements;
5. microformats (``.entry-title``, ``.author.vcard``, ``.entry-content``, h-entry);
6. the byline form of the seed page: ``Ledare · Birgitta Öjmertz · Programdirektör · 2018-12-20``;
7. readability-style main-text extraction (trafilatura), which leaves out
   navigation, sidebars, comments, cookie banners, share buttons and footers.

The result is plain data (:class:`Extracted`); the body is sanitized here, so
nothing downstream ever sees the page's raw markup.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import urljoin, urlsplit

import trafilatura
from bs4 import BeautifulSoup, Tag

from pipeline.config import SelectSettings
from pipeline.errors import SourceError
from pipeline.sources.dates import find_date, parse_date, plausible
from pipeline.text import BYLINE_PREFIX, clean_author, clean_html, clean_text, shorten

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

#: Inside a body found by selector or microformat, these are never part of the text.
NOISE_SELECTORS = (
    "script, style, noscript, nav, aside, footer, form, iframe, button, "
    "[role=navigation], [role=complementary], [aria-hidden=true], "
    "[class*=share], [class*=social], [class*=cookie], [id*=cookie], [class*=consent], "
    "[class*=comment], [id*=comment], [class*=related], [class*=newsletter-signup], "
    ".sharedaddy, .jp-relatedposts, .post-navigation, .nav-links, .screen-reader-text"
)
#: Before readability-style extraction, page chrome by its usual class names
#: (English and Swedish: sidfot = footer, meny = menu, puff = promo box).
CHROME_SELECTORS = (
    "header.site-header, [class*=footer], [id*=footer], [class*=sidfot], [class*=menu], [class*=meny], "
    "[class*=breadcrumb], [class*=brodsmula], [class*=sidebar], [class*=widget], [class*=puff], [class*=skip-link]"
)
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


@dataclass(frozen=True)
class Byline:
    """A byline of the seed's form: ``Kind · Name · Role · Date``."""

    kind: str | None
    name: str | None
    role: str | None
    date: datetime | None
    element: Tag


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

    @property
    def looks_like_article(self) -> bool:
        """Whether the page has the makings of an item (a title and some text)."""
        return bool(self.title and self.body_html)


# ---------------------------------------------------------------- JSON-LD


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


def jsonld_nodes(soup: BeautifulSoup) -> list[dict[str, Any]]:
    """Every JSON-LD object on the page, ``@graph`` members flattened in."""
    nodes: list[dict[str, Any]] = []
    for script in soup.find_all("script", attrs={"type": re.compile(r"ld\+json", re.I)}):
        text = script.string or script.get_text()
        try:
            data = json.loads(text, strict=False)
        except (json.JSONDecodeError, TypeError):
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
        return clean_text(BeautifulSoup(value, "html.parser").get_text(" ")) if "<" in value else clean_text(value)
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


def meta_tags(soup: BeautifulSoup) -> dict[str, str]:
    """``property``/``name``/``itemprop`` of every meta tag (lower-cased) to its first content."""
    found: dict[str, str] = {}
    for meta in soup.find_all("meta"):
        content = meta.get("content")
        if content is None:
            continue
        for attribute in ("property", "name", "itemprop"):
            key = meta.get(attribute)
            if key:
                found.setdefault(str(key).strip().lower(), str(content).strip())
    return found


# ---------------------------------------------------------------- bylines


def _byline_from_text(text: str, element: Tag, tz: tzinfo) -> Byline | None:
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


def find_byline(soup: BeautifulSoup | Tag, tz: tzinfo) -> Byline | None:
    """The first ``Kind · Name · Role · Date`` line on the page, if any."""
    for string in soup.find_all(string=re.compile(r"[·•]|\s[|–—]\s")):
        element = string.parent
        while element is not None and element.name in ("span", "a", "strong", "em", "b", "i", "time"):
            element = element.parent
        if element is None or element.name in ("script", "style", "title"):
            continue
        byline = _byline_from_text(element.get_text(" ", strip=True), element, tz)
        if byline:
            return byline
    return None


# ---------------------------------------------------------------- helpers


def _first(*values: Any) -> Any:
    for value in values:
        if value:
            return value
    return None


def _select_text(soup: BeautifulSoup, selector: str | None) -> str | None:
    if not selector:
        return None
    element = soup.select_one(selector)
    if element is None:
        return None
    return clean_text(attr(element, "content") or element.get_text(" ", strip=True))


def _element_date(element: Tag | None, tz: tzinfo) -> datetime | None:
    if element is None:
        return None
    for attribute in ("datetime", "content", "title"):
        value = element.get(attribute)
        if isinstance(value, str):
            found = parse_date(value, tz)
            if found:
                return found
    return find_date(element.get_text(" ", strip=True), tz)


def _time_published(soup: BeautifulSoup, tz: tzinfo) -> datetime | None:
    for selector in (
        "time[itemprop=datePublished]",
        "[itemprop=datePublished]",
        "time.published",
        "time.dt-published",
        "time.entry-date",
        "article time[datetime]",
        "main time[datetime]",
        "time[pubdate]",
        "time[datetime]",
    ):
        found = _element_date(soup.select_one(selector), tz)
        if found:
            return found
    return None


def _time_modified(soup: BeautifulSoup, tz: tzinfo) -> datetime | None:
    for selector in ("time[itemprop=dateModified]", "[itemprop=dateModified]", "time.updated", ".dt-updated"):
        found = _element_date(soup.select_one(selector), tz)
        if found:
            return found
    return None


def _microformat_text(soup: BeautifulSoup, selectors: str) -> str | None:
    element = soup.select_one(selectors)
    return clean_text(element.get_text(" ", strip=True)) if element else None


def _split_title(title: str | None) -> str | None:
    """``"Rubrik | Sajten"`` -> ``"Rubrik"`` for the <title> element."""
    if not title:
        return None
    return clean_text(re.split(r"\s+[|–—-]\s+", title)[0])


def _remove_noise(element: Tag) -> Tag:
    element = copy.copy(element)
    for noise in element.select(NOISE_SELECTORS):
        if noise is not element:
            noise.decompose()
    return element


def _drop_leading_heading(html: str, title: str | None) -> str:
    """Drop a repeat of the title (a heading or a paragraph) from the start of a body."""
    soup = BeautifulSoup(html, "html.parser")
    first = soup.find(["h1", "h2", "h3", "p", "div"])
    if first is not None and title and clean_text(first.get_text(" ")) == clean_text(title):
        if first.find_previous(string=lambda s: s.strip()) is None:
            first.decompose()
    return str(soup)


def _all_of(soup: BeautifulSoup, selector: str) -> list[Tag]:
    """Every element matching *selector* that is not inside another match (a body split in parts)."""
    found = soup.select(selector)
    # By identity: `in` compares Tags by content, recursively (quadratic, and a RecursionError when nested).
    matched = {id(element) for element in found}
    return [element for element in found if not any(id(parent) in matched for parent in element.parents)]


#: Deeper than any real page (the deepest of 130 saved news pages: 38 levels; libxml2 stops XML at 256).
MAX_DEPTH = 256
#: More elements than any real article page (the most of those 130: 9,888, Wikipedia).
MAX_ELEMENTS = 50_000


def _check_shape(soup: BeautifulSoup, page_url: str) -> None:
    """SourceError for a page no real article has: nested deeper than MAX_DEPTH or with more than MAX_ELEMENTS.

    Every selector costs time per element and per level above it; with both
    bounded, reading a hostile page is bounded too (about 10 s at the limits,
    where a 440 KB page nested 20,000 deep took 61 s, or crashed the source).
    """
    stack: list[tuple[Tag, int]] = [(soup, 0)]
    count = 0
    while stack:
        element, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise SourceError(
                f"page too deeply nested (more than {MAX_DEPTH} levels of elements): not read", url=page_url
            )
        if count > MAX_ELEMENTS:
            raise SourceError(f"page has more than {MAX_ELEMENTS:,} elements: not read", url=page_url)
        stack.extend((child, depth + 1) for child in element.contents if isinstance(child, Tag))


def _inner_html(element: Tag) -> str:
    return "".join(str(child) for child in element.contents)


def _summary_from(body_html: str) -> str | None:
    soup = BeautifulSoup(body_html, "html.parser")
    for paragraph in soup.find_all("p"):
        text = clean_text(paragraph.get_text(" "))
        if text and len(text) > 40:
            return shorten(text)
    return shorten(clean_text(soup.get_text(" ")))


def attr(tag: Tag, name: str) -> str | None:
    """An attribute's value as one string (bs4 gives multi-valued ones, such as ``class``, as a list)."""
    value = tag.get(name)
    if value is None or isinstance(value, str):
        return value
    return " ".join(value)


def _http(url: str | None, base: str) -> str | None:
    if not url:
        return None
    absolute = urljoin(base, url.strip())
    return absolute if urlsplit(absolute).scheme in ("http", "https") else None


# ---------------------------------------------------------------- main


def extract_page(
    html: str | bytes,
    page_url: str,
    *,
    tz: tzinfo,
    select: SelectSettings | None = None,
) -> Extracted:
    """Read title, author, role, dates, summary, body, image and canonical URL from a page."""
    soup = BeautifulSoup(html, "lxml")
    _check_shape(soup, page_url)
    select = select or SelectSettings()
    nodes = jsonld_nodes(soup)
    article = _article_node(nodes) or {}
    meta = meta_tags(soup)

    canonical_link = soup.find("link", rel="canonical")
    canonical_href = (attr(canonical_link, "href") or "").strip() if canonical_link else ""
    if not re.match(r"^(https?:)?/", canonical_href):
        canonical_href = ""  # a bare token ("8003098") is a CMS bug, not a URL to trust
    canonical = _first(
        _http(canonical_href, page_url),
        _http(meta.get("og:url"), page_url),
        _http(_url_of(article.get("url") or article.get("mainEntityOfPage"), nodes), page_url),
    )
    base = canonical or page_url
    byline = find_byline(soup.body or soup, tz)
    selected_body = _all_of(soup, select.body) if select.body else []

    # --- title
    h1 = soup.find("h1")
    title = _first(
        _select_text(soup, select.title),
        _text(article.get("headline")),
        _text(article.get("name")),
        clean_text(meta.get("og:title")),
        clean_text(meta.get("twitter:title")),
        _microformat_text(soup, ".entry-title, .h-entry .p-name, [itemprop=headline]"),
        clean_text(h1.get_text(" ", strip=True)) if h1 else None,
        _split_title(soup.title.get_text() if soup.title else None),
    )

    # --- author and role
    people = _people(article.get("author"), nodes)
    meta_author = _first(*(meta.get(key) for key in META_AUTHOR))
    if meta_author and re.match(r"^https?://", meta_author):
        meta_author = None  # article:author is often a profile URL, not a name
    author = _first(
        _select_text(soup, select.author),
        ", ".join(p["name"].strip() for p in people if isinstance(p.get("name"), str)) or None,
        clean_author(meta_author),
        _microformat_text(
            soup,
            ".author.vcard .fn, .vcard .fn, .h-entry .p-author, .byline .author, "
            "[itemprop=author] [itemprop=name], [itemprop=author], a[rel=author], .author-name",
        ),
        byline.name if byline else None,
    )
    role = _first(
        _text(people[0].get("jobTitle")) if people else None,
        _microformat_text(soup, ".p-job-title, [itemprop=jobTitle], .author-role, .author-title"),
        byline.role if byline else None,
    )

    # --- dates
    # Each candidate must be a date a leader or article can have: a placeholder (0001-01-01) or a date in the
    # future falls through to the next candidate.
    published = _first(
        *map(
            plausible,
            (
                _element_date(soup.select_one(select.date), tz) if select.date else None,
                parse_date(_text(article.get("datePublished")), tz),
                *(parse_date(meta.get(key), tz) for key in META_PUBLISHED),
                _time_published(soup, tz),
                _element_date(soup.select_one(".published, .dt-published"), tz),
                byline.date if byline else None,
            ),
        )
    )
    modified = _first(
        *map(
            plausible,
            (
                parse_date(_text(article.get("dateModified")), tz),
                *(parse_date(meta.get(key), tz) for key in META_MODIFIED),
                _time_modified(soup, tz),
            ),
        )
    )

    # --- body
    if byline is not None:
        byline.element.decompose()  # a byline is metadata, not body text
    body_elements = _first(
        selected_body,
        _all_of(soup, "[itemprop=articleBody]"),
        _all_of(soup, ".entry-content, .e-content, .post-content, .article-body, .article__body"),
    )
    if body_elements:
        body_html = "\n".join(_inner_html(_remove_noise(element)) for element in body_elements)
    else:
        for noise in soup.select(f"{NOISE_SELECTORS}, {CHROME_SELECTORS}"):
            if noise.name not in ("html", "body") and not noise.decomposed:
                noise.decompose()
        body_html = (
            trafilatura.extract(
                str(soup),
                url=base,
                output_format="html",
                include_links=True,
                include_images=True,
                include_formatting=True,
                include_tables=True,
                include_comments=False,
            )
            or ""
        )
        body_html = _inner_html(BeautifulSoup(body_html, "lxml").body or BeautifulSoup("", "lxml"))
    if not BeautifulSoup(body_html, "html.parser").get_text(strip=True) and article.get("articleBody"):
        paragraphs = str(article["articleBody"]).split("\n")
        body_html = "".join(f"<p>{_escape(p.strip())}</p>" for p in paragraphs if p.strip())
    body_html = clean_html(_drop_leading_heading(body_html, title), base)

    # --- summary and image
    summary = _first(
        _text(article.get("description")),
        clean_text(meta.get("og:description")),
        clean_text(meta.get("description")),
        clean_text(meta.get("twitter:description")),
        _summary_from(body_html),
    )
    body_soup = BeautifulSoup(body_html, "html.parser")
    first_image = body_soup.find("img", src=True)
    selected_image = soup.select_one(select.image) if select.image else None
    image = _first(
        _http(
            (attr(selected_image, "src") or attr(selected_image, "data-src") or attr(selected_image, "content"))
            if selected_image
            else None,
            base,
        ),
        _http(_url_of(article.get("image"), nodes), base),
        _http(meta.get("og:image") or meta.get("og:image:url") or meta.get("og:image:secure_url"), base),
        _http(meta.get("twitter:image"), base),
        first_image["src"] if first_image else None,
    )
    if image and PLACEHOLDER_IMAGE.search(image.split("?")[0]):
        image = None  # a lazy-loading or tracking placeholder, not the article's picture
    image_alt = _first(
        clean_text(attr(selected_image, "alt")) if selected_image else None,
        _text(_resolve(article.get("image"), nodes).get("caption"))
        if isinstance(_resolve(article.get("image"), nodes), dict)
        else None,
        clean_text(meta.get("og:image:alt") or meta.get("twitter:image:alt")),
        clean_text(attr(first_image, "alt")) if first_image and attr(first_image, "src") == image else None,
    )

    html_tag = soup.find("html")
    locale = meta.get("og:locale")
    language = _first(
        html_tag.get("lang") if html_tag else None,
        _text(article.get("inLanguage")),
        locale.split("_")[0] if locale else None,
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
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

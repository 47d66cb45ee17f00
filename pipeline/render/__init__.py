"""Render: an issue's items as a responsive email (HTML via MJML, and plain text).

Interface of this stage:

* :func:`render_issue` renders once per issue: Jinja2 → MJML → HTML with CSS
  inlined, plus the text part, and checks the content rules. Per-recipient
  values (greeting, unsubscribe and view-in-browser URLs) are left as
  placeholder tokens that carry a per-issue nonce, so collected text can never
  forge one;
* :class:`Rendered` is the result, and :meth:`Rendered.fill` puts one
  recipient's values in (escaped) without rendering again;
* :mod:`pipeline.render.mime` turns a rendered issue into MIME messages.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from babel.dates import format_date
from bs4 import BeautifulSoup
from markupsafe import Markup

from pipeline.config import ListSettings, Settings
from pipeline.errors import RenderError, TooBig
from pipeline.render.checks import GMAIL_CLIP_BYTES, content_problems, encoded_size
from pipeline.render.compiler import check_structure, compile_mjml
from pipeline.render.templates import environment, render_template, strings
from pipeline.text import clean_text, shorten
from pipeline.types import MEDIA_WIDTHS, Media, StoredItem

HTML_TEMPLATE = "newsletter.mjml.j2"
TEXT_TEMPLATE = "newsletter.txt.j2"
#: The values each recipient gets; templates use them as ``recipient.<field>``.
RECIPIENT_FIELDS = ("greeting", "name", "email", "view_url", "unsubscribe_url")
PREHEADER_LENGTH = 110
#: After the preheader, invisible characters that fill the inbox's preview line, so it stops at the
#: preheader instead of running on into "Visa i webbläsaren", the masthead and the greeting.
PREHEADER_PADDING = Markup("&#847;&zwnj;&nbsp;" * 80)


@dataclass(frozen=True)
class RecipientValues:
    """One recipient's values, filled into a rendered issue."""

    greeting: str
    name: str
    email: str
    view_url: str
    unsubscribe_url: str

    def as_dict(self) -> dict[str, str]:
        """The values by field name."""
        return {name: getattr(self, name) for name in RECIPIENT_FIELDS}


def token(nonce: str, name: str) -> str:
    """The placeholder that stands for one recipient field in a rendered issue."""
    return f"%%fb-{nonce}-{name}%%"


def token_pattern(nonce: str) -> re.Pattern[str]:
    """Matches every placeholder of one rendered issue; group 1 is the field."""
    fields = "|".join(RECIPIENT_FIELDS)
    return re.compile(rf"%%fb-{re.escape(nonce)}-({fields})%%")


@dataclass(frozen=True)
class Rendered:
    """An issue rendered once: HTML and text with placeholders, subject and preheader."""

    subject: str
    preheader: str
    html: str
    text: str
    nonce: str
    language: str
    warnings: tuple[str, ...] = field(default=())

    def fill(self, values: RecipientValues) -> tuple[str, str]:
        """(html, text) for one recipient: values HTML-escaped in the HTML, as they are in the text."""
        pattern = token_pattern(self.nonce)
        data = values.as_dict()
        html = pattern.sub(lambda m: html_lib.escape(data[m.group(1)], quote=True), self.html)
        text = pattern.sub(lambda m: data[m.group(1)], self.text)
        return html, text


@dataclass(frozen=True)
class EmailItem:
    """What a template sees of one item: plain values, dates already written out."""

    title: str
    url: str
    category: str
    author: str | None
    role: str | None
    date_text: str
    summary: str
    lead_text: str
    lead_source: str
    image: str | None  # the kept image at card size (640 px wide at most), on our own server
    image_alt: str
    image_wide: str | None = None  # the same at leader size (1200 px wide at most)
    image_width: int = 0  # of the kept original, for the proportions
    image_height: int = 0
    #: A note (an entry without a title of its own): shown by its text, not under a made-up heading.
    note: bool = False


def long_date(value: datetime, language: str, tz: tzinfo) -> str:
    """``20 december 2018`` (sv), ``December 20, 2018`` (en): the date as the reader's language writes it."""
    try:
        return format_date(value.astimezone(tz).date(), format="long", locale=language.replace("-", "_"))
    except (ValueError, LookupError):
        return format_date(value.astimezone(tz).date(), format="long", locale="en")


def _first_paragraph(body_html: str) -> str:
    soup = BeautifulSoup(body_html, "html.parser")
    for paragraph in soup.find_all("p"):
        text = clean_text(paragraph.get_text(" "))
        if text:
            return text
    return clean_text(soup.get_text(" ")) or ""


def email_item(
    stored: StoredItem,
    *,
    language: str,
    tz: tzinfo,
    images: Mapping[str, Media],
    media_url: str,
) -> EmailItem:
    """The template's view of an item; its image only as flygblad kept it (never hot-linked), else none."""
    item = stored.item
    kept = images.get(item.image) if item.image else None
    lead = _first_paragraph(item.body_html)
    return EmailItem(
        title=item.title,
        url=item.url,
        category=item.category,
        author=item.author,
        role=item.author_role,
        date_text=long_date(item.published, language, tz) if item.published else "",
        summary=item.summary or shorten(lead) or "",
        lead_text=lead,
        lead_source=item.body_html,
        image=f"{media_url}/{kept.file_for(MEDIA_WIDTHS[0])}" if kept else None,
        image_alt=item.image_alt or item.title,
        image_wide=f"{media_url}/{kept.file_for(MEDIA_WIDTHS[1])}" if kept else None,
        image_width=kept.width if kept else 0,
        image_height=kept.height if kept else 0,
        note=item.note,
    )


def item_problem(stored: StoredItem) -> str | None:
    """Why an item cannot go in an email (its own link is not a web address), or None."""
    url = stored.item.url or ""
    if not re.match(r"^https?://[^/\s]+", url):
        return f"{stored.item.id}: left out of the email: its link {url[:80]!r} is not an http(s) address"
    return None


def order_items(items: Sequence[StoredItem]) -> list[StoredItem]:
    """Leaders first, then articles; newest first within each."""

    def newest(stored: StoredItem) -> float:
        return -(stored.item.published or stored.first_seen).timestamp()

    return sorted(items, key=lambda s: (s.item.category != "leader", newest(s), s.item.id))


def subject_for(mailing_list: ListSettings, items: Sequence[EmailItem], *, date_text: str, number: int | None) -> str:
    """The subject from the list's template (``{first_title}`` by default), on one line."""
    values = {
        "first_title": items[0].title if items else "",
        "list_title": mailing_list.title,
        "date": date_text,
        "count": str(len(items)),
        "number": str(number) if number is not None else "",
    }
    return " ".join(mailing_list.subject.format(**values).split())


_HREF = re.compile(r'href="(https?://[^"]+)"')
_TEXT_URL = re.compile(r"https?://[^\s<>\"]+")


def track_links(html: str, text: str, wrap: Callable[[str], str], *, own: str) -> tuple[str, str]:
    """Every link to content (not flygblad's own pages) through *wrap*, in both parts."""

    def in_html(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(1))
        return match.group(0) if url.startswith(own) else f'href="{html_lib.escape(wrap(url), quote=True)}"'

    def in_text(match: re.Match[str]) -> str:
        url = match.group(0)
        return url if url.startswith(own) else wrap(url)

    return _HREF.sub(in_html, html), _TEXT_URL.sub(in_text, text)


#: The width a list's logo is shown at in the header.
LOGO_WIDTH = 200


def _logo(settings: Settings, logo: Media | None) -> dict[str, object] | None:
    """The list's logo as the header shows it (kept at draft time like a lead image), or None."""
    if logo is None:
        return None
    width, height = logo.size_at(LOGO_WIDTH)
    return {"src": f"{settings.media_url}/{logo.file_for(MEDIA_WIDTHS[0])}", "width": width, "height": height}


def note_html(markdown: str) -> Markup:
    """The editor's note as email HTML: CommonMark with raw HTML off, then nh3 (links keep only http(s) and mailto)."""
    import nh3
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).disable("image").render(markdown)
    clean = nh3.clean(
        rendered,
        tags={"p", "a", "strong", "em", "ul", "ol", "li", "br", "h3", "blockquote", "code"},
        attributes={"a": {"href"}},
        url_schemes={"http", "https", "mailto"},
        link_rel=None,
    )
    return Markup(clean)


def preheader_for(views: Sequence[EmailItem], t: Mapping[str, str]) -> str:
    """What the inbox shows after the subject: how many pieces and the first titles that fit (one piece: its summary)."""
    if len(views) == 1:
        first = views[0]
        return shorten(f"{first.title}: {first.summary or first.lead_text}", PREHEADER_LENGTH) or first.title
    titles: list[str] = []
    for view in views:
        text = t["preheader"].format(count=len(views), titles=" · ".join([*titles, view.title]))
        if titles and len(text) > PREHEADER_LENGTH:
            break
        titles.append(view.title)
    text = t["preheader"].format(count=len(views), titles=" · ".join(titles))
    return shorten(text, PREHEADER_LENGTH) or text


def render_issue(
    settings: Settings,
    mailing_list: ListSettings,
    items: Sequence[StoredItem],
    *,
    date: datetime,
    number: int | None = None,
    nonce: str | None = None,
    images: Mapping[str, Media] | None = None,
    language: str | None = None,
    note: str | None = None,
    subject: str | None = None,
    preheader: str | None = None,
    keep_order: bool = False,
    link_wrapper: Callable[[str], str] | None = None,
    logo: Media | None = None,
) -> Rendered:
    """Render one issue of *mailing_list* from *items*: once, for every recipient.

    Nothing here fetches or writes a file: images (*images*, the list's *logo*) come kept already.

    Raises RenderError naming the template file and line for a template or
    MJML error, or listing the content rules the result breaks.
    """
    if not items:
        raise RenderError(f"list {mailing_list.name!r}: an issue needs at least one item")
    organisation = settings.organisation
    if organisation is None:
        raise RenderError("[organisation] is not configured")
    nonce = nonce or secrets.token_hex(8)
    content = " ".join(str(v) for s in items for v in vars(s.item).values() if v)
    while f"fb-{nonce}-" in content:  # collected text must never contain a live placeholder
        nonce = secrets.token_hex(8)
    language = language or settings.list_language(mailing_list)
    tz = settings.site.tz
    warnings: list[str] = []
    views = [
        email_item(s, language=language, tz=tz, images=images or {}, media_url=settings.media_url)
        for s in (items if keep_order else order_items(items))  # a draft's order is the communicator's
    ]
    t = strings(settings.templates_dir, language)
    date_text = long_date(date, language, tz)
    subject = " ".join(subject.split()) if subject and subject.strip() else None
    subject = subject or subject_for(mailing_list, views, date_text=date_text, number=number)
    preheader = " ".join(preheader.split()) if preheader and preheader.strip() else preheader_for(views, t)
    recipient: Mapping[str, str] = {name: token(nonce, name) for name in RECIPIENT_FIELDS}
    context = {
        "lang": language,
        "subject": subject,
        "preheader": preheader,
        "preheader_padding": PREHEADER_PADDING,
        "accent": mailing_list.accent,
        "footer_text": mailing_list.footer,
        "logo": _logo(settings, logo),
        "note_html": note_html(note) if note and note.strip() else None,
        "note_text": note.strip() if note and note.strip() else None,
        "list_title": mailing_list.title,
        "list_name": mailing_list.name,
        "organisation": organisation.name,
        "address": organisation.address,
        "date_text": date_text,
        "number": number,
        "t": t,
        "why": t["why"].format(list=mailing_list.title),
        "leaders": [v for v in views if v.category == "leader"],
        "articles": [v for v in views if v.category != "leader"],
        "recipient": recipient,
    }
    env = environment(settings.templates_dir)
    for name in env.list_templates(filter_func=lambda n: n.endswith(".mjml.j2")):
        source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        check_structure(source, filename or name)
    mjml_source = render_template(env, HTML_TEMPLATE, context)
    html = compile_mjml(mjml_source, HTML_TEMPLATE)
    text = render_template(env, TEXT_TEMPLATE, context)
    if link_wrapper is not None:
        html, text = track_links(html, text, link_wrapper, own=settings.web_base_url + "/")
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    sample = Rendered(subject, preheader, html, text, nonce, language).fill(_sample_values(settings, t))[0]
    problems = content_problems(sample, base_url=settings.web_base_url, placeholder=token_pattern(nonce))
    if problems:
        message = f"list {mailing_list.name!r}: the email breaks content rules: " + "; ".join(problems)
        size = encoded_size(sample)
        if size >= GMAIL_CLIP_BYTES:
            raise TooBig(message, size=size, limit=GMAIL_CLIP_BYTES)
        raise RenderError(message)
    return Rendered(subject, preheader, html, text, nonce, language, tuple(warnings))


def greeting(settings: Settings, language: str, name: str | None) -> str:
    """``Hej Anna!`` or ``Hej!`` in the list's language."""
    t = strings(settings.templates_dir, language)
    return t["greeting_named"].format(name=name) if name else t["greeting"]


def _sample_values(settings: Settings, t: Mapping[str, str]) -> RecipientValues:
    """Values of a realistic length, for checking the size and links of the email."""
    base = settings.web_base_url
    name = t.get("sample_name", "Förnamn Efternamn")
    return RecipientValues(
        greeting=t["greeting_named"].format(name=name),
        name=name,
        email="forname.efternamn@example.org",
        view_url=f"{base}/archive/list/1",
        unsubscribe_url=f"{base}/unsubscribe/{'x' * 64}",
    )


__all__ = [
    "EmailItem",
    "RECIPIENT_FIELDS",
    "RecipientValues",
    "greeting",
    "Rendered",
    "long_date",
    "order_items",
    "render_issue",
    "token",
    "token_pattern",
]

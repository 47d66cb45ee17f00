"""The Jinja2 side of rendering: environment, filters, strings, and errors that name file and line.

Collected content is data, never template code: it is only ever passed in as
variables, MJML templates are autoescaped, and the only way article HTML enters
a template is the :func:`lead_html` filter, which sanitizes it again with nh3
(so nothing but paragraph-level markup reaches MJML).
"""

from __future__ import annotations

import functools
import re
import sys
import textwrap
import time
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from bs4 import BeautifulSoup
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)
from markupsafe import Markup

from pipeline.errors import RenderError
from pipeline.text import clean_html, clean_text

#: The templates that ship with flygblad (package data), used for any file a configured folder lacks.
BUILTIN_TEMPLATES = Path(str(resources.files("pipeline") / "templates")).resolve()
STRINGS = "strings.toml"
FALLBACK_LANGUAGE = "en"
#: What may remain of article HTML in the lead paragraph of an email.
LEAD_TAGS = {"a", "b", "strong", "i", "em", "br", "sub", "sup"}


#: Links an email may carry: the web, and mail and phone, which mail clients open.
EMAIL_LINK = re.compile(r"^(https?://[^/\s]+|mailto:|tel:)", re.IGNORECASE)


def email_links(html: str) -> str:
    """*html* with every link an inbox cannot follow unwrapped to its text.

    A link the sanitizer emptied (``javascript:``), a relative one or another
    scheme would break the issue's content rules; the reader keeps the words.
    """
    soup = BeautifulSoup(html, "html.parser")
    changed = False
    for a in soup.find_all("a"):
        if not EMAIL_LINK.match(str(a.get("href") or "").strip()):
            a.unwrap()
            changed = True
    return str(soup) if changed else html


def lead_html(item: Any) -> Markup:
    """The audited door for article HTML: the item's first paragraph, sanitized to inline markup."""
    html = getattr(item, "lead_source", "") or ""
    soup = BeautifulSoup(html, "html.parser")
    first = next((p for p in soup.find_all("p") if clean_text(p.get_text(" "))), None)
    fragment = "".join(str(c) for c in first.contents) if first is not None else html
    cleaned = email_links(clean_html(fragment))
    allowed = "|".join(sorted(LEAD_TAGS))
    cleaned = re.sub(rf"</?(?!(?:{allowed})\b)[a-z0-9]+[^>]*>", "", cleaned)
    # nh3 has escaped every "<" that is not an allowed tag, so no MJML tag can be formed here.
    return Markup(cleaned)  # noqa: S704 - sanitized just above


def wrap(text: str | None, width: int = 72) -> str:
    """Wrap plain text for the text part, keeping blank-line paragraph breaks."""
    if not text:
        return ""
    paragraphs = re.split(r"\n\s*\n", str(text))
    return "\n\n".join(
        textwrap.fill(" ".join(p.split()), width=width, break_long_words=False, break_on_hyphens=False)
        for p in paragraphs
    )


@functools.lru_cache(maxsize=8)
def environment(templates_dir: Path) -> Environment:
    """The Jinja2 environment: the configured folder first, then flygblad's own templates.

    Cached per folder, so templates are compiled once per process (Jinja2 checks
    their mtimes and recompiles a template that changed).
    """
    loaders = [FileSystemLoader(str(templates_dir))] if templates_dir.is_dir() else []
    if templates_dir.resolve() != BUILTIN_TEMPLATES:
        loaders.append(FileSystemLoader(str(BUILTIN_TEMPLATES)))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(enabled_extensions=("mjml.j2", "html.j2", "mjml", "html"), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters["lead_html"] = lead_html
    env.filters["wrap"] = wrap
    return env


def template_file(templates_dir: Path, name: str) -> Path:
    """A file of the templates (a stylesheet): the project's own when it has one, else flygblad's."""
    own = templates_dir / name
    return own if own.is_file() else BUILTIN_TEMPLATES / name


#: (templates folder, strings file) -> (when it was looked at, the project's file, its mtime)
_SEEN: dict[tuple[Path, str], tuple[float, Path, int]] = {}
#: The desk's texts (/admin/): the English phrase is the key, each language's table translates it.
DESK_STRINGS = "admin/strings.toml"


def strings(templates_dir: Path, language: str, file: str = STRINGS) -> dict[str, str]:
    """The UI strings for *language* (``sv``, ``en``, ``en-GB`` → ``en``), English filling gaps.

    The project's *file* (``strings.toml``, or :data:`DESK_STRINGS` for the desk, in its templates
    folder) overrides the built-in one key by key, language by language. The file is looked at again
    at most once a second (every web page and message asks), and parsed again only when it changed.
    """
    catalogues = _catalogues(templates_dir, file)
    merged: dict[str, str] = {}
    for level in dict.fromkeys((FALLBACK_LANGUAGE, language.split("-")[0].lower(), language)):
        for catalogue in catalogues:  # built-in, then the project's, at each level
            merged.update(catalogue.get(level, {}))
    return merged


def _catalogues(templates_dir: Path, file: str) -> list[dict[str, dict[str, str]]]:
    """The built-in strings *file*, then the project's when it has one."""
    now = time.monotonic()
    seen = _SEEN.get((templates_dir, file))
    if seen is None or now - seen[0] > 1.0:
        path = templates_dir / file
        try:
            changed = path.stat().st_mtime_ns if path.is_file() else 0
        except OSError as err:
            raise RenderError(f"{path}: cannot read the strings: {err}") from err
        seen = _SEEN[(templates_dir, file)] = (now, path, changed)
    catalogues = [_catalogue(BUILTIN_TEMPLATES / file, 0)]
    if seen[2] and seen[1].resolve() != BUILTIN_TEMPLATES / file:
        catalogues.append(_catalogue(seen[1], seen[2]))
    return catalogues


def languages(templates_dir: Path) -> list[str]:
    """The languages the templates have texts for (the tables of the built-in and the project's strings.toml)."""
    return sorted({language for catalogue in _catalogues(templates_dir, STRINGS) for language in catalogue})


def known_language(templates_dir: Path, tag: str) -> str:
    """*tag* as the templates know it (``sv-SE`` → ``sv`` when only ``sv`` is there); ValueError naming the known ones."""
    have = languages(templates_dir)
    wanted = tag.strip()
    for candidate in (wanted, wanted.split("-")[0].lower()):
        if candidate in have:
            return candidate
    raise ValueError(f"language {tag!r} is not one the templates have ({', '.join(have)})")


@functools.lru_cache(maxsize=8)
def _catalogue(path: Path, changed: int) -> dict[str, dict[str, str]]:
    """A strings file, parsed once per version (*changed* is its mtime)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise RenderError(f"{path}: cannot read the strings: {err}") from err
    return {k: {n: str(v) for n, v in table.items()} for k, table in data.items() if isinstance(table, dict)}


def _template_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    """The innermost template file and line in a traceback (Jinja2 rewrites frames to them)."""
    found = None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".j2") or "/templates/" in name:
            found = (name, tb.tb_lineno)
        tb = tb.tb_next
    return found


def render_template(env: Environment, name: str, context: Mapping[str, Any]) -> str:
    """Render one template; any error becomes a RenderError naming the template file and line."""
    try:
        return env.get_template(name).render(context)
    except TemplateSyntaxError as err:
        where = err.filename or err.name or name
        raise RenderError(f"{where}:{err.lineno}: template syntax error: {err.message}") from err
    except TemplateNotFound as err:
        raise RenderError(f"template not found: {err.name}") from err
    except UndefinedError as err:
        frame = _template_frame(sys.exc_info()[2])
        where = f"{frame[0]}:{frame[1]}" if frame else name
        raise RenderError(f"{where}: {err.message}") from err
    except TemplateError as err:
        frame = _template_frame(sys.exc_info()[2])
        where = f"{frame[0]}:{frame[1]}" if frame else name
        raise RenderError(f"{where}: template error: {err}") from err

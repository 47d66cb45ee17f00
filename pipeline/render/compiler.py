"""MJML to email HTML: mjml-python (MRML), then CSS inlining, with errors that say where.

MRML renders fast but neither validates structure (an unknown or unclosed tag
renders silently or fails with no position) nor inlines
``<mj-style inline="inline">``. So, before compiling, every MJML template file
is checked for unknown ``mj-`` tags and unbalanced nesting, with the Jinja2
parts blanked out so that line numbers stay the template's own; and after
compiling, the inline styles are applied with css-inline while ``@media``
rules stay in a ``<style>`` element, as MJML itself does.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import css_inline
import mjml

from pipeline.errors import RenderError

MJML_TAGS = {
    "mjml",
    "mj-head",
    "mj-body",
    "mj-title",
    "mj-preview",
    "mj-attributes",
    "mj-all",
    "mj-class",
    "mj-style",
    "mj-font",
    "mj-breakpoint",
    "mj-html-attributes",
    "mj-html-attribute",
    "mj-selector",
    "mj-section",
    "mj-column",
    "mj-group",
    "mj-wrapper",
    "mj-hero",
    "mj-text",
    "mj-button",
    "mj-image",
    "mj-divider",
    "mj-spacer",
    "mj-table",
    "mj-raw",
    "mj-social",
    "mj-social-element",
    "mj-navbar",
    "mj-navbar-link",
    "mj-accordion",
    "mj-accordion-element",
    "mj-accordion-title",
    "mj-accordion-text",
    "mj-carousel",
    "mj-carousel-image",
    "mj-include",
}
#: Inside these, content is HTML or CSS, not MJML structure.
_ENDING_TAGS = {
    "mj-text",
    "mj-button",
    "mj-table",
    "mj-raw",
    "mj-style",
    "mj-title",
    "mj-preview",
    "mj-navbar-link",
    "mj-accordion-title",
    "mj-accordion-text",
    "mj-social-element",
}
_JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.S)
_TAG = re.compile(r"<(/?)(mj-[a-z-]+|mjml)\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>", re.I)
_INLINE_STYLE = re.compile(r"<mj-style\s+inline=[\"']inline[\"']\s*>(.*?)</mj-style>", re.S | re.I)


def _blank(match: re.Match[str]) -> str:
    """Replace Jinja2 code with spaces, keeping its newlines (and so every line number)."""
    return re.sub(r"[^\n]", " ", match.group(0))


@functools.lru_cache(maxsize=64)
def check_structure(source: str, filename: str) -> None:
    """Raise RenderError for an unknown ``mj-`` tag or unbalanced MJML nesting in a template file."""
    text = _JINJA.sub(_blank, source)
    stack: list[tuple[str, int]] = []
    for match in _TAG.finditer(text):
        closing, name, _attributes, self_closing = match.groups()
        name = name.lower()
        line = text.count("\n", 0, match.start()) + 1
        if stack and stack[-1][0] in _ENDING_TAGS and not (closing and name == stack[-1][0]):
            continue  # HTML inside mj-text and the like is not MJML structure
        if name not in MJML_TAGS:
            raise RenderError(f"{filename}:{line}: unknown MJML tag <{name}>")
        if self_closing:
            continue
        if not closing:
            stack.append((name, line))
            continue
        if not stack:
            raise RenderError(f"{filename}:{line}: </{name}> closes nothing")
        opened, opened_line = stack.pop()
        if opened != name:
            raise RenderError(f"{filename}:{line}: </{name}> closes <{opened}> opened on line {opened_line}")
    if stack:
        name, line = stack[-1]
        raise RenderError(f"{filename}:{line}: <{name}> is never closed")


def check_templates(folder_files: list[Path]) -> None:
    """Check every MJML template file that a render will use."""
    for path in folder_files:
        check_structure(path.read_text(encoding="utf-8"), str(path))


def _split_media(css: str) -> tuple[str, str]:
    """Split CSS into (rules to inline, @media blocks to keep in a <style>)."""
    keep, plain, depth, start = [], [], 0, 0
    i = 0
    while i < len(css):
        if depth == 0 and css.startswith("@media", i):
            brace = css.index("{", i)
            depth, j = 1, brace + 1
            while depth and j < len(css):
                depth += {"{": 1, "}": -1}.get(css[j], 0)
                j += 1
            plain.append(css[start:i])
            keep.append(css[i:j])
            i = start = j
            continue
        i += 1
    plain.append(css[start:])
    return "".join(plain), "\n".join(keep)


def compile_mjml(source: str, template: str) -> str:
    """Compile rendered MJML to HTML and inline its ``mj-style inline="inline"`` CSS."""
    inline_css = "\n".join(_INLINE_STYLE.findall(source))
    source = _INLINE_STYLE.sub("", source)
    plain, media = _split_media(inline_css)
    if media.strip():
        source = source.replace("</mj-head>", f"<mj-style>{media}</mj-style></mj-head>", 1)
    try:
        # fonts={}: no web-font @import; the templates use fonts every client has.
        html = mjml.mjml2html(source, fonts={}, disable_comments=True)
    except ValueError as err:
        raise RenderError(f"{template}: MJML could not be compiled: {err} ({_locate(source)})") from err
    if not plain.strip():
        return html
    try:
        inliner = css_inline.CSSInliner(
            inline_style_tags=False, keep_style_tags=True, extra_css=plain, load_remote_stylesheets=False
        )
        return inliner.inline(html)
    except css_inline.InlineError as err:
        raise RenderError(f"{template}: CSS could not be inlined: {err}") from err


def _locate(source: str) -> str:
    """Where in the rendered MJML the structure breaks, for an error MRML gives no position for."""
    try:
        check_structure(source, "rendered MJML")
    except RenderError as err:
        return str(err)
    return "no structural error found in the rendered MJML"

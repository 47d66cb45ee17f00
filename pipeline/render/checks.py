"""Content rules every email must meet before it is frozen or sent.

Each rule is something a reader or a mailbox provider notices: an image
without alt text is silent to a screen reader and blank where images are off;
an image or link that is not absolute is broken in every inbox; Gmail clips
an HTML part over 102 KB (hiding the footer with the unsubscribe link); a
missing ``lang`` makes screen readers guess the language.
"""

from __future__ import annotations

import re

import lxml.html

#: Gmail clips messages whose HTML is larger than this.
GMAIL_CLIP_BYTES = 102 * 1024


def content_problems(html: str, *, base_url: str, placeholder: re.Pattern[str]) -> list[str]:
    """Every rule *html* breaks, one line each (empty when it is fine)."""
    problems: list[str] = []
    size = len(html.encode("utf-8"))
    if size >= GMAIL_CLIP_BYTES:
        problems.append(
            f"the HTML is {size / 1024:.0f} KB; Gmail clips messages over 102 KB (lower the list's max_items)"
        )
    document = lxml.html.document_fromstring(html)
    if not (document.get("lang") or "").strip():
        problems.append("the <html> element has no lang attribute")
    for img in document.iter("img"):
        src = (img.get("src") or "").strip()
        if not (img.get("alt") or "").strip():
            problems.append(f"image {src or '(no src)'} has no alt text")
        if not (src.startswith("https://") or src.startswith(base_url + "/")):
            problems.append(f"image {src or '(no src)'} is not an absolute https URL")
    for a in document.iter("a"):
        href = (a.get("href") or "").strip()
        if placeholder.fullmatch(href):
            continue
        if not re.match(r"^(https?://[^/\s]+|mailto:|tel:)", href):
            problems.append(f"link {href or '(empty)'} is not absolute")
    return problems

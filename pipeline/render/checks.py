"""Content rules every email must meet before it is frozen or sent.

Each rule is something a reader or a mailbox provider notices: an image
without alt text is silent to a screen reader and blank where images are off;
an image or link that is not absolute is broken in every inbox; Gmail clips
an HTML part over 102 KB as sent (hiding the footer with the unsubscribe link); a
missing ``lang`` makes screen readers guess the language.
"""

from __future__ import annotations

import binascii
import re

import lxml.html

#: Gmail clips messages whose HTML part, as sent (quoted-printable), is larger than this.
GMAIL_CLIP_BYTES = 102 * 1024


def encoded_size(html: str) -> int:
    """The bytes of *html* as the HTML part travels (quoted-printable): what Gmail counts.

    Swedish letters take six bytes each (``=C3=A5``), every ``=`` three, and
    each 76-character line three more for its soft break: a 90 KB HTML can
    be over 102 KB on the wire.
    """
    return len(quoted_printable(html))


_LINE_DOT = re.compile(rb"(?m)^\.")


def quoted_printable(data: str) -> bytes:
    """Quoted-printable with CRLF line ends; a piece that may sit between soft breaks.

    No line starts with ".": a leading dot is written ``=2E`` followed by a soft
    break, so the bytes are already SMTP-transparent (RFC 5321 4.5.2) and need
    no dot-stuffing per recipient; every line stays within 76 characters.
    """
    encoded = binascii.b2a_qp(data.encode("utf-8"), istext=True)
    # Each recipient's few short values come here for every message: the common case (one line, no dot
    # to begin it) is spared the rewrites and the search.
    if b"\n" in encoded:
        encoded = encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if encoded[-1:] in (b" ", b"\t"):
        encoded = encoded[:-1] + b"=%02X" % encoded[-1]  # whitespace before a soft break would be lost
    if encoded[:1] == b"." or b"\n." in encoded:
        while _LINE_DOT.search(encoded):
            encoded = _LINE_DOT.sub(b"=2E=\r\n", encoded)
    return encoded


def content_problems(html: str, *, base_url: str, placeholder: re.Pattern[str]) -> list[str]:
    """Every rule *html* breaks, one line each (empty when it is fine)."""
    problems: list[str] = []
    size = encoded_size(html)
    if size >= GMAIL_CLIP_BYTES:
        problems.append(
            f"the HTML part is {size / 1024:.0f} KB as sent; Gmail clips messages over 102 KB "
            "(lower the list's max_items)"
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

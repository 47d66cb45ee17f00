"""Subscribers: who is on a list, read from the command line or a CSV file.

An address is checked with email-validator (syntax only, no DNS look-up) and
kept once per list, case-insensitively. A CSV file is streamed in batches, so a
million rows never sit in memory; a bad row is reported with its line number
and skipped while the good rows still land. Importing again updates names and
languages, never duplicates, and never brings back an address that
unsubscribed, bounced or complained.
"""

from __future__ import annotations

import csv
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from pipeline.errors import FlygbladError
from pipeline.types import STATUSES, SUPPRESSED, Candidate, ImportReport, Status, Subscriber

BATCH = 1000
_LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class SubscriberError(FlygbladError):
    """A subscriber could not be added: names the address or the file and line."""


def check_address(raw: str) -> str:
    """The address, normalised by email-validator, its domain in ASCII (IDNA); SubscriberError saying why not.

    ``ivan@exämple.org`` is kept as ``ivan@xn--exmple-cua.org`` (see :mod:`pipeline.addresses`).
    """
    value = raw.strip()
    if not value:
        raise SubscriberError("no address")
    if "\r" in value or "\n" in value:
        raise SubscriberError(f"{value!r} contains a line break")
    try:
        checked = validate_email(value, check_deliverability=False)
        return checked.ascii_email or f"{checked.local_part}@{checked.ascii_domain}"
    except EmailNotValidError as err:
        raise SubscriberError(f"{value!r} is not a valid address: {err}") from None


#: A name longer than this is cut: it goes into a header line (RFC 5322's 998 characters) and a greeting.
MAX_NAME_LENGTH = 200


def clean_name(name: str | None) -> str | None:
    """A name as it may be kept: control characters (NUL, ESC, OSC …) gone, white space collapsed, capped."""
    if not name:
        return None
    visible = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in name)
    return " ".join(visible.split())[:MAX_NAME_LENGTH].strip() or None


def candidate(
    email: str, name: str | None = None, language: str | None = None, known: Callable[[str], str] | None = None
) -> Candidate:
    """Check one address with its name and language.

    *known* turns a language tag into one the templates have (``sv-SE`` → ``sv``), or raises
    ValueError saying which there are: a subscriber's language is one their issue can be written in.
    """
    address = check_address(email)
    name = clean_name(name)
    if name and any(c in name for c in "<>"):
        raise SubscriberError(f"name {name!r} contains characters a name cannot have")
    language = (language or "").strip() or None
    if language and not _LANGUAGE.match(language):
        raise SubscriberError(f"language {language!r} is not a language tag such as 'sv' or 'en'")
    if language and known is not None:
        try:
            language = known(language)
        except ValueError as err:
            raise SubscriberError(str(err)) from None
    return Candidate(address, name, language)


def _decoded_lines(path: Path, problems: list[str]) -> Iterator[str]:
    """The file's lines as text, a UTF-8 BOM dropped; a line that is not UTF-8 is reported and skipped."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{path}: line {number}: not UTF-8 text (save the file as UTF-8)")
                yield "\n"


#: Column names people's files use, as flygblad's own (lower case, spaces and dashes dropped).
HEADER_ALIASES = {
    "email": "email",
    "emailaddress": "email",
    "epost": "email",
    "epostadress": "email",
    "mail": "email",
    "mailadress": "email",
    "name": "name",
    "fullname": "name",
    "namn": "name",
    "fulltnamn": "name",
    "language": "language",
    "lang": "language",
    "språk": "language",
}
DELIMITERS = (",", ";", "\t")


def _column(header: str) -> str:
    """A header cell as flygblad's column name (``E-post`` → ``email``), or as it is when unknown."""
    key = "".join(c for c in header.strip().lower() if c not in " -_.")
    return HEADER_ALIASES.get(key, header.strip().lower())


def _delimiter(header_line: str) -> str:
    """The delimiter the header uses: the most frequent of comma, semicolon (Excel in Sweden) and tab."""
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_csv(path: Path, problems: list[str], known: Callable[[str], str] | None = None) -> Iterator[Candidate]:
    """Stream the checked rows of a CSV file (header ``email,name[,language]``, or what people call them).

    Comma, semicolon or tab, as the header line shows; a UTF-8 BOM; quoted line breaks; header
    aliases (``E-post``, ``E-mail``, ``Namn``, ``Språk``). Bad rows (a cell over the csv module's
    limit among them) are appended to *problems* with the line they start on, and skipped.
    """
    try:
        lines = _decoded_lines(path, problems)
        first = next(lines, "")
        reader = csv.DictReader(itertools.chain([first], lines), delimiter=_delimiter(first))
        header = [_column(h) for h in (reader.fieldnames or [])]
    except OSError as err:
        raise SubscriberError(f"{path}: cannot read: {err.strerror}") from err
    except csv.Error as err:
        raise SubscriberError(f"{path}: line 1: not a CSV header ({err})") from err
    if "email" not in header:
        raise SubscriberError(
            f"{path}: line 1: the header must name an 'email' column (email,name,language; "
            "or E-post, E-mail, Namn, Språk)"
        )
    reader.fieldnames = header
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # a stray carriage return, a quote left open, a huge cell: that row, not the file
            problems.append(f"{path}: line {start}: not a CSV row ({err})")
            continue
        if not any((value or "").strip() for key, value in row.items() if isinstance(value, str) and key):
            continue  # a blank line
        try:
            yield candidate(
                _cell(row.get("email")) or "", _cell(row.get("name")), _cell(row.get("language")), known=known
            )
        except SubscriberError as err:
            problems.append(f"{path}: line {start}: {err}")


def _cell(value: object) -> str | None:
    """A cell's text (a row with more cells than the header has gives lists under the None key, never here)."""
    return value if isinstance(value, str) else None


def batches(rows: Iterable[Candidate], size: int = BATCH) -> Iterator[list[Candidate]]:
    """Rows in lists of at most *size*."""
    batch: list[Candidate] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = [
    "BATCH",
    "Candidate",
    "ImportReport",
    "STATUSES",
    "SUPPRESSED",
    "Status",
    "Subscriber",
    "SubscriberError",
    "batches",
    "candidate",
    "check_address",
    "clean_name",
    "read_csv",
]

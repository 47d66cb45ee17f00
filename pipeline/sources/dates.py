"""Dates as pages write them, in Swedish and English, made timezone-aware.

Handles ISO 8601 (``2018-12-20``, ``2024-03-05T10:15:00+01:00``), RFC 2822
(``Thu, 20 Dec 2018 08:00:00 +0100``), and written dates such as
``20 december 2018``, ``torsdag 5 mars 2024 kl. 10.15``, ``5 mars 2024``,
``20 dec. 2018``, ``December 20, 2018``, ``Thursday, 5th March 2024 10:15``.
A date with no offset is in the site's time zone, never in the machine's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime

MONTHS: dict[str, int] = {}
for _names in (
    # Swedish, full and abbreviated
    "januari februari mars april maj juni juli augusti september oktober november december",
    "jan feb mar apr maj jun jul aug sep okt nov dec",
    # English, full and abbreviated
    "january february march april may june july august september october november december",
    "jan feb mar apr may jun jul aug sep oct nov dec",
):
    for _number, _name in enumerate(_names.split(), start=1):
        MONTHS[_name] = _number
MONTHS["sept"] = 9

WEEKDAYS = (
    "måndag tisdag onsdag torsdag fredag lördag söndag "
    "mån tis ons tor tors fre lör sön "
    "monday tuesday wednesday thursday friday saturday sunday "
    "mon tue tues wed thu thur thurs fri sat sun"
).split()

_MONTH = r"(?P<month>[a-zåäö]{3,9})\.?"
_TIME = (
    r"(?:(?:,|\s)\s*(?:kl\.?|klockan|at)?\s*(?P<hour>\d{1,2})[:.](?P<minute>\d{2})(?:[:.](?P<second>\d{2}))?"
    r"(?:\s*(?P<ampm>[ap])\.?m\.?\b)?)?"
)
_WEEKDAY = r"(?:(?:" + "|".join(sorted(WEEKDAYS, key=len, reverse=True)) + r")\.?,?\s+)?(?:den\s+|the\s+)?"

_DAY_MONTH_YEAR = re.compile(
    r"^"
    + _WEEKDAY
    + r"(?P<day>\d{1,2})(?:st|nd|rd|th|:e|:a)?\.?\s+(?:of\s+)?"
    + _MONTH
    + r",?\s+(?P<year>\d{4})"
    + _TIME,
    re.IGNORECASE,
)
_MONTH_DAY_YEAR = re.compile(
    r"^" + _WEEKDAY + _MONTH + r"\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<year>\d{4})" + _TIME,
    re.IGNORECASE,
)
_NUMERIC = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})" + _TIME + r"(?P<rest>.*)$",
)
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")


#: Zone names RFC 822 allows (and the two Central European ones Swedish pages write), as UTC offsets in hours.
ZONE_NAMES = {
    "z": 0, "ut": 0, "utc": 0, "gmt": 0,
    "est": -5, "edt": -4, "cst": -6, "cdt": -5, "mst": -7, "mdt": -6, "pst": -8, "pdt": -7,
    "cet": 1, "cest": 2,
}  # fmt: skip
_ZONE = re.compile(
    r"^(?:(?:gmt|utc|ut)?\s*(?P<sign>[+-])(?P<hours>\d{2}):?(?P<minutes>\d{2})|(?P<name>[a-z]{1,4}))$", re.I
)


def _zone(text: str) -> tzinfo | None:
    """The zone written after a date and time (``+0000``, ``-05:00``, ``GMT``, ``EST``, ``CET``), or None."""
    words = text.strip(" ,").split()
    found = _ZONE.match(words[0].strip("()")) if words else None
    if not found:
        return None
    if found.group("name"):
        hours = ZONE_NAMES.get(found.group("name").lower())
        return None if hours is None else timezone(timedelta(hours=hours))
    minutes = int(found.group("hours")) * 60 + int(found.group("minutes"))
    if minutes > 14 * 60:
        return None
    return timezone(timedelta(minutes=minutes if found.group("sign") == "+" else -minutes))


def _aware(value: datetime, tz: tzinfo) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _from_match(match: re.Match[str], tz: tzinfo) -> datetime | None:
    parts = match.groupdict()
    month_text = parts["month"]
    month = int(month_text) if month_text.isdigit() else MONTHS.get(month_text.lower().rstrip("."))
    if month is None:
        return None
    hour = int(parts.get("hour") or 0)
    ampm = (parts.get("ampm") or "").lower()
    if ampm == "p" and hour < 12:
        hour += 12
    elif ampm == "a" and hour == 12:
        hour = 0
    try:
        return datetime(
            int(parts["year"]),
            month,
            int(parts["day"]),
            hour,
            int(parts.get("minute") or 0),
            int(parts.get("second") or 0),
            tzinfo=tz,
        )
    except ValueError:  # 31 februari, 25:00
        return None


def parse_date(text: str | None, tz: tzinfo = UTC) -> datetime | None:
    """Parse a date as a page writes it; ``None`` when it is not a date.

    Naive results are placed in *tz* (the site's time zone).
    """
    if not text:
        return None
    value = " ".join(text.replace("\u00a0", " ").split()).strip(" ,.·|")
    if not value:
        return None
    if _ISO.match(value):
        try:
            return _aware(datetime.fromisoformat(value.replace(" ", "T", 1)), tz)
        except ValueError:
            pass
    for pattern in (_NUMERIC, _DAY_MONTH_YEAR, _MONTH_DAY_YEAR):
        match = pattern.match(value)
        if match:
            # A zone written after the time wins over the site's ("Thu, 20 Dec 2018 08:00:00 +0000" in RSS,
            # "2015-07-10 09:53:00 -0400" in a meta tag).
            rest = match.group("rest") if pattern is _NUMERIC else value[match.end() :]
            zone = _zone(rest) if match.group("hour") else None
            if pattern is _NUMERIC and rest.strip() and zone is None:
                return None  # "2024-03-05-slug" is no date
            return _from_match(match, zone or tz)
    if re.match(r"^(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{4}\s+\d{2}:\d{2}", value):
        try:
            return _aware(parsedate_to_datetime(value), tz)
        except (TypeError, ValueError, IndexError):
            return None
    return None


#: No leader or article flygblad collects was published before this (placeholders such as 0001-01-01 were).
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)


def plausible(value: datetime | None, now: datetime | None = None) -> datetime | None:
    """*value* when it can be a publication date: not before 1990, not more than a day ahead; else None."""
    if value is None:
        return None
    latest = (now or datetime.now(UTC)) + timedelta(days=1)
    return value if EARLIEST <= value <= latest else None


def find_date(text: str | None, tz: tzinfo = UTC) -> datetime | None:
    """The first date found anywhere inside *text* (for bylines such as "Publicerad 5 mars 2024")."""
    if not text:
        return None
    direct = parse_date(text, tz)
    if direct:
        return direct
    words = text.replace("\u00a0", " ").split()
    for start in range(len(words)):
        for end in range(min(len(words), start + 8), start, -1):
            found = parse_date(" ".join(words[start:end]), tz)
            if found:
                return found
    return None


def utc(value: datetime) -> datetime:
    """*value* in UTC; it must be aware."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC)

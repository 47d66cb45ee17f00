"""Dates as Swedish and English pages write them."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.sources.dates import find_date, parse_date

STHLM = ZoneInfo("Europe/Stockholm")
SV = "januari februari mars april maj juni juli augusti september oktober november december".split()
EN = "January February March April May June July August September October November December".split()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-12-20", datetime(2018, 12, 20, tzinfo=STHLM)),
        ("20 december 2018", datetime(2018, 12, 20, tzinfo=STHLM)),
        ("5 mars 2024", datetime(2024, 3, 5, tzinfo=STHLM)),
        ("torsdag 5 mars 2024 kl. 10.15", datetime(2024, 3, 5, 10, 15, tzinfo=STHLM)),
        ("den 1 juli 2023, 08:30", datetime(2023, 7, 1, 8, 30, tzinfo=STHLM)),
        ("20 dec. 2018", datetime(2018, 12, 20, tzinfo=STHLM)),
        ("3 okt 2022", datetime(2022, 10, 3, tzinfo=STHLM)),
        ("March 5, 2024", datetime(2024, 3, 5, tzinfo=STHLM)),
        ("Thursday, 5th March 2024 10:15", datetime(2024, 3, 5, 10, 15, tzinfo=STHLM)),
        ("Sept 9 2021", datetime(2021, 9, 9, tzinfo=STHLM)),
        ("2024-03-05T10:15:00+01:00", datetime(2024, 3, 5, 9, 15, tzinfo=UTC)),
        ("2024-03-05T09:15:00Z", datetime(2024, 3, 5, 9, 15, tzinfo=UTC)),
        ("2024-03-05 10:15", datetime(2024, 3, 5, 10, 15, tzinfo=STHLM)),
        ("Tue, 05 Mar 2024 10:15:00 +0100", datetime(2024, 3, 5, 9, 15, tzinfo=UTC)),
        # A meta tag's ISO-like date with a space before its offset (was no date at all).
        ("2015-07-10 09:53:00 -0400", datetime(2015, 7, 10, 13, 53, tzinfo=UTC)),
        ("2024-03-05 10:15 CET", datetime(2024, 3, 5, 9, 15, tzinfo=UTC)),
    ],
)
def test_written_dates(text: str, expected: datetime) -> None:
    parsed = parse_date(text, STHLM)
    assert parsed == expected
    assert parsed is not None and parsed.tzinfo is not None


@pytest.mark.parametrize(
    "text",
    ["", "igår", "31 februari 2024", "13 smarch 2024", "Ledare", "2024", "Birgitta Öjmertz", "2024-03-05-nyheter"],
)
def test_not_dates(text: str) -> None:
    assert parse_date(text, STHLM) is None


def test_find_date_in_a_sentence() -> None:
    assert find_date("Publicerad 12 december 2018 av Karin Ek", STHLM) == datetime(2018, 12, 12, tzinfo=STHLM)
    assert find_date("Uppdaterad i går", STHLM) is None


@given(st.dates(min_value=datetime(1990, 1, 1).date(), max_value=datetime(2100, 12, 31).date()), st.booleans())
def test_any_day_written_in_swedish_or_english(day, swedish: bool) -> None:
    text = f"{day.day} {SV[day.month - 1]} {day.year}" if swedish else f"{EN[day.month - 1]} {day.day}, {day.year}"
    parsed = parse_date(text, STHLM)
    assert parsed is not None and parsed.date() == day and parsed.tzinfo == STHLM

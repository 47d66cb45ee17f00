"""Subscribers on SQLite and PostgreSQL: checked, unique per list, streamed imports, suppression kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.store import Store
from pipeline.subscribers import ImportReport, SubscriberError, batches, candidate, read_csv


def _import(store: Store, path: Path, *, batch: int = 1000, status: str = "active") -> ImportReport:
    report = ImportReport()
    for rows in batches(read_csv(path, report.problems), batch):
        store.upsert_subscribers("brev", rows, status=status, report=report)
    return report


def test_csv_with_bom_crlf_bad_and_duplicate_rows(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "subs.csv"
    path.write_bytes(
        b"\xef\xbb\xbfEmail,Name,Language\r\n"
        b"anna@example.org,Anna Berg,sv\r\n"
        b"not-an-address,Nobody,\r\n"
        b'bo@example.org,"Ek, Bo",en\r\n'
        b"\r\n"
        b"ANNA@example.org,Anna B,\r\n"
        b"c@example.org,C,sv!\r\n"
        b"d@example.org,D\xff\xfe,\r\n"
        b"\xc3\xa5sa@example.org,\xc3\x85sa \xc3\x96berg,sv\r\n"
    )
    with Store.open(store_url) as store:
        report = _import(store, path, batch=2)
        emails = {s.email: s for s in store.iter_subscribers("brev")}
    assert report.problems == [
        f"{path}: line 3: 'not-an-address' is not a valid address: An email address must have an @-sign.",
        f"{path}: line 7: language 'sv!' is not a language tag such as 'sv' or 'en'",
        f"{path}: line 8: not UTF-8 text (save the file as UTF-8)",
    ]
    assert sorted(emails) == ["anna@example.org", "bo@example.org", "åsa@example.org"]
    assert emails["anna@example.org"].name == "Anna B"  # the later row updated the earlier one
    assert emails["bo@example.org"].name == "Ek, Bo" and emails["bo@example.org"].language == "en"
    assert emails["åsa@example.org"].name == "Åsa Öberg"
    assert {s.status for s in emails.values()} == {"active"}
    assert report.added == 3


def test_reimport_updates_never_duplicates_and_keeps_suppression(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "subs.csv"
    path.write_text("email,name\na@example.org,A\nb@example.org,B\nc@example.org,C\n", encoding="utf-8")
    with Store.open(store_url) as store:
        assert _import(store, path).added == 3
        b = store.subscriber("brev", "B@EXAMPLE.ORG")
        assert b is not None
        store.set_subscriber_status(b.id, "unsubscribed")
        c = store.subscriber("brev", "c@example.org")
        store.set_subscriber_status(c.id, "bounced")
        path.write_text(
            "email,name\na@example.org,A Andersson\nB@example.org,B\nc@example.org,C\nd@example.org,D\n",
            encoding="utf-8",
        )
        again = _import(store, path)
        assert (again.added, again.updated, again.unchanged, again.suppressed) == (1, 1, 0, 2)
        assert store.count_subscribers("brev") == 4
        assert store.subscriber("brev", "b@example.org").status == "unsubscribed"
        assert store.subscriber("brev", "c@example.org").status == "bounced"
        assert store.subscriber("brev", "a@example.org").name == "A Andersson"
        assert [s.email for s in store.iter_subscribers("brev", status="active", batch=1)] == [
            "a@example.org",
            "d@example.org",
        ]


def test_lists_are_separate_and_unconfirmed_stays_until_vouched(store_url: str) -> None:
    with Store.open(store_url) as store:
        report = ImportReport()
        store.upsert_subscribers("brev", [candidate("x@example.org")], status="unconfirmed", report=report)
        store.upsert_subscribers("annat", [candidate("x@example.org")], report=report)
        assert store.subscriber("brev", "x@example.org").status == "unconfirmed"
        assert store.subscriber("annat", "x@example.org").status == "active"
        store.upsert_subscribers("brev", [candidate("x@example.org")], status="active", report=report)
        assert store.subscriber("brev", "x@example.org").status == "active"
        assert store.remove_subscriber("brev", "X@example.org")
        assert not store.remove_subscriber("brev", "x@example.org")
        assert store.subscriber("annat", "x@example.org") is not None


@pytest.mark.parametrize(
    ("email", "name", "message"),
    [
        ("a@b", None, "not a valid address"),
        ("Anna <a@example.org>", None, "angle brackets"),
        ("a@example.org\r\nBcc: x@example.org", None, "line break"),
        ("a@example.org", "Anna <evil>", "characters a name cannot have"),
    ],
)
def test_bad_addresses_are_refused(email: str, name: str | None, message: str) -> None:
    with pytest.raises(SubscriberError, match=message):
        candidate(email, name)


def test_missing_email_header(tmp_path: Path) -> None:
    path = tmp_path / "subs.csv"
    path.write_text("adress,name\na@example.org,A\n", encoding="utf-8")
    with pytest.raises(SubscriberError, match=r"line 1: the header must name an 'email' column"):
        list(read_csv(path, []))


def test_a_large_file_streams(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name\n")
        for n in range(5000):
            handle.write(f"person{n}@example.org,Person {n}\n")
    with Store.open(store_url) as store:
        report = _import(store, path, batch=700)
        assert report.added == 5000 and not report.problems
        assert store.count_subscribers("brev", "active") == 5000

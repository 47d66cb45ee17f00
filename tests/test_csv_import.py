"""Subscriber CSV files as people have them: Excel's semicolons, Swedish headers, line breaks in quotes, huge cells.

Before: a Swedish Excel export (``E-post;Namn``, semicolons) was refused ("the header must name an
'email' column"), and there was no way to get a list back out as a CSV file.
"""

from __future__ import annotations

import csv
import io

from pipeline.store import Store
from tests.test_jobs import flygblad


def _import(settings, content: bytes) -> tuple[int, str, str]:
    path = settings.base_dir / "people.csv"
    path.write_bytes(content)
    done = flygblad(settings, "subscribers", "import", "--list", "nyhetsbrev", "people.csv")
    return done.returncode, done.stdout, done.stderr


def test_a_swedish_excel_export_imports(example_settings) -> None:
    settings = example_settings
    content = "\ufeffE-post;Namn;Språk\r\nanna@example.org;Anna Ek;sv\r\nbo@example.org;Bo Ström;en\r\n"
    code, out, err = _import(settings, content.encode("utf-8"))
    assert code == 0 and "2 added" in out, out + err
    with Store.open(settings.storage_url) as store:
        bo = store.subscriber("nyhetsbrev", "bo@example.org")
        assert (bo.name, bo.language) == ("Bo Ström", "en")


def test_header_aliases_quoted_line_breaks_and_a_huge_cell(example_settings) -> None:
    settings = example_settings
    huge = "x" * 200_000
    content = (
        "Email Address,Full name\n"
        'anna@example.org,"Anna\nSvensson"\n'
        f'bad@example.org,"{huge}"\n'
        "cecilia@example.org,Cecilia\n"
    )
    code, out, err = _import(settings, content.encode("utf-8"))
    assert "Traceback" not in err
    assert "people.csv: line 4: " in err, err  # the huge cell's row, by the line it starts on
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "anna@example.org").name == "Anna Svensson"
        assert store.subscriber("nyhetsbrev", "cecilia@example.org").name == "Cecilia"
        assert store.subscriber("nyhetsbrev", "bad@example.org") is None


def test_any_list_exports_as_a_csv_that_imports_again(example_settings) -> None:
    settings = example_settings
    _import(settings, "email;namn;language\nanna@example.org;Anna Ek;sv\nbo@example.org;Bo, Ström;en\n".encode())
    exported = flygblad(settings, "subscribers", "export", "--list", "nyhetsbrev")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["email"], r["name"], r["language"], r["status"]) for r in rows] == [
        ("anna@example.org", "Anna Ek", "sv", "active"),
        ("bo@example.org", "Bo, Ström", "en", "active"),
    ]
    (settings.base_dir / "out.csv").write_text(exported.stdout, encoding="utf-8")
    again = flygblad(settings, "subscribers", "import", "--list", "nyhetsbrev", "out.csv")
    assert again.returncode == 0 and "0 added, 0 updated, 2 unchanged" in again.stdout, again.stdout

"""The benchmarks compare like with like: mailmerge gets the same message flygblad sends.

No timing is asserted here (timings live in bench/); these check that a
comparison in ``python -m bench`` is fair, which a reader of its table relies on.
"""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest
from mailmerge.template_message import TemplateMessage

from bench import send as bench_send
from bench.common import SECRET, subscribers_csv
from bench.unsubscribe import _ms
from pipeline.config import load_settings
from pipeline.delivery.send import Outbox
from pipeline.jobs import freeze_next
from pipeline.render import RecipientValues
from pipeline.store import Store
from pipeline.tokens import Tokens

ROOT = Path(__file__).resolve().parent.parent


def test_mailmerge_gets_the_issue_flygblad_sends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    tokens = Tokens(SECRET)
    base = load_settings(ROOT / "config.toml").web_base_url + "/unsubscribe/"
    csv_path = tmp_path / "subscribers.csv"
    subscribers_csv(csv_path, 3, lambda n: base + tokens.unsubscribe(n + 1, "nyhetsbrev"))
    settings = bench_send.make_project(tmp_path, 2525, 1, csv_path)
    with Store.open(settings.storage_url) as store:
        issue = freeze_next(settings, store, settings.lists[0]).issue
    outbox = Outbox(settings, settings.lists[0], issue, date=datetime.now(UTC))

    # mailmerge's own rendering of its template for one CSV row, as it goes on the wire.
    template_path = tmp_path / "mailmerge_template.txt"
    template_path.write_text(bench_send.mailmerge_template(outbox), encoding="utf-8")
    row = {
        "email": "reader1@example.org",
        "name": "Läsare 1",
        "unsubscribe_url": base + tokens.unsubscribe(2, "nyhetsbrev"),
    }
    _, recipients, rendered = TemplateMessage(template_path).render(row)
    theirs = email.message_from_string(str(rendered), policy=policy.default)
    assert recipients == ["reader1@example.org"]

    ours = email.message_from_bytes(outbox.message(2, "reader1@example.org", "Läsare 1").data, policy=policy.default)
    expected_html, expected_text = outbox.rendered.fill(
        RecipientValues("Hej Läsare 1!", "Läsare 1", "reader1@example.org", outbox.view_url, row["unsubscribe_url"])
    )
    assert theirs["Subject"] == ours["Subject"]
    assert theirs["List-Unsubscribe"] == ours["List-Unsubscribe"]

    def body(message: email.message.EmailMessage, kind: str) -> str:
        return message.get_body((kind,)).get_content().replace("\r\n", "\n").strip()

    assert body(ours, "plain") == body(theirs, "plain") == expected_text.strip()
    assert body(ours, "html") == body(theirs, "html") == expected_html.strip()
    their_html = body(theirs, "html")
    assert "Läsare 1" in their_html and row["unsubscribe_url"] in their_html


@pytest.mark.parametrize(("text", "ms"), [("812.34us", 0.81234), ("12.50ms", 12.5), ("1.02s", 1020.0)])
def test_wrk_latencies_are_read_in_milliseconds(text: str, ms: float) -> None:
    assert _ms(text) == pytest.approx(ms)


def test_the_extraction_row_scores_every_tool_alike() -> None:
    """bench.extract splits every tool's text the same way: blocks apart, inline elements running on, so a link at
    the end of a sentence ("länk</a>.") is one token for the reference, flygblad and readability alike."""
    from bench.extract import date_agrees, f1, html_tokens, title_agrees

    assert html_tokens("<div><p>en <a href='x'>länk</a>.</p><p>två<br>rader</p></div>") == [
        "en",
        "länk.",
        "två",
        "rader",
    ]
    assert f1(["a", "b", "b"], ["a", "b"]) == 0.8 and f1(["a"], []) == 0.0
    assert title_agrees("Rubriken | Sajten", "rubriken") and not title_agrees("Rubriken", "Annat")
    stockholm = datetime(2024, 3, 5, 10, 0, tzinfo=UTC).astimezone()
    assert date_agrees("2024-03-05T10:00:00Z", stockholm)
    assert not date_agrees("2024-03-05T11:00:00Z", stockholm)

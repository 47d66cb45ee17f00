"""The send policy, through the real command in several processes at once: one issue, everyone once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.store import Store
from pipeline.subscribers import ImportReport, batches, candidate
from tests.conftest import ROOT, postgres_schema
from tests.smtp_sink import Sink

SECRET = "jobs-secret-0123456789abcdef-0123456789"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    env["FLYGBLAD_SECRET"] = SECRET
    env["PYTHONPATH"] = str(ROOT)
    return env


def project(settings: Settings, *, port: int, storage: str | None = None, **sender: object) -> Settings:
    """The bundled project sending through an SMTP sink on *port* (and on *storage*)."""
    text = settings.path.read_text(encoding="utf-8")
    if storage:
        text = text.replace('url = "sqlite:///var/flygblad.db"', f'url = "{storage}"')
    options = {"kind": "smtp", "host": "127.0.0.1", "port": port, "security": "none", "retry_base_seconds": 0}
    options.update(sender)
    table = "[sender]\n" + "".join(
        f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {v}\n" for k, v in options.items()
    )
    text = re.sub(r"\[sender\][^\[]*", table + "\n", text)
    settings.path.write_text(text, encoding="utf-8")
    return load_settings(settings.path)


def subscribe(settings: Settings, count: int, prefix: str = "p") -> list[str]:
    emails = [f"{prefix}{n}@example.org" for n in range(count)]
    with Store.open(settings.storage_url) as store:
        if not store.count_items():  # a PostgreSQL project starts empty: collect the sample site
            from pipeline.collect import collect

            collect(settings, store)
        for batch in batches((candidate(e) for e in emails), 1000):
            store.upsert_subscribers("nyhetsbrev", batch, report=ImportReport())
    return emails


def together(settings: Settings, tmp_path: Path, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run flygblad commands in separate processes that start their work at one barrier."""
    gate = tmp_path / f"barrier-{len(list(tmp_path.glob('barrier-*')))}"
    gate.mkdir()
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.barrier_main", str(gate), str(len(commands)), *command],
            cwd=settings.base_dir,
            env=_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for command in commands
    ]
    done = []
    for process in running:
        out, err = process.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request):
    if request.param == "sqlite":
        yield None
        return
    with postgres_schema() as url:
        yield url


def test_many_connections_to_a_slow_relay_never_run_out_of_database_connections(example_settings, storage) -> None:
    """``connections = 50`` (the config allows 64) to a relay that answers DATA after 50 ms: every sending
    connection holds a database connection while it works. Before, 20 of them exhausted SQLAlchemy's pool
    (5 + 10 overflow): "QueuePool limit of size 5 overflow 10 reached", the send failed, rows were left."""
    with Sink() as sink:
        sink.handler.data_delay = 0.05
        settings = project(example_settings, port=sink.port, storage=storage, connections=50)
        emails = subscribe(settings, 600)
        sent = flygblad(settings, "send", "--list", "nyhetsbrev")
        counts = sink.handler.count()
    assert sent.returncode == 0, sent.stderr
    assert "600 sent" in sent.stdout, sent.stdout
    assert counts == Counter({e: 1 for e in emails})


def test_three_sends_at_once_make_one_issue_and_mail_everyone_once(example_settings, storage, tmp_path) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port, storage=storage)
        emails = subscribe(settings, 2000)
        results = together(settings, tmp_path, *[["send", "--list", "nyhetsbrev"]] * 3)
        for result in results:
            assert result.returncode == 0, result.stderr
        counts = sink.handler.count()
    with Store.open(settings.storage_url) as store:
        issues = store.issues("nyhetsbrev")
    assert [i.number for i in issues] == [1], "three senders, one issue"
    assert counts == Counter({e: 1 for e in emails}), "every subscriber exactly once"
    assert issues[0].status == "sent"


def flygblad(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess, in the project's folder."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=settings.base_dir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def add_news(settings: Settings, slug: str = "extra") -> None:
    """One more entry in the sample site's news feed: the next collect finds one new item."""
    page = settings.base_dir / "examples" / "site" / "nyheter.xml"
    page.write_text(
        page.read_text(encoding="utf-8").replace(
            "<item>",
            f"<item><title>Nytt: {slug}</title><link>https://www.produktionslyftet.example/nyheter/{slug}</link>"
            "<description>Ny nyhet.</description></item><item>",
            1,
        ),
        encoding="utf-8",
    )


def with_list_options(settings: Settings, *lines: str) -> None:
    """Add these ``key = value`` lines to the bundled list's ``[[lists]]`` table."""
    text = settings.path.read_text(encoding="utf-8")
    settings.path.write_text(
        text.replace('subject = "{first_title}"', "\n".join(['subject = "{first_title}"', *lines]), 1),
        encoding="utf-8",
    )


def with_schedule(settings: Settings, cron: str = "30 7 * * 4", *lines: str) -> Settings:
    """The bundled list's schedule "veckan", with these extra ``key = value`` lines."""
    text = settings.path.read_text(encoding="utf-8")
    text += f'\n[[schedules]]\nname = "veckan"\nlist = "nyhetsbrev"\ncron = "{cron}"\nsend_deadline = "6h"\n'
    text += "".join(f"{line}\n" for line in lines)
    settings.path.write_text(text, encoding="utf-8")
    return load_settings(settings.path)


def test_non_ascii_addresses_are_normalised_and_never_crash_a_send(example_settings) -> None:
    """ivan@exämple.org goes out as IDNA; ivån@… needs SMTPUTF8: it fails alone where the server lacks it,
    and goes as UTF-8 where the server has it, with PIPELINING or without (MAIL and RCPT one at a time)."""
    for number, (smtputf8, pipelining) in enumerate(((False, True), (True, True), (True, False)), start=1):
        with Sink(smtputf8=smtputf8, pipelining=pipelining) as sink:
            settings = project(example_settings, port=sink.port)
            for address in ("ivan@exämple.org", "ivån@example.org", "anna@example.org"):
                added = flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", address)
                assert added.returncode == 0, added.stderr
            listed = flygblad(settings, "subscribers", "list", "--list", "nyhetsbrev").stdout
            assert "ivan@xn--exmple-cua.org" in listed, "the domain is kept in its ASCII form"
            if number > 1:
                add_news(settings, f"utf8-{number}")
                assert flygblad(settings, "collect").returncode == 0
            sent = flygblad(settings, "send")
            assert sent.returncode == 0, sent.stderr
            got = sink.handler.count()
        assert got["ivan@xn--exmple-cua.org"] == 1 and got["anna@example.org"] == 1
        if smtputf8:
            assert got["ivån@example.org"] == 1
            assert sent.stdout.strip().endswith("3 sent, 0 deferred, 0 bounced, 0 failed, 0 uncertain (done)")
        else:
            assert "ivån@example.org" not in got
            assert sent.stdout.strip().endswith("2 sent, 0 deferred, 0 bounced, 1 failed, 0 uncertain (done)")
            with Store.open(settings.storage_url) as store:
                [row] = store.outbox_rows(store.issue("nyhetsbrev", number).id, "failed")
            assert row.email == "ivån@example.org" and "SMTPUTF8" in (row.last_reply or "")


def test_a_recipient_answering_4xx_is_deferred_and_does_not_hold_up_the_rest(example_settings) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port, retry_base_seconds=300)
        emails = subscribe(settings, 20)
        sink.handler.rule(emails[3], *["451"] * 50)
        sent = flygblad(settings, "send", timeout=60)  # returns: it does not sit out the retries
        assert sent.returncode == 0, sent.stderr
        assert "19 sent, 1 deferred" in sent.stdout and "retried by a later send" in sent.stdout
        assert set(sink.handler.count()) == set(emails) - {emails[3]}
        [shown] = json.loads(flygblad(settings, "issues", "--json").stdout)
        assert shown["unfinished"].startswith("1 deferred, the first due"), shown
        add_news(settings)
        assert flygblad(settings, "collect").returncode == 0
        built = flygblad(settings, "build")
        assert "issue 1 of 'nyhetsbrev' is sending, not yet sent to everyone" in built.stdout
    with Store.open(settings.storage_url) as store:
        assert [i.number for i in store.issues("nyhetsbrev")] == [1], "no second issue while one is unfinished"


def test_a_firing_without_subscribers_freezes_nothing(example_settings) -> None:
    with Sink() as sink:
        settings = with_schedule(project(example_settings, port=sink.port))
        fired = flygblad(settings, "schedule", "--run", "veckan")
        assert fired.returncode == 0, fired.stderr
        assert fired.stdout.startswith("schedule: veckan fired: no-subscribers")
        with Store.open(settings.storage_url) as store:
            assert store.issues("nyhetsbrev") == [], "the items are kept for the first subscriber"
        emails = subscribe(settings, 2)
        sent = flygblad(settings, "send")
        assert sent.returncode == 0 and "2 sent" in sent.stdout
        assert set(sink.handler.count()) == set(emails)
    with Store.open(settings.storage_url) as store:
        [issue] = store.issues("nyhetsbrev")
    assert len(issue.item_ids) == 8


def test_schedule_run_fires_now(example_settings) -> None:
    """`schedule --run` of a weekly schedule fires now, not at its last due time days ago (which was "skipped")."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    two_days_ago = datetime.now(ZoneInfo("Europe/Stockholm")) - timedelta(days=2)
    weekly = f"0 {two_days_ago.hour} * * {(two_days_ago.weekday() + 1) % 7}"  # crontab: 0 is Sunday
    settings = with_schedule(example_settings, cron=weekly)
    subscribe(settings, 1)
    before = datetime.now(UTC)
    fired = flygblad(settings, "schedule", "--run", "veckan")
    assert fired.returncode == 0, fired.stderr
    assert fired.stdout.startswith("schedule: veckan fired: done")
    again = flygblad(settings, "schedule", "--run", "veckan")
    assert again.stdout.startswith("schedule: veckan fired: no-news"), "again: nothing new, no second issue"
    with Store.open(settings.storage_url) as store:
        firings = store.firings("veckan")
    assert [f["status"] for f in firings] == ["no-news", "done"]
    assert all(before - timedelta(seconds=1) <= f["due"] <= datetime.now(UTC) for f in firings)


def test_a_paused_issue_is_resumed_first_and_the_firing_says_paused(example_settings) -> None:
    from tests.smtp_sink import free_port

    settings = with_schedule(project(example_settings, port=free_port(), max_consecutive_failures=3))
    emails = subscribe(settings, 5)
    first = flygblad(settings, "send")  # nobody listens on that port: the send pauses
    assert first.returncode == 1 and "paused after 3 failures in a row" in first.stderr
    add_news(settings)
    fired = flygblad(settings, "schedule", "--run", "veckan")
    assert fired.returncode == 1 and fired.stdout.startswith("schedule: veckan fired: paused")
    with Store.open(settings.storage_url) as store:
        assert [i.number for i in store.issues("nyhetsbrev")] == [1], "no issue 2 while issue 1 is paused"
    [shown] = json.loads(flygblad(settings, "issues", "--json").stdout)
    assert shown["unfinished"].startswith("paused after 3 failures in a row"), shown
    with Sink() as sink:
        settings = project(settings, port=sink.port)
        fired = flygblad(settings, "schedule", "--run", "veckan")
        assert fired.returncode == 0, fired.stdout + fired.stderr
        assert fired.stdout.startswith("schedule: veckan fired: done")
        counts = sink.handler.count()
    assert counts == Counter({e: 2 for e in emails}), "issue 1 resumed and finished, then issue 2 went out"
    with Store.open(settings.storage_url) as store:
        issues = store.issues("nyhetsbrev")
        [firing] = [f for f in store.firings("veckan") if f["status"] == "done"]
    assert [(i.number, i.status) for i in issues] == [(2, "sent"), (1, "sent")]
    assert firing["issue_number"] == 2
    assert Counter(m["Subject"] for m in sink.handler.messages())["Nytt: extra"] == 5


def test_send_issue_n_picks_an_older_issue(example_settings) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port)
        subscribe(settings, 3)
        assert flygblad(settings, "send").returncode == 0
        again = flygblad(settings, "send", "--issue", "1")
        assert again.returncode == 0
        assert again.stdout.strip() == "send: issue 1 of 'nyhetsbrev' is sent to everyone already: nothing to send"
        missing = flygblad(settings, "send", "--issue", "7")
        assert missing.returncode == 1 and "list 'nyhetsbrev' has no issue 7" in missing.stderr
        assert sum(sink.handler.count().values()) == 3


def test_a_confirmation_waits_in_the_queue_while_the_relay_is_down(example_settings, monkeypatch) -> None:
    """Sign-up while SMTP is down: the form answers at once, nothing is lost, the mail goes when it is back."""
    import requests

    from tests.smtp_sink import free_port
    from tests.test_web import Server, _configure, _form

    smtp_port, web_port = free_port(), free_port()
    settings = project(example_settings, port=smtp_port, max_retries=5)
    settings = _configure(settings, f"http://127.0.0.1:{web_port}")
    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    with Server(settings, web_port) as server:
        session = requests.Session()
        token = _form(session, f"{server.url}/subscribe/nyhetsbrev")
        answer = session.post(
            f"{server.url}/subscribe/nyhetsbrev", data={"email": "ny@example.org", "csrf_token": token}
        )
        assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with Store.open(settings.storage_url) as store:
                rows = store.mail_rows()
            if rows and rows[0]["status"] == "deferred":
                break
            time.sleep(0.05)
        assert [r["status"] for r in rows] == ["deferred"], "kept, to be tried again"
        assert "connection" in rows[0]["last_reply"].lower() or "refused" in rows[0]["last_reply"].lower()
    with Sink(port=smtp_port) as sink:
        sent = flygblad(settings, "send")  # the queue is delivered first
        assert "confirmations: 1 sent" in sent.stdout, sent.stdout + sent.stderr
        [(to, data)] = sink.handler.accepted
    assert to == "ny@example.org" and b"/confirm/" in data
    with Store.open(settings.storage_url) as store:
        assert [r["status"] for r in store.mail_rows()] == ["sent"]


def test_import_unconfirmed_sends_one_confirmation_each(example_settings) -> None:
    settings = example_settings
    (settings.base_dir / "new.csv").write_text("email,name\na@example.org,A\nb@example.org,B\n", encoding="utf-8")
    first = flygblad(settings, "subscribers", "import", "--list", "nyhetsbrev", "--status", "unconfirmed", "new.csv")
    assert first.returncode == 0, first.stderr
    assert "2 confirmations queued; confirmations: 2 sent" in first.stdout
    again = flygblad(settings, "subscribers", "import", "--list", "nyhetsbrev", "--status", "unconfirmed", "new.csv")
    assert "confirmations" not in again.stdout, "a re-import asks nobody twice"
    confirmations = sorted(settings.outbox_dir.glob("confirm.*.eml"))
    assert len(confirmations) == 2
    assert all(b"/confirm/" in p.read_bytes() for p in confirmations)


# ---------------------------------------------------------------- the first issue's window


def _sent_text(settings: Settings) -> str:
    from email import policy
    from email.parser import BytesParser

    texts = []
    for path in sorted(settings.outbox_dir.glob("nyhetsbrev.*.eml")):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        texts.append(message.get_body(("plain",)).get_content())
    return "\n".join(texts)


def test_a_first_issue_is_not_the_back_catalogue(example_settings) -> None:
    """A list started today used to mail its subscribers every editorial since 2017 in its first issue."""
    settings = example_settings
    settings.path.write_text(
        settings.path.read_text(encoding="utf-8").replace("first_issue_days = 36500\n", ""), encoding="utf-8"
    )
    add_news(settings, "i-dag")
    assert flygblad(settings, "collect").returncode == 0
    subscribe(settings, 1)
    sent = flygblad(settings, "send", "--list", "nyhetsbrev")
    assert sent.returncode == 0, sent.stderr
    text = _sent_text(settings)
    assert "Nytt: i-dag" in text
    assert "Utmanande, lärorikt och inspirerande" not in text and "Robotlyftet" not in text, "2017-2018 left out"
    again = flygblad(settings, "send", "--list", "nyhetsbrev")
    assert again.returncode == 0 and "no new items" in again.stdout, "the back catalogue is not mailed later either"
    assert "Utmanande" not in _sent_text(settings)


def test_send_since_takes_only_what_was_published_since(example_settings) -> None:
    settings = example_settings
    subscribe(settings, 1)
    sent = flygblad(settings, "send", "--list", "nyhetsbrev", "--since", "2018-12-01")
    assert sent.returncode == 0, sent.stderr
    text = _sent_text(settings)
    assert "Utmanande, lärorikt och inspirerande" in text and "Robotlyftet ger resultat" in text  # December 2018
    assert "Hållbarhet är en konkurrensfördel" not in text and "Ett år med Smart industri" not in text  # earlier
    bad = flygblad(settings, "send", "--list", "nyhetsbrev", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_a_first_issue_with_nothing_recent_says_why(example_settings) -> None:
    settings = example_settings
    settings.path.write_text(
        settings.path.read_text(encoding="utf-8").replace("first_issue_days = 36500\n", "first_issue_days = 7\n"),
        encoding="utf-8",
    )
    subscribe(settings, 1)
    sent = flygblad(settings, "send", "--list", "nyhetsbrev")
    assert sent.returncode == 0
    assert "8 published before" in sent.stdout and "first_issue_days = 7" in sent.stdout, sent.stdout


# ---------------------------------------------------------------- the delivery log


def test_issues_show_gives_the_delivery_log(example_settings) -> None:
    """A communicator could list issues but not see who got one, and who did not and why."""
    import json as json_module

    from tests.smtp_sink import Sink

    with Sink() as sink:
        settings = project(example_settings, port=sink.port, max_retries=0)
        emails = subscribe(settings, 3)
        sink.handler.rule(emails[1], "550")
        sent = flygblad(settings, "send", "--list", "nyhetsbrev")
        assert sent.returncode == 0, sent.stderr
    shown = flygblad(settings, "issues", "show", "1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "issue 1 of 'nyhetsbrev': Utmanande, lärorikt och inspirerande"
    assert "3 recipients: 2 sent, 1 bounced" in shown.stdout
    assert any(line.split()[:2] == ["bounced", emails[1]] and "550" in line for line in lines), lines
    record = json_module.loads(flygblad(settings, "issues", "show", "1", "--json").stdout)
    assert record["recipients"] == {"sent": 2, "bounced": 1}
    assert [p["email"] for p in record["problems"]] == [emails[1]]
    assert flygblad(settings, "issues", "show", "9").returncode == 1
    assert flygblad(settings, "issues", "--json").returncode == 0, "the list of issues still works"

"""The repros of a hostile world, each through the real command against a real server.

A relay that refuses us is not a list of bounces; a connection lost after the
message went is not a reason to send it again; a fault of ours pauses the send
and leaves everyone pending; one bad link never blocks a list.
"""

from __future__ import annotations

import json
import quopri
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from pipeline.config import Settings
from pipeline.delivery.file import file_name
from pipeline.store import Store
from tests.smtp_sink import Sink
from tests.test_jobs import _env, flygblad, project, subscribe


def statuses(settings: Settings, number: int = 1) -> Counter[str]:
    with Store.open(settings.storage_url) as store:
        issue = store.issue("nyhetsbrev", number)
        assert issue is not None
        return Counter(store.outbox_counts(issue.id))


def subscriber_statuses(settings: Settings) -> Counter[str]:
    with Store.open(settings.storage_url) as store:
        return Counter(s.status for s in store.iter_subscribers("nyhetsbrev"))


@pytest.mark.parametrize(
    ("where", "reply", "words"),
    [
        ("rcpt_reply", "554 5.7.1 Relay access denied", "refused 10 recipients in a row"),
        ("mail_reply", "530 5.7.0 Authentication required", "the relay refused the sender"),
        ("data_reply", "552 5.3.4 Message size exceeds fixed limit", "the relay refused the message"),
        ("data_reply", "554 5.7.1 Content rejected", "the relay refused the message"),
    ],
)
def test_a_relay_level_refusal_pauses_and_suppresses_nobody(example_settings, where, reply, words) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port)
        emails = subscribe(settings, 200)
        setattr(sink.handler, where, reply)
        sent = flygblad(settings, "send")
        assert sent.returncode == 1, "the send paused"
        assert words in sent.stderr and reply in sent.stderr, sent.stderr
        if reply.startswith("530"):
            assert "[sender] username is not set" in sent.stderr
        assert subscriber_statuses(settings) == {"active": 200}, "nobody suppressed"
        assert statuses(settings) == {"pending": 200}, "everyone still to send"
        setattr(sink.handler, where, None)  # the operator fixed the relay
        again = flygblad(settings, "send")
        assert again.returncode == 0, again.stderr
        assert sink.handler.count() == Counter({e: 1 for e in emails})


def test_a_drop_after_the_end_of_data_is_uncertain_never_resent(example_settings) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port, max_retries=5)
        emails = subscribe(settings, 8)
        sink.handler.rule(emails[2], "drop-after-data")
        sent = flygblad(settings, "send")
        assert sent.returncode == 0, sent.stderr
        assert "7 sent, 0 deferred, 0 bounced, 0 failed, 1 uncertain (done)" in sent.stdout
        assert f"uncertain: {emails[2]}" in sent.stderr
        assert sink.handler.count() == Counter({e: 1 for e in emails}), "the dropped one was queued once, not again"


def test_an_always_dropping_relay_sends_each_message_once(example_settings) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port, max_retries=5)
        emails = subscribe(settings, 4)
        sink.handler.drop_after_data = True
        sent = flygblad(settings, "send")
        assert "0 sent, 0 deferred, 0 bounced, 0 failed, 4 uncertain (done)" in sent.stdout
        assert sink.handler.count() == Counter({e: 1 for e in emails})


def test_a_full_disk_pauses_the_file_sender_and_fails_nobody(example_settings) -> None:
    """The real ENOSPC: the outbox files of recipients 11 and later are links to /dev/full."""
    settings = example_settings
    subscribe(settings, 100)
    assert flygblad(settings, "build").returncode == 0
    with Store.open(settings.storage_url) as store:
        issue = store.issue("nyhetsbrev")
        ids = sorted(s.id for s in store.iter_subscribers("nyhetsbrev"))
    outbox = settings.outbox_dir
    outbox.mkdir(parents=True, exist_ok=True)
    domain = "produktionslyftet.example"
    full = [outbox / (file_name(f"nyhetsbrev.1.{i}.{issue.nonce[:8]}@{domain}") + ".tmp") for i in ids[10:]]
    for link in full:
        link.symlink_to("/dev/full")
    sent = flygblad(settings, "send")
    assert sent.returncode == 1
    assert "No space left on device" in sent.stderr and "paused" in sent.stderr
    assert statuses(settings) == {"sent": 10, "pending": 90}, "nobody failed for our own disk"
    for link in full:
        link.unlink(missing_ok=True)
    again = flygblad(settings, "send")
    assert again.returncode == 0, again.stderr
    assert "100 sent" in again.stdout and len(list(outbox.glob("*.eml"))) == 100


def test_a_tel_or_javascript_link_never_blocks_the_list(example_settings) -> None:
    settings = example_settings
    page = settings.base_dir / "examples" / "site" / "ledare" / "index.html"
    leader = page.parent / "ett-ar-med-smart-industri.html"
    text = leader.read_text(encoding="utf-8")
    start = text.index("<p>Det har gått")
    leader.write_text(
        text[: start + 3]
        + 'Ring <a href="tel:+46317001234">031-700 12 34</a> eller <a href="javascript:alert(1)">klicka</a>. '
        + text[start + 3 :],
        encoding="utf-8",
    )
    feed = settings.base_dir / "examples" / "site" / "nyheter.xml"
    feed.write_text(
        feed.read_text(encoding="utf-8").replace(
            "<item>",
            "<item><title>Elak</title><link>javascript:alert(1)</link><description>x</description></item><item>",
            1,
        ),
        encoding="utf-8",
    )
    assert flygblad(settings, "collect").returncode in (0, 1)
    subscribe(settings, 2)
    preview = flygblad(settings, "preview")
    assert preview.returncode == 0, preview.stderr
    html = (settings.base_dir / "preview" / "issue.html").read_text(encoding="utf-8")
    assert 'href="tel:+46317001234"' in html and "javascript:" not in html
    assert "klicka" in html, "the emptied link's words stay, as text"
    sent = flygblad(settings, "send")
    assert sent.returncode == 0, sent.stderr
    [issue] = json.loads(flygblad(settings, "issues", "--json").stdout)
    assert issue["status"] == "sent" and not any("javascript" in i for i in issue["items"])


def running(settings: Settings, sink: Sink, *args: str, after: int) -> subprocess.Popen[str]:
    """`flygblad ARGS` in a subprocess, returned once the sink has taken *after* messages."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=settings.base_dir,
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(sink.handler.accepted) < after and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    return process


def send_then_signal(
    settings: Settings, sink: Sink, *, after: int, signum: int
) -> tuple[subprocess.Popen[str], str, str]:
    """`flygblad send`, signalled once the sink has taken *after* messages; its output."""
    sending = running(settings, sink, "send", after=after)
    sending.send_signal(signum)
    out, err = sending.communicate(timeout=60)
    return sending, out, err


def test_ctrl_c_stops_the_send_and_loses_nobody(example_settings) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port)
        emails = subscribe(settings, 3000)
        sending, out, err = send_then_signal(settings, sink, after=300, signum=signal.SIGINT)
        assert sending.returncode == 130, err
        assert "stopped, " in out and "not yet sent" in out, out
        got = len(sink.handler.accepted)
        assert got < 3000, "one Ctrl-C stops the send"
        assert statuses(settings)["sending"] == 0, "in-flight messages were finished or given back"
        again = flygblad(settings, "send", timeout=300)
        assert again.returncode == 0, again.stderr
        assert sink.handler.count() == Counter({e: 1 for e in emails})


def test_sigterm_is_graceful_too(example_settings) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port)
        subscribe(settings, 2000)
        sending, out, err = send_then_signal(settings, sink, after=200, signum=signal.SIGTERM)
    assert sending.returncode == 143, err
    counts = statuses(settings)
    assert counts["sending"] == 0 and counts["uncertain"] == 0 and counts["sent"] == len(sink.handler.accepted)


def test_kill_mid_send_then_build_makes_no_new_issue(example_settings) -> None:
    with Sink() as sink:
        settings = project(example_settings, port=sink.port)
        emails = subscribe(settings, 2000)
        sending = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "send"], cwd=settings.base_dir, env=_env(), stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while len(sink.handler.accepted) < 200 and time.monotonic() < deadline:
            time.sleep(0.002)
        sending.send_signal(signal.SIGKILL)
        sending.wait(30)
        from tests.test_jobs import add_news

        add_news(settings)
        assert flygblad(settings, "collect").returncode == 0
        built = flygblad(settings, "build")
        assert "issue 1 of 'nyhetsbrev' is sending, not yet sent to everyone" in built.stdout
        resumed = flygblad(settings, "send", timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        out = resumed.stdout.strip().splitlines()
        assert out[0].startswith("send: issue 1 of 'nyhetsbrev'") and out[0].endswith("(done)")
        assert out[1].startswith("send: issue 2 of 'nyhetsbrev': 2000 sent"), "then the new issue"
        counts = sink.handler.count()
    uncertain = {e for e in emails if counts[e] == 1}
    assert len(uncertain) <= 2 and all(counts[e] in (1, 2) for e in emails), "issue 1 once (or uncertain), issue 2 once"


def resumes_once_each(settings: Settings, sink: Sink, emails: list[str]) -> None:
    """The next `send` finishes the issue: nobody twice, nobody missing but the (at most 2) uncertain."""
    again = flygblad(settings, "send", timeout=300)
    assert again.returncode == 0, again.stderr
    counts = sink.handler.count()
    uncertain = {line.split()[2] for line in again.stderr.splitlines() if line.startswith("flygblad: uncertain:")}
    assert max(counts.values()) == 1, "nobody twice"
    assert set(emails) - set(counts) <= uncertain and len(uncertain) <= 2


def test_a_database_locked_mid_send_pauses_it_without_a_traceback(example_settings) -> None:
    """Another program holds SQLite's write lock past the busy timeout: the send pauses, says why, and resumes."""
    import sqlite3

    with Sink() as sink:
        settings = project(example_settings, port=sink.port)
        emails = subscribe(settings, 2000)
        sending = running(settings, sink, "send", after=200)
        holder = sqlite3.connect(settings.storage_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            out, err = sending.communicate(timeout=60)  # its busy timeout is 10 s
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert sending.returncode == 1, err
        assert "Traceback" not in err
        assert "paused: the database could not be written (OperationalError: database is locked)" in err
        resumes_once_each(settings, sink, emails)


def test_a_lost_postgresql_connection_pauses_the_send_without_a_traceback(example_settings) -> None:
    """The server ends the sender's connections mid-send (as a restart would): pause, say why, resume."""
    import secrets

    from sqlalchemy import create_engine, text

    from tests.conftest import postgres_schema

    with postgres_schema() as url, Sink() as sink:
        name = f"flygblad-{secrets.token_hex(4)}"
        settings = project(example_settings, port=sink.port, storage=f"{url}&application_name={name}")
        emails = subscribe(settings, 2000)
        sending = running(settings, sink, "send", after=300)
        admin = create_engine(url)
        with admin.begin() as connection:
            ended = connection.execute(
                text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :n"),
                {"n": name},
            ).scalar()
        admin.dispose()
        out, err = sending.communicate(timeout=60)
        assert ended, "the sender's connections were found and ended"
        assert sending.returncode == 1, out + err
        assert "Traceback" not in err
        assert "paused: the database could not be written" in err, err
        resumes_once_each(settings, sink, emails)


def test_a_firing_killed_mid_send_is_recorded_interrupted_and_the_next_resumes(example_settings) -> None:
    from tests.test_jobs import with_schedule

    with Sink() as sink:
        settings = with_schedule(project(example_settings, port=sink.port))
        emails = subscribe(settings, 2000)
        firing = running(settings, sink, "schedule", "--run", "veckan", after=200)
        firing.send_signal(signal.SIGKILL)
        firing.wait(30)
        listed = flygblad(settings, "schedule")
        assert "interrupted: the process running it stopped before it ended" in listed.stdout, listed.stdout
        again = flygblad(settings, "schedule", "--run", "veckan", timeout=300)
        assert again.returncode == 0 and again.stdout.startswith("schedule: veckan fired: done"), again.stdout
        counts = sink.handler.count()
    assert max(counts.values()) == 1 and len(set(emails) - set(counts)) <= 2
    with Store.open(settings.storage_url) as store:
        assert [f["status"] for f in store.firings("veckan")] == ["done", "interrupted"]
        assert [i.status for i in store.issues("nyhetsbrev")] == ["sent"]


def _news(settings: Settings, max_items: int, entries: str) -> None:
    """*entries* new in the sample's news feed, which gives up to 100; the list takes up to *max_items*."""
    config = settings.path
    config.write_text(
        config.read_text(encoding="utf-8")
        .replace("max_items = 20\n#", f"max_items = {max_items}\n#")
        .replace('category = "article"\n\n[organisation]', 'category = "article"\nmax_items = 100\n\n[organisation]'),
        encoding="utf-8",
    )
    feed = settings.base_dir / "examples" / "site" / "nyheter.xml"
    feed.write_text(feed.read_text(encoding="utf-8").replace("<item>", entries + "<item>", 1), encoding="utf-8")


def test_too_many_items_for_gmail_leave_some_out_instead_of_blocking_the_list(example_settings) -> None:
    """80 new items would make an email Gmail clips: the issue takes what fits and says so."""
    settings = example_settings
    _news(
        settings,
        80,
        "".join(
            f"<item><title>Nyhet nummer {n} om produktion och industri i Sverige</title>"
            f"<link>https://www.produktionslyftet.example/nyheter/n{n}</link>"
            f"<description>{'Företagen i programmet berättar om sitt arbete med ständiga förbättringar. ' * 4}"
            f"</description></item>"
            for n in range(80)
        ),
    )
    assert flygblad(settings, "collect").returncode == 0
    built = flygblad(settings, "build")
    assert built.returncode == 0, built.stderr
    assert "left out so that the email stays under Gmail's 102 KB clipping size" in built.stderr
    [issue] = json.loads(flygblad(settings, "issues", "--json").stdout)
    assert issue["html_bytes"] < 102 * 1024 and 10 < len(issue["items"]) < 88


def test_an_issue_gmail_would_clip_as_sent_is_trimmed_by_its_encoded_size(example_settings) -> None:
    """Gmail counts the HTML part as it travels: Swedish letters take six bytes each in quoted-printable.

    60 items of Swedish text make an HTML part under 102 KB decoded but over it as sent; the issue
    must leave items out until the part *as sent* fits.
    """
    settings = example_settings
    _news(
        settings,
        60,
        "".join(
            f"<item><title>Växjö, Gävle och Örebro: företagens åtgärder nummer {n}</title>"
            f"<link>https://www.produktionslyftet.example/nyheter/v{n}</link>"
            f"<description>{'Företagen i Västra Götaland förbättrar sin ämnesövergripande återvinning. ' * 3}"
            f"</description></item>"
            for n in range(60)
        ),
    )
    assert flygblad(settings, "collect").returncode == 0
    assert flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "anna@example.org").returncode == 0
    sent = flygblad(settings, "send", "--list", "nyhetsbrev")
    assert sent.returncode == 0, sent.stderr
    [eml] = sorted(settings.outbox_dir.glob("nyhetsbrev.*.eml"))
    data = eml.read_bytes()
    part = re.search(rb"Content-Type: text/html[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n(.*?)\r\n--=_flygblad", data, re.S)
    assert part is not None
    html = quopri.decodestring(part.group(1))
    assert len(part.group(1)) < 102 * 1024, (
        f"{len(part.group(1)) / 1024:.1f} KB as sent ({len(html) / 1024:.1f} KB decoded)"
    )
    assert "left out so that the email stays under Gmail's 102 KB clipping size" in sent.stderr

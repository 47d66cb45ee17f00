"""The communicator's week from the command line: shape the next issue, approve it, and a send freezes exactly that.

Before: an issue was whatever was collected since the last one, in a fixed order, with a subject from a
format string; no note, no choosing or reordering, no approval.
"""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser

from pipeline.config import Settings
from tests.test_jobs import add_news, flygblad, with_list_options


def _sent(settings: Settings, number: int):
    [path] = sorted(settings.outbox_dir.glob(f"nyhetsbrev.{number}.*.eml"))
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


def test_a_week_at_the_desk_from_the_cli(example_settings) -> None:
    settings = example_settings
    with_list_options(settings, 'approval = "required"')
    assert flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "anna@example.org").returncode == 0
    shown = json.loads(flygblad(settings, "draft", "show", "--json").stdout)
    titles = [i["title"] for i in shown["items"]]
    assert len(titles) == 8 and titles[2] == "Ett år med Smart industri" and not shown["approved"]
    dropped = next(i for i in shown["items"] if i["title"].startswith("Reflektionsdagarna"))

    note = "**Välkommen** till veckans nummer! <script>alert(1)</script> [Anmäl dig](https://example.org/anmal)"
    for args in (
        ("note", note),
        ("subject", "Veckans nyhetsbrev: smart industri"),
        ("exclude", dropped["id"]),
        ("move", "3", "--to", "1"),
        ("summary", "Robotlyftet", "Tolv företag har fått sin första robot."),
    ):
        done = flygblad(settings, "draft", *args)
        assert done.returncode == (1 if args[0] == "summary" else 0), (args, done.stderr)
    robot = next(i["id"] for i in shown["items"] if i["title"].startswith("Robotlyftet"))
    assert flygblad(settings, "draft", "summary", robot, "Tolv företag har fått sin första robot.").returncode == 0

    preview = flygblad(settings, "preview", "--out", "utkast")
    assert preview.returncode == 0, preview.stderr
    shown_html = (settings.base_dir / "utkast" / "issue.html").read_text(encoding="utf-8")
    assert "<strong>Välkommen</strong>" in shown_html and "Reflektionsdagarna" not in shown_html
    tested = flygblad(settings, "send", "--test", "redaktor@example.org")
    assert tested.returncode == 0 and "to redaktor@example.org: sent" in tested.stdout, tested.stdout + tested.stderr
    [test_mail] = settings.outbox_dir.glob("*.eml")
    assert BytesParser(policy=policy.default).parsebytes(test_mail.read_bytes())["Subject"] == (
        "[TEST] Veckans nyhetsbrev: smart industri"
    )
    test_mail.unlink()

    waiting = flygblad(settings, "send", "--list", "nyhetsbrev")
    assert waiting.returncode == 0 and "waits for approval" in waiting.stdout, waiting.stdout
    assert not list(settings.outbox_dir.glob("nyhetsbrev.*.eml")), "nothing sent before approval"

    approved = flygblad(settings, "draft", "approve", "--by", "Redaktören")
    assert approved.returncode == 0 and "approved by Redaktören" in approved.stdout, approved.stdout
    add_news(settings, "efter-godkannandet")  # collected after the approval: waits for the next issue
    assert flygblad(settings, "collect").returncode == 0

    sent = flygblad(settings, "send", "--list", "nyhetsbrev")
    assert sent.returncode == 0 and "1 sent" in sent.stdout, sent.stdout + sent.stderr
    message = _sent(settings, 1)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert message["Subject"] == "Veckans nyhetsbrev: smart industri"
    assert "<strong>Välkommen</strong> till veckans nummer!" in html and '<a href="https://example.org/anmal"' in html
    assert "<script>" not in html and "alert(1)" in html, "the note's HTML is shown as text, never run"
    assert "Välkommen" in text
    assert "Reflektionsdagarna" not in html, "left out"
    assert html.index("Ett år med Smart industri") < html.index("Utmanande, lärorikt och inspirerande"), "moved up"
    assert "Tolv företag har fått sin första robot." in html
    assert "Nytt: efter-godkannandet" not in html, "the issue is exactly what was approved"

    assert json.loads(flygblad(settings, "draft", "show", "--json").stdout)["note"] is None, "a new draft"
    assert flygblad(settings, "draft", "approve").returncode == 0
    assert flygblad(settings, "send", "--list", "nyhetsbrev").returncode == 0
    second = _sent(settings, 2).get_body(("html",)).get_content()
    assert "Nytt: efter-godkannandet" in second and "Reflektionsdagarna" not in second
    log = flygblad(settings, "issues", "show", "1")
    assert "1 recipients: 1 sent" in log.stdout, log.stdout


def test_a_firing_waits_for_approval_then_sends_the_approved_issue(example_settings) -> None:
    from tests.test_jobs import with_schedule

    settings = with_schedule(example_settings)
    with_list_options(settings, 'approval = "required"', 'editors = ["Redaktören <red@produktionslyftet.example>"]')
    assert flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "anna@example.org").returncode == 0
    waiting = flygblad(settings, "schedule", "--run", "veckan")
    assert waiting.returncode == 0 and "waiting" in waiting.stdout and "draft approve" in waiting.stdout, waiting.stdout
    assert "1 editors mailed the issue" in waiting.stdout

    def to_editor() -> list[str]:
        found = []
        for path in settings.outbox_dir.glob("*.eml"):
            message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            if message["To"].addresses[0].addr_spec == "red@produktionslyftet.example":
                found.append(str(message["Subject"]))
        return found

    assert to_editor() == ["[Att godkänna: flygblad draft approve] Utmanande, lärorikt och inspirerande"]
    assert flygblad(settings, "schedule", "--run", "veckan").returncode == 0
    assert len(to_editor()) == 1, "told once about the same draft"
    assert flygblad(settings, "draft", "subject", "Veckans brev").returncode == 0
    again = flygblad(settings, "schedule", "--run", "veckan")
    assert "1 editors mailed" in again.stdout and len(to_editor()) == 2, "a changed draft is news again"
    assert not list(settings.outbox_dir.glob("nyhetsbrev.1.1.*.eml")), "nothing sent to subscribers before approval"
    assert flygblad(settings, "draft", "approve").returncode == 0
    fired = flygblad(settings, "schedule", "--run", "veckan")
    assert fired.returncode == 0 and "done" in fired.stdout, fired.stdout
    assert len(list(settings.outbox_dir.glob("nyhetsbrev.1.1.*.eml"))) == 1, "anna got the approved issue"


def test_branding_a_list_logo_accent_and_footer(example_settings) -> None:
    """A list's own look: a logo (kept and served like lead images), an accent colour that stays readable, a footer line."""
    import re

    from PIL import Image

    settings = example_settings
    Image.new("RGBA", (800, 200), (140, 20, 30, 255)).save(settings.base_dir / "logo.png")
    config = settings.path.read_text(encoding="utf-8")
    with_list_options(
        settings,
        'logo = "logo.png"',
        'accent = "#8a1c1c"',
        'footer = "Produktionslyftet drivs av Teknikföretagen och IF Metall."',
    )
    assert flygblad(settings, "preview").returncode == 0
    html = (settings.base_dir / "preview" / "issue.html").read_text(encoding="utf-8")
    [logo] = [img for img in re.findall(r"<img\b[^>]*>", html) if 'alt="Produktionslyftet"' in img]
    assert re.search(r'src="https://www\.produktionslyftet\.example/media/[0-9a-f]{32}-640\.png"', logo), logo
    assert 'width="200"' in logo and 'height="50"' in logo
    assert "background:#8a1c1c" in html.replace(" ", "") and "#0b4f8a" not in html
    assert "Produktionslyftet drivs av Teknikföretagen och IF Metall." in html
    text = (settings.base_dir / "preview" / "issue.txt").read_text(encoding="utf-8")
    assert "Produktionslyftet drivs av Teknikföretagen och IF Metall." in text

    for accent, words in (("#ffcc00", "contrast of 1.51:1"), ("blue", "#rrggbb")):
        settings.path.write_text(config, encoding="utf-8")
        with_list_options(settings, f'accent = "{accent}"')
        refused = flygblad(settings, "preview")
        assert refused.returncode == 2 and "lists" in refused.stderr and "accent" in refused.stderr, refused.stderr
        assert words in refused.stderr, refused.stderr
    settings.path.write_text(config, encoding="utf-8")
    with_list_options(settings, 'logo = "saknas.png"')
    missing = flygblad(settings, "preview")
    assert missing.returncode == 2 and "lists.logo: no such file" in missing.stderr, missing.stderr


def test_clicks_are_counted_per_link_never_per_person(example_settings, monkeypatch) -> None:
    """track_clicks = true: links go through signed /c/ redirects that name the issue and the URL, not the reader."""
    import re

    import requests

    from tests.smtp_sink import free_port
    from tests.test_web import SECRET, Server, _configure, _sent_issue

    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    with_list_options(settings, "track_clicks = true")
    from pipeline.config import load_settings

    settings = load_settings(settings.path)
    bodies = [
        BytesParser(policy=policy.default).parsebytes(data).get_body(("html",)).get_content()
        for data in _sent_issue(settings, ["a@example.org", "b@example.org"])
    ]
    tracked = [re.findall(r'href="(http://127\.0\.0\.1:\d+/c/[^"]+)"', body) for body in bodies]
    assert tracked[0] and tracked[0] == tracked[1], "the same links for everyone: nothing about the reader in them"
    assert all(
        "/unsubscribe/" in u or "/c/" not in u for u in re.findall(r'href="([^"]+/unsubscribe/[^"]+)"', bodies[0])
    )
    with Server(settings, port) as server:
        first = requests.get(tracked[0][0], allow_redirects=False)
        assert first.status_code == 302 and first.headers["Location"].startswith(
            "https://www.produktionslyftet.example/"
        )
        requests.get(tracked[0][0], allow_redirects=False)
        assert requests.get(f"{server.url}/c/forged", allow_redirects=False).status_code == 404
    # Read as a communicator reads it. (A stray "x" once came before this JSON: waitress's wake-up byte,
    # written into a reused descriptor by a server closed under a running request; see close_server.)
    shown = json.loads(flygblad(settings, "issues", "show", "1", "--json").stdout)
    assert shown["clicks"] == [{"url": first.headers["Location"], "clicks": 2}]


def test_a_one_off_send_at_a_time_is_sent_by_serve(example_settings) -> None:
    """``send --at``: recorded now, sent by a running ``serve`` when its minute comes; past or twice is refused."""
    import subprocess
    import sys
    import time
    from datetime import datetime, timedelta

    from tests.smtp_sink import free_port
    from tests.test_jobs import _env
    from tests.test_web import _configure

    port = free_port()
    settings = _configure(example_settings, f"http://127.0.0.1:{port}")
    assert flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "anna@example.org").returncode == 0
    tz = settings.site.tz
    past = (datetime.now(tz) - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")
    refused = flygblad(settings, "send", "--at", past)
    assert refused.returncode == 1 and "is in the past" in refused.stderr, refused.stderr
    later = (datetime.now(tz) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    assert flygblad(settings, "send", "--at", later).returncode == 0
    assert "already" in flygblad(settings, "send", "--at", later).stderr
    cancelled = flygblad(settings, "send", "--cancel-at", later)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout

    now = datetime.now(tz).strftime("%Y-%m-%d %H:%M")
    booked = flygblad(settings, "send", "--at", now)
    assert booked.returncode == 0 and f"goes out at {now}" in booked.stdout, booked.stdout + booked.stderr
    listed = flygblad(settings, "schedule")
    assert "list nyhetsbrev: scheduled" in listed.stdout and "list nyhetsbrev: cancelled" in listed.stdout
    assert not list(settings.outbox_dir.glob("nyhetsbrev.1.*.eml")), "nothing sent before serve runs it"
    serve = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--port", str(port)],
        cwd=settings.base_dir,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Until serve has sent it and recorded the send done: the message file is written before the job's
        # end is (stopping serve between the two leaves the job "interrupted", as it should).
        deadline = time.monotonic() + 60
        listed = flygblad(settings, "schedule")
        while time.monotonic() < deadline and "list nyhetsbrev: done" not in listed.stdout:
            time.sleep(0.2)
            listed = flygblad(settings, "schedule")
    finally:
        serve.terminate()
        _, errors = serve.communicate(timeout=30)
    assert len(list(settings.outbox_dir.glob("nyhetsbrev.1.*.eml"))) == 1, errors
    assert "list nyhetsbrev: done" in listed.stdout, listed.stdout + errors


def test_a_schedule_can_require_approval_and_send_as_soon_as_it_is_given(example_settings) -> None:
    """``[[schedules]] approval = "required"`` over an "auto" list; ``on_approval = "at-once"``: no wait for next week."""
    from datetime import UTC, datetime

    from pipeline.jobs import fire_due_sends
    from tests.test_jobs import with_schedule

    settings = with_schedule(example_settings, "30 7 * * 4", 'approval = "required"', 'on_approval = "at-once"')
    assert flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "anna@example.org").returncode == 0
    assert flygblad(settings, "schedule", "--run", "veckan").stdout.startswith("schedule: veckan fired: waiting")
    assert fire_due_sends(settings) == [], "not approved: nothing to do"
    assert not list(settings.outbox_dir.glob("nyhetsbrev.1.*.eml"))
    assert flygblad(settings, "draft", "approve").returncode == 0
    [sent] = fire_due_sends(settings, now=datetime.now(UTC))
    assert sent.status == "done" and sent.issue_number == 1
    assert len(list(settings.outbox_dir.glob("nyhetsbrev.1.*.eml"))) == 1
    assert fire_due_sends(settings) == [], "sent once"
    assert "done" in flygblad(settings, "schedule").stdout

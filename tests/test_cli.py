"""The flygblad command as a communicator runs it, on a copy of the bundled default."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import feedparser
import pytest

from pipeline.render.templates import BUILTIN_TEMPLATES
from tests.conftest import EXAMPLE_SITE, ROOT


def flygblad(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE_SITE, tmp_path / "examples" / "site")
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    return tmp_path


def test_run_on_the_bundled_default(project: Path) -> None:
    result = flygblad("run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "collected 3 sources: 8 new, 0 updated, 0 unchanged, 0 failed",
        f"feeds: 12 files in {project / 'feeds'}, 12 rewritten, 0 unchanged",
        "send: list 'nyhetsbrev' has no active subscribers: nothing to send",
    ]
    atom = feedparser.parse((project / "feeds" / "all.atom").read_bytes())
    seed = next(e for e in atom.entries if e.title == "Utmanande, lärorikt och inspirerande")
    assert seed.author == "Birgitta Öjmertz"
    assert seed.published.startswith("2018-12-20")
    assert (project / "var" / "flygblad.db").is_file()

    again = flygblad("collect", cwd=project)
    assert again.returncode == 0
    assert again.stdout.strip() == "collected 3 sources: 0 new, 0 updated, 8 unchanged, 0 failed"
    feeds = flygblad("feeds", cwd=project)
    assert feeds.stdout.strip().endswith("0 rewritten, 12 unchanged")


def test_items_json(project: Path) -> None:
    assert flygblad("collect", "--source", "ledare", cwd=project).returncode == 0
    result = flygblad("items", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["title"] for r in rows] == [
        "Utmanande, lärorikt och inspirerande",
        "Hållbarhet är en konkurrensfördel",
        "Ett år med Smart industri",
    ]
    seed = rows[0]
    assert {"id", "source", "category", "title", "author", "role", "published", "url", "summary"} <= set(seed)
    assert seed["published"] == "2018-12-20T00:00:00+01:00"
    assert (seed["author"], seed["role"], seed["category"], seed["source"]) == (
        "Birgitta Öjmertz",
        "Programdirektör Produktionslyftet",
        "leader",
        "ledare",
    )
    table = flygblad("items", "--source", "ledare", "--limit", "1", cwd=project)
    assert "Utmanande, lärorikt och inspirerande" in table.stdout and "Hållbarhet" not in table.stdout
    unknown = flygblad("items", "--source", "nope", cwd=project)
    assert unknown.returncode == 2 and "no source named 'nope' (sources: ledare, artiklar, nyheter)" in unknown.stderr


def test_a_failing_source_exits_1_and_names_it(project: Path) -> None:
    config = project / "config.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("examples/site/nyheter.xml", "examples/site/borta.xml"),
        encoding="utf-8",
    )
    result = flygblad("run", cwd=project)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"flygblad: source 'nyheter' failed: {(project / 'examples/site/borta.xml').as_uri()}: no such file"
    )
    assert result.stdout.splitlines()[0] == "collected 3 sources: 6 new, 0 updated, 0 unchanged, 1 failed"
    assert (project / "feeds" / "all.atom").is_file(), "the other sources still made their feeds"


@pytest.mark.parametrize(
    "command", [[], ["collect"], ["feeds"], ["run"], ["items"], ["preview"], ["build"], ["issues"]]
)
def test_every_command_has_help(project: Path, command: list[str]) -> None:
    result = flygblad(*command, "--help", cwd=project)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: flygblad")


def test_preview_build_and_issues(project: Path) -> None:
    assert flygblad("collect", cwd=project).returncode == 0
    result = flygblad("preview", "--list", "nyhetsbrev", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["preview/issue.html", "preview/issue.txt", "preview/issue.eml"]
    assert lines[3] == "preview: issue 1 of 'nyhetsbrev', 8 items: Utmanande, lärorikt och inspirerande"
    html = (project / "preview" / "issue.html").read_text(encoding="utf-8")
    assert html.index("Utmanande, lärorikt och inspirerande") < html.index("Robotlyftet ger resultat")
    assert (project / "preview" / "issue.txt").read_text(encoding="utf-8").count("Läs mer: https://") == 5
    assert b"multipart/alternative" in (project / "preview" / "issue.eml").read_bytes()
    assert json.loads(flygblad("issues", "--json", cwd=project).stdout) == [], "a preview freezes nothing"

    built = flygblad("build", "--list", "nyhetsbrev", cwd=project)
    assert (
        built.stdout.strip() == "build: issue 1 of 'nyhetsbrev' frozen, 8 items: Utmanande, lärorikt och inspirerande"
    )
    again = flygblad("build", cwd=project)
    assert again.returncode == 0
    assert again.stdout.strip() == (
        "build: issue 1 of 'nyhetsbrev' is frozen, not yet sent to everyone: "
        "no new issue until it is (flygblad send sends it)"
    ), "one open issue per list: a second build makes none"
    none = flygblad("preview", cwd=project)
    assert none.stdout.strip() == "preview: no new items for list 'nyhetsbrev': there is no next issue yet"

    [issue] = json.loads(flygblad("issues", "--list", "nyhetsbrev", "--json", cwd=project).stdout)
    assert (issue["list"], issue["number"], issue["status"]) == ("nyhetsbrev", 1, "frozen")
    assert issue["subject"] == "Utmanande, lärorikt och inspirerande"
    assert issue["items"][0] == "https://www.produktionslyftet.example/ledare/utmanande-larorikt-och-inspirerande"
    assert issue["html_bytes"] < 102 * 1024
    wrong = flygblad("preview", "--list", "nope", cwd=project)
    assert wrong.returncode == 2 and "no list named 'nope' (lists: nyhetsbrev)" in wrong.stderr


def test_broken_template_names_file_and_line_and_freezes_nothing(project: Path) -> None:
    templates = project / "templates"
    shutil.copytree(BUILTIN_TEMPLATES, templates)
    leader = templates / "partials" / "leader.mjml.j2"
    leader.write_text(
        leader.read_text(encoding="utf-8").replace(
            '<h2 class="headline">{{ item.title }}</h2>', '<h2 class="headline">{{ item.title }</h2>'
        ),
        encoding="utf-8",
    )
    assert flygblad("collect", cwd=project).returncode == 0
    result = flygblad("build", cwd=project)
    assert result.returncode == 1
    assert re.fullmatch(
        r"flygblad: .*/templates/partials/leader\.mjml\.j2:8: template syntax error: .*\n", result.stderr
    )
    assert json.loads(flygblad("issues", "--json", cwd=project).stdout) == []


def test_subscribers_and_send_with_the_file_sender(project: Path) -> None:
    (project / "subs.csv").write_text(
        "email,name\nanna@example.org,Anna\nbo@example.org,\nnot-an-address,X\n", encoding="utf-8"
    )
    imported = flygblad("subscribers", "import", "--list", "nyhetsbrev", "subs.csv", cwd=project)
    assert imported.returncode == 1, "a rejected row makes the exit code say so"
    assert (
        imported.stderr.strip()
        == "flygblad: subs.csv: line 4: 'not-an-address' is not a valid address: An email address must have an @-sign."
    )
    assert imported.stdout.strip().startswith("subscribers import: 2 added")
    assert flygblad("collect", cwd=project).returncode == 0
    dry = flygblad("send", "--dry-run", cwd=project)
    assert dry.stdout.strip().endswith("would go to 2 recipients; nothing sent")
    test = flygblad("send", "--test", "me@example.org", cwd=project)
    assert test.returncode == 0 and test.stdout.startswith(
        "send --test: issue 1 of 'nyhetsbrev' to me@example.org: sent"
    )
    [test_file] = (project / "outbox").iterdir()
    assert b"Subject: [TEST] Utmanande" in test_file.read_bytes()
    assert json.loads(flygblad("issues", "--json", cwd=project).stdout) == [], "--test freezes nothing"
    test_file.unlink()

    run = flygblad("run", cwd=project)
    assert run.returncode == 0, run.stderr
    assert (
        run.stdout.splitlines()[-1]
        == "send: issue 1 of 'nyhetsbrev': 2 sent, 0 deferred, 0 bounced, 0 failed, 0 uncertain (done)"
    )
    files = sorted(p.name for p in (project / "outbox").iterdir())
    assert len(files) == 2 and all(name.startswith("nyhetsbrev.1.") for name in files)
    assert (project / "var" / "secret").stat().st_mode & 0o777 == 0o600
    again = flygblad("run", cwd=project)
    assert again.stdout.splitlines()[-1] == "send: no new items for list 'nyhetsbrev': nothing to send"
    [issue] = json.loads(flygblad("issues", "--json", cwd=project).stdout)
    assert (issue["status"], issue["recipients"]) == ("sent", {"sent": 2})
    listed = flygblad("subscribers", "list", "--list", "nyhetsbrev", "--json", cwd=project)
    assert [s["email"] for s in json.loads(listed.stdout)] == ["anna@example.org", "bo@example.org"]

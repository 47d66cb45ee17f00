"""Several senders on one outbox: PostgreSQL shares it (SKIP LOCKED), SQLite refuses a second sender."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.store import Store
from pipeline.subscribers import ImportReport, batches, candidate
from tests.conftest import postgres_schema
from tests.smtp_sink import Sink

SECRET = "workers-secret-0123456789abcdef-0123456789"


def _flygblad(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    env["FLYGBLAD_SECRET"] = SECRET
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _project(settings: Settings, *, storage: str | None = None, port: int, connections: int = 2) -> Settings:
    text = settings.path.read_text(encoding="utf-8")
    if storage:
        text = text.replace('url = "sqlite:///var/flygblad.db"', f'url = "{storage}"')
        assert storage in text
    text = re.sub(
        r"\[sender\][^\[]*",
        f'[sender]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
        f'security = "none"\nconnections = {connections}\nretry_base_seconds = 0\n\n',
        text,
    )
    settings.path.write_text(text, encoding="utf-8")
    return load_settings(settings.path)


def _subscribe(settings: Settings, count: int) -> list[str]:
    emails = [f"w{n}@example.org" for n in range(count)]
    with Store.open(settings.storage_url) as store:
        from pipeline.collect import collect

        collect(settings, store)
        for batch in batches((candidate(e) for e in emails), 1000):
            store.upsert_subscribers("nyhetsbrev", batch, report=ImportReport())
    return emails


@pytest.fixture
def postgres_project(example_settings):
    with postgres_schema() as url, Sink() as sink:
        yield _project(example_settings, storage=url, port=sink.port), sink


def test_four_senders_share_one_outbox_and_one_dies(postgres_project) -> None:
    settings, sink = postgres_project
    emails = _subscribe(settings, 5000)
    cwd = settings.base_dir
    built = _flygblad("build", cwd=cwd)
    assert built.wait(60) == 0, built.stderr.read()
    senders = [_flygblad("send", "--list", "nyhetsbrev", cwd=cwd) for _ in range(4)]
    deadline = time.monotonic() + 120
    while len(sink.handler.accepted) < 1500 and time.monotonic() < deadline:
        time.sleep(0.01)
    senders[0].send_signal(signal.SIGKILL)
    for sender in senders[1:]:
        out, err = sender.communicate(timeout=300)
        assert sender.returncode == 0, err
    senders[0].wait(30)
    last = _flygblad("send", "--list", "nyhetsbrev", cwd=cwd)
    out, err = last.communicate(timeout=120)
    assert last.returncode == 0, err
    uncertain = set(re.findall(r"uncertain: (\S+@example\.org)", err))
    counts = sink.handler.count()
    assert max(counts.values()) == 1, "nobody got the issue twice"
    assert set(emails) - set(counts) <= uncertain, "only the uncertain may be missing"
    assert len(uncertain) <= 2, "at most the dead sender's two connections were in flight"
    assert out.strip().splitlines()[-1].endswith("(done)")
    with Store.open(settings.storage_url) as store:
        assert store.issue("nyhetsbrev").status == "sent"
        workers = {r.split(":")[1] for r in _workers(store)}
    assert len(workers) >= 3, "the work really was shared between processes"


def _workers(store: Store) -> list[str]:
    from sqlalchemy import select

    from pipeline.store.schema import outbox

    with store.engine.connect() as connection:
        return [w for w in connection.execute(select(outbox.c.worker).distinct()).scalars() if w]


def test_send_workers_flag(postgres_project) -> None:
    settings, sink = postgres_project
    emails = _subscribe(settings, 3000)  # enough that the spawned workers start before the first is done
    result = _flygblad("send", "--list", "nyhetsbrev", "--workers", "3", cwd=settings.base_dir)
    out, err = result.communicate(timeout=300)
    assert result.returncode == 0, err
    assert (
        out.strip().splitlines()[-1]
        == "send: issue 1 of 'nyhetsbrev': 3000 sent, 0 deferred, 0 bounced, 0 failed, 0 uncertain (done)"
    )
    assert sink.handler.count() == {e: 1 for e in emails}
    with Store.open(settings.storage_url) as store:
        assert len({w.split(":")[1] for w in _workers(store)}) == 3, "three processes took part"


def test_sqlite_second_sender_steps_aside(example_settings) -> None:
    with Sink() as sink:
        settings = _project(example_settings, port=sink.port)
        _subscribe(settings, 3)
        database = settings.storage_url.removeprefix("sqlite:///")
        with open(f"{database}.send.lock", "a+") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.write("pid 4242")
            held.flush()
            result = _flygblad("send", "--list", "nyhetsbrev", cwd=settings.base_dir)
            out, err = result.communicate(timeout=60)
        assert result.returncode == 0, "the issue is being sent: nothing failed"
        assert "is being sent by another flygblad send (pid 4242): it carries on there" in out
        assert not sink.handler.accepted
        workers = _flygblad("send", "--workers", "2", cwd=settings.base_dir)
        out, err = workers.communicate(timeout=60)
        assert workers.returncode == 2 and "--workers needs PostgreSQL" in err

"""The signing secret: long enough wherever it comes from, and never left empty by a failed write."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.tokens import load_secret


def _run(settings, *args: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    if secret is not None:
        env["FLYGBLAD_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=settings.base_dir, env=env, capture_output=True, text=True
    )


def test_an_empty_secret_file_is_refused_before_anything_is_signed(example_settings) -> None:
    """A full disk at the file's first creation used to leave it empty, and every link was signed with ''."""
    settings = example_settings
    (settings.base_dir / "var").mkdir(exist_ok=True)
    (settings.base_dir / "var" / "secret").write_text("\n", encoding="utf-8")
    added = _run(settings, "subscribers", "add", "--list", "nyhetsbrev", "a@example.org")
    assert added.returncode == 0
    sent = _run(settings, "send")
    assert sent.returncode == 2, sent.stdout + sent.stderr
    assert "var/secret is empty or too short (0 characters)" in sent.stderr and "web.secret_file" in sent.stderr
    assert not list(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else True


def test_a_short_secret_in_the_environment_is_refused(example_settings) -> None:
    sent = _run(example_settings, "send", secret="only-twenty-chars-xx")
    assert sent.returncode == 2 and "$FLYGBLAD_SECRET is too short (20 characters)" in sent.stderr


def test_a_full_disk_at_creation_leaves_no_secret_file(example_settings, monkeypatch) -> None:
    monkeypatch.delenv("FLYGBLAD_SECRET", raising=False)
    settings = example_settings
    real_fsync = os.fsync

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ConfigError, match="cannot create the secret file .*No space left on device"):
        load_secret(settings)
    folder = settings.resolve("var")
    assert not (folder / "secret").exists() and not list(folder.glob(".secret.*")), "no file, not an empty one"
    monkeypatch.setattr(os, "fsync", real_fsync)
    secret = load_secret(settings)
    assert len(secret) >= 32 and (folder / "secret").read_text(encoding="utf-8").strip() == secret
    assert (folder / "secret").stat().st_mode & 0o777 == 0o600


def test_names_lose_control_characters_and_are_capped_at_the_door(example_settings) -> None:
    """NUL/ESC/OSC reached the To: header and the operator's terminal; a 100,000-character name made a
    header line the relay refused, and the subscriber was then suppressed as bounced."""
    settings = example_settings
    secret = "names-secret-0123456789abcdef-0123456789"
    hostile = "Eve\x1b]0;pwned\x07 Evil\x1b[2J"
    assert (
        _run(settings, "subscribers", "add", "--list", "nyhetsbrev", "e@example.org", "--name", hostile).returncode == 0
    )
    (settings.base_dir / "nul.csv").write_bytes(b"email,name\nn@example.org,Nul\x00Name\n")
    imported = _run(settings, "subscribers", "import", "--list", "nyhetsbrev", "nul.csv")
    assert "Traceback" not in imported.stderr, imported.stderr
    (settings.base_dir / "long.csv").write_text(f"email,name\nl@example.org,{'Å' * 100_000}\n", encoding="utf-8")
    long = _run(settings, "subscribers", "import", "--list", "nyhetsbrev", "long.csv")
    assert long.returncode == 0, long.stderr
    listed = _run(settings, "subscribers", "list", "--list", "nyhetsbrev", "--json")
    names = {row["email"]: row["name"] for row in json.loads(listed.stdout)}
    assert names["e@example.org"] == "Eve ]0;pwned Evil [2J", "no control character is kept"
    assert names["l@example.org"] == "Å" * 200
    assert names.get("n@example.org") in (None, "Nul Name")
    assert not any(ord(c) < 32 for c in listed.stdout.replace("\n", ""))
    sent = _run(settings, "send", secret=secret)
    assert sent.returncode == 0 and " sent," in sent.stdout and "0 failed" in sent.stdout, sent.stdout + sent.stderr
    for eml in settings.outbox_dir.glob("*.eml"):
        assert max(len(line) for line in eml.read_bytes().split(b"\r\n")) <= 998


@hypothesis.settings(max_examples=200, deadline=None)
@given(
    subscriber_id=st.integers(min_value=1, max_value=2**63 - 1),
    list_name=st.from_regex(r"[a-z0-9-]{1,40}", fullmatch=True),
)
def test_unsubscribe_links_are_itsdangerous_signatures(subscriber_id: int, list_name: str) -> None:
    """The unsubscribe token is made with a pre-keyed HMAC for speed: it must be, byte for byte, what
    itsdangerous's Signer makes and reads, so links already in inboxes keep working across versions."""
    from itsdangerous import Signer

    from pipeline.tokens import UNSUBSCRIBE_SALT, Tokens

    secret = "s" * 40
    token = Tokens(secret, previous=("p" * 40,)).unsubscribe(subscriber_id, list_name)
    signer = Signer([secret], salt=UNSUBSCRIBE_SALT, sep=".")
    assert token == signer.sign(f"{subscriber_id}~{list_name}").decode("ascii")
    assert signer.unsign(token) == f"{subscriber_id}~{list_name}".encode()

"""Signed tokens for links in emails: unsubscribe (and, later, confirm).

Tokens are signed with itsdangerous (HMAC) under the site's secret, bound to
the subscriber and the list, and cannot be guessed or altered. The secret comes
from the environment variable named by ``[web] secret_env``; failing that, from
``[web] secret_file``, which is created with a random secret (mode 0600) the
first time it is needed, so a single-machine install works out of the box.

Rotation: set the new secret, and name the variable holding the old one in
``[web] previous_secret_env``. New links are signed with the new secret; links
already in inboxes, signed with the old one, keep working as long as that
variable is set (itsdangerous tries each key, newest first).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from itsdangerous import BadSignature, Signer, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

from pipeline.config import Settings
from pipeline.errors import ConfigError

UNSUBSCRIBE_SALT = "flygblad-unsubscribe"
CONFIRM_SALT = "flygblad-confirm"
CSRF_SALT = "flygblad-csrf"
CLICK_SALT = "flygblad-click"
CONFIRM_MAX_AGE = 7 * 24 * 3600


#: A secret shorter than this is refused wherever it comes from: anyone who guesses it forges links.
MIN_SECRET_LENGTH = 32


def load_secret(settings: Settings) -> str:
    """The signing secret; ConfigError (exit 2) saying how to set one when there is none or it is too short."""
    web = settings.web
    value = os.environ.get(web.secret_env, "").strip()
    if value:
        return _long_enough(settings, value, web.secret_env, "web.secret_env")
    if web.secret_file:
        path = settings.resolve(web.secret_file)
        if not path.exists():
            try:
                create_secret(path)
            except OSError as err:
                raise ConfigError(
                    f"cannot create the secret file {path}: {err.strerror or err}",
                    path=str(settings.path),
                    key="web.secret_file",
                ) from err
        try:
            stored = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"cannot read the secret file {path}: {err}", path=str(settings.path), key="web.secret_file"
            ) from err
        if len(stored) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"the secret file {path} is empty or too short ({len(stored)} characters): delete it and a new one "
                f"is made, or write at least {MIN_SECRET_LENGTH} random characters into it",
                path=str(settings.path),
                key="web.secret_file",
            )
        return stored
    raise ConfigError(
        f"no secret for signing unsubscribe links: set the environment variable {web.secret_env} "
        f"(for example: export {web.secret_env}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')) "
        "or name a [web] secret_file",
        path=str(settings.path),
        key="web.secret_env",
    )


def load_previous_secret(settings: Settings) -> str | None:
    """The secret being rotated out (``[web] previous_secret_env``), accepted for reading links only."""
    name = settings.web.previous_secret_env
    if not name:
        return None
    value = os.environ.get(name, "").strip()
    if not value:
        return None  # the grace period is over: the variable was unset
    return _long_enough(settings, value, name, "web.previous_secret_env")


def _long_enough(settings: Settings, value: str, variable: str, key: str) -> str:
    """*value* from the environment variable *variable*, or ConfigError naming *key* when it is too short."""
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"${variable} is too short ({len(value)} characters): use at least {MIN_SECRET_LENGTH} random characters",
            path=str(settings.path),
            key=key,
        )
    return value


def tokens_for(settings: Settings) -> Tokens:
    """The site's tokens: signed with the current secret, read with it or the previous one during a rotation."""
    previous = load_previous_secret(settings)
    return Tokens(load_secret(settings), previous=(previous,) if previous else ())


def create_secret(path: Path) -> None:
    """Write a new random secret atomically: a full disk or a crash leaves no file, never an empty one.

    The secret goes to a temporary file in the same folder, is flushed to disk,
    and is linked into place only then; a second process racing to do the same
    finds the link taken and keeps the first one's secret.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process made it first: its secret stands
    finally:
        temp.unlink(missing_ok=True)


class Tokens:
    """Makes and reads the signed tokens of one site."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        # itsdangerous signs with the last key and verifies with each, newest first.
        keys = [*previous, secret]
        # A Signer over "id~list" (not a serializer's JSON + zlib): the token is
        # made once per recipient of every issue, so it is kept cheap and short.
        self._unsubscribe = Signer(keys, salt=UNSUBSCRIBE_SALT, sep=".")
        # The HMAC keyed once: itsdangerous derives the key and keys a new HMAC on every sign, half of the
        # 25 us a token took (a million recipients: 20 s of a send). The same bytes as Signer.sign.
        self._unsubscribe_mac = hmac.new(self._unsubscribe.derive_key(), digestmod=hashlib.sha1)
        self._confirm = URLSafeTimedSerializer(keys, salt=CONFIRM_SALT)
        self._csrf = URLSafeTimedSerializer(keys, salt=CSRF_SALT)
        self._click = URLSafeSerializer(keys, salt=CLICK_SALT)

    def unsubscribe(self, subscriber_id: int, list_name: str) -> str:
        """The token in a subscriber's unsubscribe link (it does not expire: RFC 8058 links must keep working)."""
        value = f"{subscriber_id}~{list_name}".encode()
        mac = self._unsubscribe_mac.copy()
        mac.update(value)
        return (value + b"." + base64_encode(mac.digest())).decode("ascii")

    def read_unsubscribe(self, token: str) -> tuple[int, str] | None:
        """(subscriber id, list) from a token, or None for a forged or altered one."""
        try:
            value = self._unsubscribe.unsign(token).decode("ascii")
        except (BadSignature, UnicodeError, ValueError):
            return None
        subscriber_id, _, list_name = value.partition("~")
        if not subscriber_id.isdigit() or not list_name:
            return None
        return int(subscriber_id), list_name

    def confirm(self, subscriber_id: int, list_name: str) -> str:
        """The token in a confirmation link: bound to subscriber and list, valid for 7 days."""
        return self._confirm.dumps([subscriber_id, list_name])

    def read_confirm(self, token: str, max_age: int = CONFIRM_MAX_AGE) -> tuple[int, str] | None:
        """(subscriber id, list) from a confirmation token; None when forged, altered or expired."""
        try:
            subscriber_id, list_name = self._confirm.loads(token, max_age=max_age)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(subscriber_id, int) or not isinstance(list_name, str):
            return None
        return subscriber_id, list_name

    def click(self, list_name: str, number: int, url: str) -> str:
        """A tracked link's token: list, issue and target, signed; nothing about who follows it."""
        return self._click.dumps([list_name, number, url])

    def read_click(self, token: str) -> tuple[str, int, str] | None:
        """(list, issue number, URL) of a tracked link, or None for a forged or altered one."""
        try:
            list_name, number, url = self._click.loads(token)
        except (BadSignature, ValueError, TypeError):
            return None
        if not (isinstance(list_name, str) and isinstance(number, int) and isinstance(url, str)):
            return None
        if not url.startswith(("https://", "http://")):
            return None
        return list_name, number, url

    def csrf(self, nonce: str) -> str:
        """A form's CSRF token: signs the nonce in the visitor's cookie (double submit)."""
        return self._csrf.dumps(nonce)

    def check_csrf(self, token: str, nonce: str, max_age: int = 2 * 3600) -> bool:
        """Whether a form's token matches the visitor's cookie nonce and is less than two hours old."""
        try:
            return bool(nonce) and self._csrf.loads(token, max_age=max_age) == nonce
        except (BadSignature, ValueError, TypeError):
            return False

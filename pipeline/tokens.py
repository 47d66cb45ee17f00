"""Signed tokens for links in emails: unsubscribe (and, later, confirm).

Tokens are signed with itsdangerous (HMAC) under the site's secret, bound to
the subscriber and the list, and cannot be guessed or altered. The secret comes
from the environment variable named by ``[web] secret_env``; failing that, from
``[web] secret_file``, which is created with a random secret (mode 0600) the
first time it is needed, so a single-machine install works out of the box.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer

from pipeline.config import Settings
from pipeline.errors import ConfigError

UNSUBSCRIBE_SALT = "flygblad-unsubscribe"
CONFIRM_SALT = "flygblad-confirm"
CSRF_SALT = "flygblad-csrf"
CONFIRM_MAX_AGE = 7 * 24 * 3600


def load_secret(settings: Settings) -> str:
    """The signing secret; ConfigError saying how to set one when there is none."""
    web = settings.web
    value = os.environ.get(web.secret_env, "").strip()
    if value:
        if len(value) < 16:
            raise ConfigError(
                f"${web.secret_env} is too short: use at least 16 random characters",
                path=str(settings.path),
                key="web.secret_env",
            )
        return value
    if web.secret_file:
        path = settings.resolve(web.secret_file)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
        return Path(path).read_text(encoding="utf-8").strip()
    raise ConfigError(
        f"no secret for signing unsubscribe links: set the environment variable {web.secret_env} "
        f"(for example: export {web.secret_env}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')) "
        "or name a [web] secret_file",
        path=str(settings.path),
        key="web.secret_env",
    )


class Tokens:
    """Makes and reads the signed tokens of one site."""

    def __init__(self, secret: str) -> None:
        # A Signer over "id~list" (not a serializer's JSON + zlib): the token is
        # made once per recipient of every issue, so it is kept cheap and short.
        self._unsubscribe = Signer(secret, salt=UNSUBSCRIBE_SALT, sep=".")
        self._confirm = URLSafeTimedSerializer(secret, salt=CONFIRM_SALT)
        self._csrf = URLSafeTimedSerializer(secret, salt=CSRF_SALT)

    def unsubscribe(self, subscriber_id: int, list_name: str) -> str:
        """The token in a subscriber's unsubscribe link (it does not expire: RFC 8058 links must keep working)."""
        return self._unsubscribe.sign(f"{subscriber_id}~{list_name}").decode("ascii")

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

    def csrf(self, nonce: str) -> str:
        """A form's CSRF token: signs the nonce in the visitor's cookie (double submit)."""
        return self._csrf.dumps(nonce)

    def check_csrf(self, token: str, nonce: str, max_age: int = 2 * 3600) -> bool:
        """Whether a form's token matches the visitor's cookie nonce and is less than two hours old."""
        try:
            return bool(nonce) and self._csrf.loads(token, max_age=max_age) == nonce
        except (BadSignature, ValueError, TypeError):
            return False

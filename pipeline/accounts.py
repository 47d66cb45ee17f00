"""The admin's accounts and sign-in: the use cases behind ``flygblad admin`` and ``/admin/login``.

Passwords are hashed with argon2id (argon2-cffi, RFC 9106's defaults) and never
stored, logged or echoed. A session is a random cookie whose SHA-256 the store
keeps, with its own CSRF token; it ends after ``IDLE`` without use or ``LONGEST``
in all, and when its account's password changes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING

from pipeline.errors import FlygbladError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from pipeline.store import AdminSession, Store

#: Shorter passwords are refused (NIST SP 800-63B asks at least 8; an admin can send to every subscriber).
MIN_PASSWORD = 12
#: Longer ones too: argon2 hashes anything, but a 1 MB "password" is an attack, not a password.
MAX_PASSWORD = 1024
IDLE = timedelta(hours=8)
LONGEST = timedelta(days=7)


class AccountError(FlygbladError):
    """An account could not be made or changed (the message says why, never the password)."""


@cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """A hash to check unknown addresses against, so a sign-in takes as long whether the account exists."""
    return _hasher().hash(secrets.token_urlsafe(16))


def _checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is too long: at most {MAX_PASSWORD} characters")
    return password


def add_admin(store: Store, email: str, password: str) -> str:
    """Make an account; returns the address as stored. AccountError for a bad address, password or a duplicate."""
    from pipeline.subscribers import SubscriberError, check_address

    try:
        address = check_address(email).lower()
    except SubscriberError as err:
        raise AccountError(f"not an email address: {err}") from None
    if not store.add_admin(address, _hasher().hash(_checked_password(password))):
        raise AccountError(f"{address} has an account already (flygblad admin password {address} changes it)")
    return address


def set_password(store: Store, email: str, password: str) -> None:
    """A new password for an account; every session of it ends."""
    if not store.set_admin_password(email, _hasher().hash(_checked_password(password))):
        raise AccountError(f"no account {email!r}")


def remove_admin(store: Store, email: str) -> None:
    """Delete an account (its sessions end)."""
    if not store.remove_admin(email):
        raise AccountError(f"no account {email!r}")


@dataclass(frozen=True)
class SignedIn:
    """A new session: the cookie's value and the token its forms carry."""

    email: str
    token: str
    csrf: str


def sign_in(store: Store, email: str, password: str) -> SignedIn | None:
    """A session for the right address and password; None otherwise (saying nothing about which was wrong)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    admin = store.admin(email.strip()[:254]) if email else None
    if len(password) > MAX_PASSWORD:
        return None
    try:
        hasher.verify(admin.password_hash if admin else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if admin is None:
        return None
    if hasher.check_needs_rehash(admin.password_hash):  # stronger parameters since it was made
        store.set_admin_password(admin.email, hasher.hash(password))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    store.open_admin_session(admin, token, csrf)
    return SignedIn(admin.email, token, csrf)


def session(store: Store, token: str) -> AdminSession | None:
    """The session a cookie holds, if it is still open."""
    if not token or len(token) > 200:
        return None
    return store.admin_session(token, IDLE, LONGEST)


def sign_out(store: Store, token: str) -> None:
    """End the session a cookie holds."""
    if token:
        store.close_admin_session(token)


__all__ = ["AccountError", "SignedIn", "add_admin", "remove_admin", "session", "set_password", "sign_in", "sign_out"]

"""Email addresses as flygblad keeps and sends them: one normal form, decided at the door.

A domain is kept in its ASCII form (IDNA, ``ivan@xn--exmple-cua.org`` for
``ivan@exämple.org``): every SMTP server and API takes it, and the header
functions of the standard library need it. A local part that is not ASCII
(``ivån@example.org``) stays as it is: it can only be delivered over SMTPUTF8
(RFC 6531), so the SMTP sender checks that the server offers it and otherwise
fails that one recipient with the reason.
"""

from __future__ import annotations


def ascii_domain(address: str) -> str:
    """*address* with its domain IDNA-encoded; an address that is ASCII already comes back as it is."""
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        encoded = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return address  # not a domain IDNA can encode: the sender reports it for this recipient
    return f"{local}@{encoded}"


def needs_smtputf8(address: str) -> bool:
    """True when the address can only travel over SMTPUTF8 (its local part is not ASCII)."""
    return not ascii_domain(address).isascii()


__all__ = ["ascii_domain", "needs_smtputf8"]

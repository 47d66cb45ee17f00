"""The visitor's address behind a TLS proxy: ``[web] trusted_proxies``.

Behind nginx or Caddy every request comes from the proxy, so the sign-up rate
limit would count the whole world as one visitor. X-Forwarded-For says who the
visitor is, but anyone can send that header: it is believed only as far as the
operator says, as werkzeug's ProxyFix does for a count, and as nginx's
``set_real_ip_from`` does for networks:

* a count *n*: exactly *n* proxies stand in front of ``serve``; the address the
  *n*-th proxy from the end saw is the client (``X-Forwarded-For``'s *n*-th
  entry from the right). A shorter header than promised is ignored.
* networks: the chain (the header's entries, then the peer) is walked from the
  right while an address is inside a trusted network; the first address outside
  them is the client.

Without the setting (the default, 0) the header is ignored and removed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """WSGI middleware setting ``REMOTE_ADDR`` to the visitor's address as far as trusted proxies tell it."""

    def __init__(self, app: Callable[..., Any], trusted: int | Iterable[str]) -> None:
        self.app = app
        self.count = trusted if isinstance(trusted, int) else 0
        self.networks: tuple[Network, ...] = (
            () if isinstance(trusted, int) else tuple(ipaddress.ip_network(n, strict=False) for n in trusted)
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        forwarded = [part.strip() for part in environ.pop("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        client = self.client(environ.get("REMOTE_ADDR", ""), forwarded)
        if client is not None:
            environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)

    def client(self, peer: str, forwarded: list[str]) -> str | None:
        """The visitor's address, or None to keep the peer's."""
        if self.count:
            if len(forwarded) < self.count:
                return None
            return _address(forwarded[-self.count])
        if not self.networks or not self._trusted(peer):
            return None
        for entry in reversed(forwarded):
            address = _address(entry)
            if address is None:
                return None  # a garbled entry: nothing left of it can be believed
            if not self._trusted(address):
                return address
        return _address(forwarded[0]) if forwarded else None

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def _address(entry: str) -> str | None:
    """An IP address from an X-Forwarded-For entry (``[v6]:port`` and ``v4:port`` forms too), or None."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None

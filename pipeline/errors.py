"""Every error flygblad raises on purpose, under one root.

Each class carries what a person needs to act on it: the key and file for a bad
config, the URL for a source that failed. The CLI turns these into a one-line
message and an exit code; nothing else should need to catch bare ``Exception``.
"""

from __future__ import annotations

from typing import Any


class FlygbladError(Exception):
    """Root of all of flygblad's own errors."""


class ConfigError(FlygbladError):
    """The configuration cannot be used: names the file and the key."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = f"{path}: " if path else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")


class SourceError(FlygbladError):
    """A source, or one page of it, could not be collected: names the URL and cause."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        self.message = message
        super().__init__(f"{url}: {message}" if url else message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a process that parses feeds and read again here: pickle by what the constructor takes.
        return (_source_error, (type(self), self.message, self.url))


def _source_error(kind: type[SourceError], message: str, url: str | None) -> SourceError:
    return kind(message, url=url)


class StoreError(FlygbladError):
    """The store could not be opened or migrated."""


class FeedError(FlygbladError):
    """A feed could not be built or written."""


class RenderError(FlygbladError):
    """An issue could not be rendered (template or MJML error)."""


class TooBig(RenderError):
    """The issue's HTML is over Gmail's clipping size: fewer items would fit."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message)


class DeliveryError(FlygbladError):
    """A message could not be handed to the sender."""

"""The types that cross stages: every stage may import this module, and it imports none of them.

(lemon24/reader's public ``types.py``.) A source makes an :class:`Item`; the
store keeps it as a :class:`StoredItem`; an issue is an :class:`Issue`; a
subscriber is a :class:`Subscriber` (a :class:`Candidate` before it is stored);
the outbox ledger speaks in :class:`OutboxRow` and :class:`LedgerUpdate`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Literal

Category = Literal["leader", "article"]
#: The statuses of an issue that is frozen but not yet sent to everyone (at most one per list).
OPEN_STATUSES = ("frozen", "sending")
#: Unfinished: open, or held behind another (see migration 0006).
UNFINISHED_STATUSES = (*OPEN_STATUSES, "held")
Status = Literal["unconfirmed", "active", "unsubscribed", "bounced", "complained"]
STATUSES: tuple[Status, ...] = ("unconfirmed", "active", "unsubscribed", "bounced", "complained")
#: Statuses an import or add never changes: the person said no, or the address does not work.
SUPPRESSED: frozenset[str] = frozenset({"unsubscribed", "bounced", "complained"})


#: The widths a lead image is kept at: twice what the templates show (200 px cards, 600 px leaders), rounded
#: up so a card shown at a phone's full text width (about 320 px) is sharp too.
MEDIA_WIDTHS = (640, 1200)


@dataclass(frozen=True)
class Media:
    """An item's lead image as flygblad keeps it: files named by content hash, one per width it is shown at."""

    url: str  # where the source had it
    digest: str
    ext: str  # "jpg" or "png"
    width: int  # of the image as fetched
    height: int

    def file_for(self, width: int) -> str:
        """The file of the rendition at most *width* pixels wide: ``{digest}-{width}.{ext}``."""
        return f"{self.digest}-{min(width, self.width)}.{self.ext}"

    def size_at(self, width: int) -> tuple[int, int]:
        """(width, height) in pixels when shown at most *width* wide, keeping the proportions."""
        shown = min(width, self.width)
        return shown, max(1, round(self.height * shown / self.width))


@dataclass(frozen=True)
class Item:
    """One leader or article. ``id`` is its canonical URL or its feed guid: stable across runs."""

    id: str
    source: str
    category: Category
    url: str
    title: str
    author: str | None = None
    author_role: str | None = None
    published: datetime | None = None
    modified: datetime | None = None
    summary: str | None = None
    body_html: str = ""
    image: str | None = None
    image_alt: str | None = None
    language: str | None = None
    #: An entry without a title of its own (a microblog post, a link-blog entry): ``title`` is its first words,
    #: made to name it in lists; templates and feeds show it as a note.
    note: bool = False

    def content_hash(self) -> str:
        """A digest of everything a reader sees: a change in any field changes it.

        Worked out once per item (the fields cannot change) and kept with it, pickled too: an item read in
        a collect's reading process (:class:`~pipeline.sources.Found`) reaches the store with its digest,
        which was a quarter of the store's time for a batch of new items (bench.hosts).
        """
        known: str | None = self.__dict__.get("_content_hash")
        if known is None:
            data = {f.name: getattr(self, f.name) for f in fields(self)}  # plain values: no deep copy
            if not data["note"]:
                del data["note"]  # so an item collected before notes existed keeps its digest (no false "updated")
            for key in ("published", "modified"):
                data[key] = data[key].isoformat() if data[key] else None
            encoded = json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")
            known = hashlib.sha256(encoded).hexdigest()
            object.__setattr__(self, "_content_hash", known)
        return known


@dataclass(frozen=True)
class Validators:
    """What a server (or the disk) said identifies this version of a page."""

    etag: str | None = None
    last_modified: str | None = None

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)


@dataclass(frozen=True)
class Subscriber:
    """One person on one list."""

    id: int
    list: str
    email: str
    name: str | None
    language: str | None
    status: str
    created: datetime
    changed: datetime


@dataclass(frozen=True)
class Candidate:
    """A checked address with what came with it, ready to be stored."""

    email: str
    name: str | None = None
    language: str | None = None

    @property
    def key(self) -> str:
        """The address as the list knows it: lower-cased."""
        return self.email.lower()


@dataclass
class ImportReport:
    """What an add or import did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the end of the command."""
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.suppressed} kept suppressed, {self.duplicates} duplicate rows, {len(self.problems)} rejected"
        )


@dataclass(frozen=True)
class StoredItem:
    """An item as the store has it: the item, a digest of it, and when it was first and last changed."""

    item: Item
    content_hash: str
    first_seen: datetime
    updated: datetime


@dataclass(frozen=True)
class Issue:
    """A frozen issue of a list: its items, subject, preheader and rendered HTML and text.

    ``html`` and ``text`` hold the per-recipient placeholders (see
    :mod:`pipeline.render`); ``nonce`` is their per-issue secret part.
    """

    id: int
    list: str
    number: int
    subject: str
    preheader: str
    html: str
    text: str
    nonce: str
    language: str
    created: datetime
    cutoff: datetime
    status: str
    item_ids: tuple[str, ...]
    paused: str | None = None  # why an unfinished issue stopped

    @property
    def unfinished(self) -> bool:
        """Frozen, or sent to some but not yet all of its recipients."""
        return self.status in UNFINISHED_STATUSES


@dataclass(frozen=True)
class DraftItem:
    """A communicator's choice about one item of a list's next issue."""

    item_id: str
    excluded: bool = False  # left out of this issue (and passed over for good when it is frozen)
    included: bool = False  # put in, though it is not new (or is older than the issue's window)
    position: int | None = None  # where it goes among the issue's items (1 = first), else the usual order
    summary: str | None = None  # a shorter summary for this issue


@dataclass(frozen=True)
class DraftChoices:
    """What a communicator decided about a list's next issue before it is frozen (nothing: an empty one)."""

    list: str
    note: str | None = None  # Markdown, shown after the greeting
    subject: str | None = None
    preheader: str | None = None
    approved_at: datetime | None = None
    approved_by: str | None = None
    items: dict[str, DraftItem] = field(default_factory=dict)
    changed: datetime | None = None
    notified_at: datetime | None = None  # when the editors were told it waits for them

    @property
    def approved(self) -> bool:
        return self.approved_at is not None


@dataclass(frozen=True)
class OutboxRow:
    """One recipient of one issue, as the ledger has it."""

    issue_id: int
    subscriber_id: int
    email: str
    name: str | None
    status: str
    attempts: int
    message_id: str | None
    last_reply: str | None
    language: str | None
    next_attempt: datetime | None


@dataclass(frozen=True)
class LedgerUpdate:
    """An outcome to record: the row, its new status and what the sender said."""

    subscriber_id: int
    status: str  # sent, deferred, bounced, failed
    message_id: str
    provider_id: str | None = None
    reply: str = ""
    next_attempt: datetime | None = None


@dataclass(frozen=True)
class QueuedMail:
    """One transactional message waiting in the queue, as it was claimed."""

    id: int
    kind: str
    list: str
    subscriber_id: int
    email: str
    name: str | None
    attempts: int


__all__ = [
    "Candidate",
    "Category",
    "ImportReport",
    "Issue",
    "Item",
    "LedgerUpdate",
    "OPEN_STATUSES",
    "OutboxRow",
    "QueuedMail",
    "STATUSES",
    "SUPPRESSED",
    "Status",
    "StoredItem",
    "Subscriber",
    "UNFINISHED_STATUSES",
    "Validators",
]

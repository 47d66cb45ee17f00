"""The tables, in SQLAlchemy Core. Changed only through Alembic migrations.

Nothing here is SQLite-only: the same tables run on PostgreSQL. Times are stored
in UTC and always come back timezone-aware (:class:`UTCDateTime`), because
SQLite keeps no offset and a naive datetime must never leak into a feed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored as UTC and returned as UTC on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; every time must carry its zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


items = Table(
    "items",
    metadata,
    Column("id", Text, primary_key=True),  # canonical URL or feed guid
    Column("source", String(100), nullable=False),
    Column("category", String(20), nullable=False),
    Column("url", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("author", Text),
    Column("author_role", Text),
    Column("published", UTCDateTime()),
    Column("modified", UTCDateTime()),
    Column("summary", Text),
    Column("body_html", Text, nullable=False),
    Column("image", Text),
    Column("image_alt", Text),
    Column("language", String(20)),
    Column("content_hash", String(64), nullable=False),
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),  # when the content last changed
    Column("note", Boolean, nullable=False, server_default=false()),  # no title of its own (migration 0009)
    Index("ix_items_source_published", "source", "published"),
    Index("ix_items_first_seen", "first_seen"),
)

#: The sources that list an item (migration 0009): the category each gives it and when each first saw it.
#: ``items.source`` is the first of them, whose content the item has.
item_sources = Table(
    "item_sources",
    metadata,
    Column("item_id", Text, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("source", String(100), primary_key=True),
    Column("category", String(20), nullable=False),
    Column("first_seen", UTCDateTime(), nullable=False),
    Index("ix_item_sources_source_first_seen", "source", "first_seen"),
)

#: Lead images fetched at collect time (migration 0010): by the SHA-256 of their URL.
media = Table(
    "media",
    metadata,
    Column("url_key", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("status", String(20), nullable=False),  # ok, failed
    Column("digest", String(64)),
    Column("ext", String(8)),
    Column("width", Integer),
    Column("height", Integer),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("tried", UTCDateTime(), nullable=False),
)

#: Per URL: what the server said identifies the version we have (conditional GET),
#: and for index pages and feeds the item URLs/ids they listed (so a 304 needs no parse).
fetch_state = Table(
    "fetch_state",
    metadata,
    Column("url", Text, primary_key=True),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("links", Text),  # JSON array, for index pages and feeds
    Column("checked", UTCDateTime(), nullable=False),
)

#: What each origin's robots.txt said, kept a day (migration 0016): rules (with the text), none (4xx) or
#: disallow (5xx). An unreachable one is not kept: it is asked again.
robots = Table(
    "robots",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("kind", String(10), nullable=False),
    Column("body", Text),
    Column("fetched", UTCDateTime(), nullable=False),
)

#: The statuses of an issue that is frozen but not yet sent to everyone (at most one per list).
OPEN_STATUSES = ("frozen", "sending")
OPEN_CONDITION = "status IN ('frozen', 'sending')"

#: One row per list: every freeze of a list locks its row, so one process at a time decides what is new.
lists = Table(
    "lists",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("locked_at", UTCDateTime()),
)

#: A frozen issue of a list: what a preview showed is what is sent, byte for byte.
issues = Table(
    "issues",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("list", String(100), nullable=False),
    Column("number", Integer, nullable=False),  # 1, 2, 3 … per list
    Column("subject", Text, nullable=False),
    Column("preheader", Text, nullable=False),
    Column("html", Text, nullable=False),  # with per-recipient placeholders
    Column("text", Text, nullable=False),
    Column("nonce", String(32), nullable=False),  # the placeholders' per-issue secret part
    Column("language", String(20), nullable=False),
    Column("created", UTCDateTime(), nullable=False),
    # The newest first_seen among the items this issue considered: the next issue takes newer ones.
    Column("cutoff", UTCDateTime(), nullable=False),
    Column("status", String(20), nullable=False),  # frozen, sending, sent (held: see migration 0006)
    Column("paused", Text),  # why an unfinished issue stopped, in words
    UniqueConstraint("list", "number", name="uq_issues_list_number"),
    # At most one open issue per list: a second process that wants to freeze finds it and joins it.
    Index(
        "uq_issues_open_per_list",
        "list",
        unique=True,
        sqlite_where=text(OPEN_CONDITION),
        postgresql_where=text(OPEN_CONDITION),
    ),
)

issue_items = Table(
    "issue_items",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("item_id", Text, ForeignKey("items.id"), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("list", String(100)),  # the issue's list: an item is in at most one issue of a list
    Index("uq_issue_items_list_item", "list", "item_id", unique=True),
)

#: The people on a list. ``email_key`` is the address lower-cased: one row per address per list.
subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("list", String(100), nullable=False),
    Column("email", Text, nullable=False),
    Column("email_key", Text, nullable=False),
    Column("name", Text),
    Column("language", String(20)),
    Column("status", String(20), nullable=False),  # unconfirmed, active, unsubscribed, bounced, complained
    Column("created", UTCDateTime(), nullable=False),
    Column("changed", UTCDateTime(), nullable=False),
    UniqueConstraint("list", "email_key", name="uq_subscribers_list_email_key"),
    Index("ix_subscribers_list_status_id", "list", "status", "id"),
    sqlite_autoincrement=True,  # an id is never handed out twice (migration 0008)
)

#: The outbox ledger: one row per (issue, subscriber), each outcome committed as it happens.
#: Clicks per issue and link, never per person (migration 0013).
link_clicks = Table(
    "link_clicks",
    metadata,
    Column("list", String(100), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("url_key", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("clicks", Integer, nullable=False, server_default="0"),
)

#: A list's next issue as a communicator shaped it, before it is frozen (migration 0012).
drafts = Table(
    "drafts",
    metadata,
    Column("list", String(100), primary_key=True),
    Column("note", Text),  # Markdown
    Column("subject", Text),
    Column("preheader", Text),
    Column("approved_at", UTCDateTime()),
    Column("approved_by", Text),
    Column("changed", UTCDateTime(), nullable=False),
    Column("notified_at", UTCDateTime()),  # when the editors were told it waits (migration 0014)
)
draft_items = Table(
    "draft_items",
    metadata,
    Column("list", String(100), primary_key=True),
    Column("item_id", Text, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("excluded", Boolean, nullable=False, server_default=false()),
    Column("included", Boolean, nullable=False, server_default=false()),
    Column("position", Integer),
    Column("summary", Text),
)

#: An issue in the other languages its subscribers read (migration 0011).
issue_versions = Table(
    "issue_versions",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("language", String(20), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("preheader", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("subscriber_id", Integer, primary_key=True),
    Column("email", Text, nullable=False),
    Column("name", Text),
    Column("language", String(20)),  # the subscriber's, when the outbox was made (migration 0011)
    # pending, sending, sent, deferred, bounced, failed, uncertain
    Column("status", String(20), nullable=False),
    Column("message_id", Text),
    Column("provider_id", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_reply", Text),
    Column("next_attempt", UTCDateTime()),
    Column("claimed_at", UTCDateTime()),
    Column("worker", String(100)),
    Column("sent_at", UTCDateTime()),
    Column("changed", UTCDateTime(), nullable=False),
    Index("ix_outbox_issue_status", "issue_id", "status", "subscriber_id"),
)

#: The admin's accounts (migration 0015): an argon2id hash, never the password.
admins = Table(
    "admins",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", Text, nullable=False),  # lower case
    Column("password_hash", Text, nullable=False),
    Column("created", UTCDateTime(), nullable=False),
    Column("last_login", UTCDateTime()),
    UniqueConstraint("email"),
)
#: Signed-in browsers, by the SHA-256 of their cookie, each with its CSRF token.
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("admin_id", Integer, ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created", UTCDateTime(), nullable=False),
    Column("seen", UTCDateTime(), nullable=False),
)
#: What the last collect of each source did (migration 0015).
source_runs = Table(
    "source_runs",
    metadata,
    Column("source", String(100), primary_key=True),
    Column("finished", UTCDateTime(), nullable=False),
    Column("new", Integer, nullable=False),
    Column("updated", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("error", Text),
    Column("problems", Text),
)

#: One row per schedule firing, written before the firing acts: (schedule, due) is unique,
#: so a second scheduler, or a restart, that reaches the same firing finds it taken.
firings = Table(
    "firings",
    metadata,
    Column("schedule", String(100), primary_key=True),
    Column("due", UTCDateTime(), primary_key=True),
    Column("status", String(20), nullable=False),  # running, done, no-news, skipped, failed
    Column("detail", Text),
    Column("issue_number", Integer),
    Column("started", UTCDateTime()),
    Column("finished", UTCDateTime()),
    Column("worker", String(100)),  # host:pid of the process running it
)

#: Transactional mail (confirmations), stored before it is sent and retried like the outbox:
#: pending, sending, sent, deferred, failed, uncertain. At most one unsent message of a kind per subscriber.
mail_queue = Table(
    "mail_queue",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),  # confirm
    Column("list", String(100), nullable=False),
    Column("subscriber_id", Integer, nullable=False),
    Column("email", Text, nullable=False),
    Column("name", Text),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("message_id", Text),
    Column("last_reply", Text),
    Column("next_attempt", UTCDateTime()),
    Column("claimed_at", UTCDateTime()),
    Column("worker", String(100)),
    Column("created", UTCDateTime(), nullable=False),
    Column("changed", UTCDateTime(), nullable=False),
    Index("ix_mail_queue_status", "status", "next_attempt"),
    Index(
        "uq_mail_queue_unsent",
        "kind",
        "subscriber_id",
        unique=True,
        sqlite_where=text("status IN ('pending', 'sending', 'deferred')"),
        postgresql_where=text("status IN ('pending', 'sending', 'deferred')"),
    ),
)

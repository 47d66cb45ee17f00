"""Settings: loaded once from ``config.toml``, validated once, then read-only.

Precedence is command-line flag > environment > file > default. Any key of a
plain table can be set from the environment as ``FLYGBLAD_<TABLE>_<KEY>``
(``FLYGBLAD_STORAGE_URL``, ``FLYGBLAD_HTTP_DELAY_SECONDS``); the value is read
as a TOML value when it parses as one, else as a string. Relative paths are
relative to the config file, never to the current directory. Secrets never live
in the file: it names the environment variable that holds them.

Every error names the file and the key, e.g.::

    config.toml: sources[2].catgory: unknown key (did you mean 'category'?)
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline import ENV_CONFIG
from pipeline.errors import ConfigError

DEFAULT_CONFIG = "config.toml"
ENV_PREFIX = "FLYGBLAD_"

#: Keys that would hold a secret: they are refused with advice instead of "unknown key".
SECRET_KEYS = {"password", "api_key", "secret", "token"}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class _Table(BaseModel):
    """Base of every config table: strict types, unknown keys refused, read-only."""

    # inf and nan are refused everywhere: `delay_seconds = inf` hung a collect, `retry_base_seconds = 1e300`
    # overflowed mid-send.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _check_selector(value: str | None) -> str | None:
    if value is None:
        return None
    import soupsieve  # here, not at the top: `flygblad --help` loads no config and needs no HTML parser

    try:
        soupsieve.compile(value)
    except soupsieve.SelectorSyntaxError as err:
        raise ValueError(f"not a valid CSS selector: {value!r} ({str(err.args[0]).splitlines()[0]})") from None
    return value


def _check_http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
        raise ValueError(f"must be an http(s) URL without spaces or line breaks, got {value!r}")
    return value.rstrip("/")


def _installed(module: str) -> bool:
    """Whether *module* can be imported (an optional extra is installed), without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _public_ok(url: str) -> bool:
    """Whether *url* may be the public address in emails: https, or plain http on this machine only."""
    return url.startswith("https://") or bool(
        re.match(r"^http://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])(:\d+)?(/|$)", url)
    )


def _one_line(value: str | None) -> str | None:
    """Text that ends up in a header (a list's title in List-Id, From, a subject): no line breaks."""
    if isinstance(value, str) and any(c in value for c in "\r\n\x00"):
        raise ValueError(f"must be one line (it goes into an email header), got {value!r}")
    return value


class SiteSettings(_Table):
    """``[site]``: the organisation's site that the feeds and issues belong to."""

    title: str = Field(min_length=1)
    base_url: str
    language: str = "sv"
    timezone: str = "Europe/Stockholm"

    _base = field_validator("base_url")(_check_http_url)
    _title = field_validator("title", mode="before")(_one_line)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not re.match(r"^[a-zA-Z]{2,3}(-[A-Za-z0-9]{2,8})*$", value):
            raise ValueError(f"must be a language tag such as 'sv' or 'en-GB', got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Europe/Stockholm')") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        """The site's time zone, for dates that carry none."""
        return ZoneInfo(self.timezone)


class StorageSettings(_Table):
    """``[storage]``: where items (and later issues and subscribers) are kept."""

    url: str | None = None  # default: sqlite file next to the config

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z][a-z0-9+]*://", value):
            raise ValueError(f"must be an SQLAlchemy URL such as 'sqlite:///flygblad.db', got {value!r}")
        return value


class SelectSettings(_Table):
    """``[sources.select]``: CSS selectors that override automatic extraction."""

    title: str | None = None
    author: str | None = None
    date: str | None = None
    body: str | None = None
    image: str | None = None

    _selectors = field_validator("title", "author", "date", "body", "image")(_check_selector)


class SourceSettings(_Table):
    """``[[sources]]``: one website section or feed to collect from."""

    name: str
    kind: Literal["html", "feed"]
    url: str = Field(min_length=1)
    category: Literal["leader", "article"]
    title: str | None = None
    links: str | None = None
    max_items: int = Field(default=20, ge=1, le=1000)
    select: SelectSettings | None = None

    _links = field_validator("links")(_check_selector)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be lower-case letters, digits, '-' or '_' (it names feed files), got {value!r}")
        if value == "all":
            raise ValueError("'all' is the name of the feed of every source together")
        return value

    @field_validator("url")
    @classmethod
    def _source_url(cls, value: str) -> str:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value) and not re.match(r"^(https?|file)://", value):
            raise ValueError(f"must be an http(s) URL, a file:// URL or a local path, got {value!r}")
        return value


class FeedSettings(_Table):
    """``[feeds]``: where the RSS, Atom and JSON feeds are written."""

    dir: str = "feeds"
    max_items: int = Field(default=50, ge=1, le=10000)
    #: Where readers fetch the feed files; the feeds' self links (and the archive's) start with it.
    base_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _feeds_base(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)


class HttpSettings(_Table):
    """``[http]``: how sources are fetched over the network."""

    user_agent: str | None = None
    connect_timeout: float = Field(default=5.0, gt=0, le=3600)
    read_timeout: float = Field(default=20.0, gt=0, le=3600)
    retries: int = Field(default=2, ge=0, le=10)
    backoff_seconds: float = Field(default=0.5, ge=0, le=3600)
    delay_seconds: float = Field(default=0.5, ge=0, le=3600)
    #: Requests a collect has in flight at once, to different hosts (each host still gets one request at a
    #: time, delay_seconds apart; the waits do not take a slot). A request in flight is a thread waiting on
    #: the network, not a core: 32 lets the per-host delay, not this pool, set the pace of a collect of 100
    #: hosts 100 ms away (700 requests through 16 slots take 4.4 s, more than each host's own 3.5 s of
    #: delays); the CPU work is bounded separately, by the reading processes.
    concurrency: int = Field(default=32, ge=1, le=256)
    respect_robots: bool = True
    # Scraped pages are untrusted: a gzip bomb or a server dripping one byte at a time must not hang
    # or exhaust a collect.
    max_bytes: int = Field(default=10_000_000, ge=10_000, le=1_000_000_000)
    total_timeout: float = Field(default=60.0, gt=0, le=3600)


class OrganisationSettings(_Table):
    """``[organisation]``: who sends the newsletters; shown in every footer."""

    name: str = Field(min_length=1)
    address: str = Field(min_length=1)  # postal address: bulk-mail rules require one in the footer


def _check_mailbox(value: str | None) -> str | None:
    """``"Name <address>"`` or a bare address, with the address validated (no DNS)."""
    if value is None:
        return None
    from email.utils import parseaddr

    from email_validator import EmailNotValidError, validate_email

    if "\r" in value or "\n" in value:
        raise ValueError("must be on one line")
    name, address = parseaddr(value)
    if not address or "@" not in address:
        raise ValueError(f"must be an address such as 'Namn <nyhetsbrev@example.org>', got {value!r}")
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as err:
        raise ValueError(f"{address!r} is not a valid address: {err}") from None
    return value


def contrast(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours (1 to 21)."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


SUBJECT_FIELDS = ("first_title", "list_title", "date", "count", "number")


class ListSettings(_Table):
    """``[[lists]]``: a mailing list and how its issues look."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    name: str
    title: str = Field(min_length=1)
    from_: str = Field(alias="from")
    reply_to: str | None = None
    sources: tuple[str, ...] | None = Field(default=None, strict=False)
    language: str | None = None
    max_items: int = Field(default=20, ge=1, le=100)
    #: A list's first issue takes only what was published in these last days (not the back catalogue).
    first_issue_days: int = Field(default=14, ge=1, le=36500)
    #: "required": an issue is frozen and sent only once a communicator approved its draft.
    approval: Literal["auto", "required"] = "auto"
    #: Who is mailed the issue when it waits for approval (a firing found the draft unapproved).
    editors: tuple[str, ...] = Field(default=(), strict=False)
    subject: str = "{first_title}"
    double_opt_in: bool = True
    #: Branding: the list's colour (buttons and links; at least 4.5:1 against white, WCAG AA), its logo
    #: (an image file, kept and served like the lead images) and a line of its own in the footer.
    #: Count clicks per link of each issue through signed redirect links (aggregate only: never who).
    track_clicks: bool = False
    accent: str = "#0b4f8a"
    logo: str | None = None
    footer: str | None = None

    _mailboxes = field_validator("from_", "reply_to")(_check_mailbox)

    @field_validator("editors")
    @classmethod
    def _editors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_mailbox(address) or address for address in value)

    _footer = field_validator("footer", mode="before")(_one_line)

    @field_validator("accent")
    @classmethod
    def _accent(cls, value: str) -> str:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
            raise ValueError(f"must be a colour written #rrggbb, got {value!r}")
        ratio = contrast(value, "#ffffff")
        if ratio < 4.5:
            raise ValueError(
                f"{value} on white has a contrast of {ratio:.2f}:1; buttons and links need at least 4.5:1 "
                "(WCAG AA): choose a darker colour"
            )
        return value.lower()

    _headers = field_validator("title", "subject", "from_", "reply_to", mode="before")(_one_line)

    @field_validator("name")
    @classmethod
    def _list_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be lower-case letters, digits, '-' or '_', got {value!r}")
        return value

    @field_validator("language")
    @classmethod
    def _list_language(cls, value: str | None) -> str | None:
        return None if value is None else SiteSettings._language(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        import string

        try:
            names = {field for _, field, _, _ in string.Formatter().parse(value) if field is not None}
        except ValueError as err:
            raise ValueError(f"not a valid subject template: {err}") from None
        unknown = names - set(SUBJECT_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{sorted(unknown)[0]}}} (use {', '.join('{' + f + '}' for f in SUBJECT_FIELDS)})"
            )
        return value


class RenderSettings(_Table):
    """``[render]``: where the newsletter templates are."""

    templates: str = "templates"


class WebSettings(_Table):
    """``[web]``: the public side: the address every link in an email points to, and its secret."""

    base_url: str | None = None  # default: [site] base_url
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    subscribe_rate_limit: str = "10 per minute"
    #: Sign-ins to /admin/ a client may try, and tries at one account from anywhere (flask-limiter syntax).
    login_rate_limit: str = "5 per minute"
    login_rate_limit_per_account: str = "20 per hour"
    secret_env: str = "FLYGBLAD_SECRET"
    secret_file: str | None = None
    previous_secret_env: str | None = None
    trusted_proxies: int | list[str] = 0
    unsubscribe_mailto: str | None = None
    postmark_webhook_user: str | None = None
    postmark_webhook_password_env: str | None = None
    sendgrid_webhook_key_env: str | None = None
    mailgun_webhook_signing_key_env: str | None = None

    _mailto = field_validator("unsubscribe_mailto")(_check_mailbox)

    @field_validator("base_url")
    @classmethod
    def _public_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _check_http_url(value)
        if not _public_ok(value):
            raise ValueError(f"must be https (http only for 127.0.0.1 or localhost), got {value!r}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: int | list[str]) -> int | list[str]:
        if isinstance(value, int):
            if not 0 <= value <= 10:
                raise ValueError(f"must be the number of proxies in front of serve (0-10), got {value}")
            return value
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"must be a count of proxies or a list of their addresses or networks, got {network!r}"
                ) from None
        return value

    @field_validator("subscribe_rate_limit", "login_rate_limit", "login_rate_limit_per_account")
    @classmethod
    def _rate(cls, value: str) -> str:
        if not re.match(r"^\d+\s*(per|/)\s*(second|minute|hour|day)$", value.strip()):
            raise ValueError(f"must look like '10 per minute', got {value!r}")
        return value

    @field_validator("secret_env", "previous_secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^[A-Z_][A-Z0-9_]*$", value):
            raise ValueError(f"must be the name of an environment variable, such as FLYGBLAD_SECRET, got {value!r}")
        return value


#: The keys each built-in sender takes, besides the shared ones.
SENDER_KEYS = {
    "file": {"dir"},
    "memory": set(),
    "smtp": {"host", "port", "security", "username", "password_env", "timeout", "connections"},
    "postmark": {"api_key_env", "base_url", "timeout", "message_stream", "connections"},
    "sendgrid": {"api_key_env", "base_url", "timeout", "connections"},
    "mailgun": {"api_key_env", "base_url", "timeout", "domain", "connections"},
}
SHARED_SENDER_KEYS = {
    "kind",
    "rate_per_second",
    "max_retries",
    "retry_base_seconds",
    "max_consecutive_failures",
    "batch_size",
}


class SenderSettings(_Table):
    """``[sender]``: how messages leave: a file per message (default), SMTP, or a provider's API.

    A third-party sender (entry point group ``flygblad.senders``) takes its own
    keys from an ``[sender.options]`` table.
    """

    kind: str = "file"
    # shared
    rate_per_second: float | None = Field(default=None, ge=0.001, le=1_000_000)
    max_retries: int = Field(default=5, ge=0, le=50)
    retry_base_seconds: float = Field(default=60.0, ge=0, le=86_400)
    max_consecutive_failures: int = Field(default=50, ge=1)
    batch_size: int | None = Field(default=None, ge=1, le=1000)
    claim_lease_seconds: float = Field(default=600.0, gt=0, le=7 * 86_400)
    # file
    dir: str = "outbox"
    # smtp
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    timeout: float = Field(default=30.0, gt=0, le=3600)
    #: SMTP: parallel sessions (default 2); an HTTP API: requests in flight at once (default 1).
    connections: int | None = Field(default=None, ge=1, le=64)
    # HTTP APIs
    api_key_env: str | None = None
    base_url: str | None = None
    message_stream: str = "broadcast"
    domain: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, strict=False)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if not re.match(r"^[a-z][a-z0-9_-]*$", value):
            raise ValueError(f"must be a sender name such as 'file', 'smtp' or 'postmark', got {value!r}")
        if value not in SENDER_KEYS:
            from importlib.metadata import entry_points

            installed = {point.name for point in entry_points(group="flygblad.senders")}
            if value not in installed:
                known = ", ".join(sorted(set(SENDER_KEYS) | installed))
                raise ValueError(f"no sender named {value!r} (senders: {known})")
        return value

    @field_validator("base_url")
    @classmethod
    def _api_base(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @model_validator(mode="after")
    def _keys_fit_the_kind(self) -> SenderSettings:
        allowed = SENDER_KEYS.get(self.kind)
        if allowed is None:
            return self  # a third-party sender: it checks its own options
        for key in sorted(self.model_fields_set - SHARED_SENDER_KEYS - allowed):
            raise ValueError(
                f"sender.{key}: not a setting of the {self.kind!r} sender (it takes: "
                f"{', '.join(sorted(allowed | SHARED_SENDER_KEYS - {'kind'}))})"
            )
        if self.kind in ("postmark", "sendgrid", "mailgun") and not self.api_key_env:
            raise ValueError(
                f"sender.api_key_env: required for the {self.kind!r} sender (the variable that holds the API key)"
            )
        if self.kind == "mailgun" and not self.domain:
            raise ValueError("sender.domain: required for the 'mailgun' sender (your sending domain)")
        return self

    @property
    def smtp_port(self) -> int:
        """The SMTP port: the configured one, else 465 for ssl, 587 for starttls, 25 for none."""
        return self.port or {"ssl": 465, "starttls": 587, "none": 25}[self.security]


DKIM_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
)


class DkimSettings(_Table):
    """``[dkim]``: sign every message (SMTP and file senders) with DKIM (RFC 6376)."""

    domain: str = Field(min_length=3)
    selector: str = Field(min_length=1)
    private_key_path: str

    @field_validator("domain", "selector")
    @classmethod
    def _label(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", value):
            raise ValueError(f"must be a DNS name, got {value!r}")
        return value


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")


def duration_seconds(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"6h"``, ``"2d"`` in seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"must be a duration such as '30m', '6h' or '1d', got {text!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class ScheduleSettings(_Table):
    """``[[schedules]]``: when a list's issue is built and sent (or sources only collected)."""

    name: str
    list: str | None = None
    cron: str
    timezone: str | None = None
    min_items: int = Field(default=1, ge=1)
    send_deadline: str = "6h"
    collect_only: bool = False
    #: The list's approval, for this schedule's firings (default: the list's own).
    approval: Literal["auto", "required"] | None = None
    #: A firing that waited for approval: sent at the next firing, or as soon as it is approved
    #: (``serve`` looks twice a minute) while the waiting firing is within its send_deadline.
    on_approval: Literal["next-firing", "at-once"] = "next-firing"

    @field_validator("name")
    @classmethod
    def _schedule_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be lower-case letters, digits, '-' or '_', got {value!r}")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from pipeline.schedule import cron_trigger

        cron_trigger(value, "UTC")  # raises ValueError naming what is wrong
        return value

    @field_validator("timezone")
    @classmethod
    def _schedule_timezone(cls, value: str | None) -> str | None:
        return None if value is None else SiteSettings._timezone(value)

    @field_validator("send_deadline")
    @classmethod
    def _deadline(cls, value: str) -> str:
        duration_seconds(value)
        return value

    @property
    def deadline_seconds(self) -> float:
        """How late after its due time a firing may still run."""
        return duration_seconds(self.send_deadline)


class Settings(_Table):
    """The whole, validated configuration. Read-only once loaded."""

    path: Path
    site: SiteSettings
    storage: StorageSettings = StorageSettings()
    # TOML gives arrays as lists: let this one field convert, the tables inside stay strict.
    sources: tuple[SourceSettings, ...] = Field(default=(), strict=False)
    feeds: FeedSettings = FeedSettings()
    http: HttpSettings = HttpSettings()
    organisation: OrganisationSettings | None = None
    lists: tuple[ListSettings, ...] = Field(default=(), strict=False)
    render: RenderSettings = RenderSettings()
    web: WebSettings = WebSettings()
    sender: SenderSettings = SenderSettings()
    dkim: DkimSettings | None = None
    schedules: tuple[ScheduleSettings, ...] = Field(default=(), strict=False)

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True)

    @model_validator(mode="after")
    def _unique_sources(self) -> Settings:
        seen: set[str] = set()
        for i, source in enumerate(self.sources):
            if source.name in seen:
                raise ValueError(f"sources[{i + 1}].name: {source.name!r} is used by an earlier source")
            seen.add(source.name)
        names = {source.name for source in self.sources}
        lists: set[str] = set()
        for i, mailing_list in enumerate(self.lists):
            if mailing_list.name in lists:
                raise ValueError(f"lists[{i + 1}].name: {mailing_list.name!r} is used by an earlier list")
            lists.add(mailing_list.name)
            for wanted in mailing_list.sources or ():
                if wanted not in names:
                    raise ValueError(
                        f"lists[{i + 1}].sources: no source named {wanted!r} (sources: {', '.join(sorted(names)) or 'none'})"
                    )
        list_names = {m.name for m in self.lists}
        schedule_names: set[str] = set()
        for i, schedule in enumerate(self.schedules):
            if schedule.name in schedule_names:
                raise ValueError(f"schedules[{i + 1}].name: {schedule.name!r} is used by an earlier schedule")
            schedule_names.add(schedule.name)
            if schedule.collect_only:
                continue
            if schedule.list is None:
                raise ValueError(f"schedules[{i + 1}].list: required unless collect_only = true")
            if schedule.list not in list_names:
                raise ValueError(
                    f"schedules[{i + 1}].list: no list named {schedule.list!r} (lists: {', '.join(sorted(list_names)) or 'none'})"
                )
        if self.lists and self.organisation is None:
            raise ValueError(
                "organisation: required when [[lists]] are configured (name and postal address for the footer)"
            )
        if self.lists and self.web.base_url is None and not _public_ok(self.site.base_url):
            raise ValueError(
                f"web.base_url: the links in emails would use [site] base_url {self.site.base_url!r}, which is plain "
                "http: set [web] base_url to the https address where flygblad serve answers"
            )
        if (self.storage.url or "").startswith("postgresql") and not _installed("psycopg"):
            raise ValueError("storage.url: a PostgreSQL store needs the driver: pip install 'flygblad[postgresql]'")
        if self.web.sendgrid_webhook_key_env and not _installed("cryptography"):
            raise ValueError(
                "web.sendgrid_webhook_key_env: SendGrid's signed webhook needs cryptography: "
                "pip install 'flygblad[webhooks]'"
            )
        if self.dkim is not None:
            key = Path(self.dkim.private_key_path).expanduser()
            key = key if key.is_absolute() else self.path.parent / key
            if not key.is_file():
                raise ValueError(f"dkim.private_key_path: no such file {key} (the DKIM private key, PEM)")
        for mailing_list in self.lists:
            if mailing_list.logo is not None:
                logo = Path(mailing_list.logo).expanduser()
                logo = logo if logo.is_absolute() else self.path.parent / logo
                if not logo.is_file():
                    raise ValueError(f"lists.logo: no such file {logo} (list {mailing_list.name!r}'s logo image)")
        return self

    @property
    def base_dir(self) -> Path:
        """The folder of the config file: relative paths start here."""
        return self.path.parent

    def resolve(self, value: str | Path) -> Path:
        """A path from the config, made absolute relative to the config file."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def storage_url(self) -> str:
        """The SQLAlchemy URL, with a relative SQLite path made relative to the config."""
        url = self.storage.url
        if url is None:
            return f"sqlite:///{self.base_dir / 'flygblad.db'}"
        match = re.match(r"^(sqlite(?:\+\w+)?:///)(?!/)(.+)$", url)
        if match and match.group(2) != ":memory:":
            return f"{match.group(1)}{self.resolve(match.group(2))}"
        return url

    @property
    def feeds_dir(self) -> Path:
        """Where feed files are written."""
        return self.resolve(self.feeds.dir)

    def source_location(self, source: SourceSettings) -> str:
        """A source's URL, with a local path resolved against the config file."""
        if re.match(r"^(https?|file)://", source.url):
            return source.url
        return self.resolve(source.url).as_uri()

    @property
    def web_base_url(self) -> str:
        """Where links in emails point: ``[web] base_url``, else ``[site] base_url``."""
        return self.web.base_url or self.site.base_url

    @property
    def media_dir(self) -> Path:
        """Where lead images are kept: ``media/`` in the feeds folder, so static hosting serves them too."""
        return self.feeds_dir / "media"

    @property
    def media_url(self) -> str:
        """Where the kept images are fetched from: ``[feeds] base_url``/media, else ``serve``'s ``/media``."""
        return f"{self.feeds.base_url}/media" if self.feeds.base_url else f"{self.web_base_url}/media"

    @property
    def feeds_url(self) -> str:
        """Where the feed files are published: ``[feeds] base_url``, else ``/feeds`` of the web side (``serve``)."""
        return self.feeds.base_url or f"{self.web_base_url}/feeds"

    @property
    def outbox_dir(self) -> Path:
        """Where the file sender writes its .eml files."""
        return self.resolve(self.sender.dir)

    @property
    def templates_dir(self) -> Path:
        """The folder of the newsletter templates."""
        return self.resolve(self.render.templates)

    def mailing_list(self, name: str) -> ListSettings:
        """The list called *name*, or a ConfigError listing the names there are."""
        for mailing_list in self.lists:
            if mailing_list.name == name:
                return mailing_list
        names = ", ".join(m.name for m in self.lists) or "none"
        raise ConfigError(f"no list named {name!r} (lists: {names})", path=str(self.path), key="lists")

    def list_language(self, mailing_list: ListSettings) -> str:
        """A list's language: its own, else the site's."""
        return mailing_list.language or self.site.language

    def list_sources(self, mailing_list: ListSettings) -> tuple[str, ...]:
        """The sources a list takes its items from: its own choice, else all."""
        return mailing_list.sources if mailing_list.sources is not None else tuple(s.name for s in self.sources)

    def schedule(self, name: str) -> ScheduleSettings:
        """The schedule called *name*, or a ConfigError listing the names there are."""
        for schedule in self.schedules:
            if schedule.name == name:
                return schedule
        names = ", ".join(s.name for s in self.schedules) or "none"
        raise ConfigError(f"no schedule named {name!r} (schedules: {names})", path=str(self.path), key="schedules")

    def source(self, name: str) -> SourceSettings:
        """The source called *name*, or a ConfigError listing the names there are."""
        for source in self.sources:
            if source.name == name:
                return source
        names = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} (sources: {names})", path=str(self.path), key="sources")


# ---------------------------------------------------------------- loading


def config_path(flag: str | os.PathLike[str] | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The config file to use: the flag, else ``$FLYGBLAD_CONFIG``, else ``./config.toml``."""
    return Path(flag or environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``FLYGBLAD_<TABLE>_<KEY>`` variables onto the plain tables of the file."""
    tables = {
        name: model
        for name, model in (
            ("site", SiteSettings),
            ("storage", StorageSettings),
            ("feeds", FeedSettings),
            ("http", HttpSettings),
            ("render", RenderSettings),
            ("web", WebSettings),
            ("organisation", OrganisationSettings),
            ("sender", SenderSettings),
            ("dkim", DkimSettings),
        )
    }
    for table, model in tables.items():
        for key in model.model_fields:
            variable = f"{ENV_PREFIX}{table.upper()}_{key.upper()}"
            if variable in environ:
                section = data.setdefault(table, {})
                if isinstance(section, dict):
                    section[key] = _env_value(environ[variable])
    return data


def _key_of(loc: tuple[Any, ...]) -> str:
    """``('sources', 1, 'select', 'title')`` -> ``sources[2].select.title`` (1-based, as a person counts)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        elif part in ("function-after", "function-before") or str(part).startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return [k for k in model.model_fields if k != "path"]


def _message(error: Mapping[str, Any]) -> tuple[str, str]:
    loc = tuple(error["loc"])
    key = _key_of(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        leaf = str(loc[-1])
        if leaf in SECRET_KEYS:
            return key, (
                "secrets never live in the config file: put it in an environment variable "
                f'and name that variable with {leaf.split("_")[0]}_env = "..."'
            )
        close = difflib.get_close_matches(leaf, _known_keys(loc), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return key, f"unknown key{hint}"
    if kind == "missing":
        return key, "required key is missing"
    message = str(error["msg"])
    message = re.sub(r"^(Value error|Assertion failed), ", "", message)
    if kind.endswith("_type") or kind in ("literal_error",):
        message += f", got {error.get('input')!r}"
    # A model-level check names its key itself ("sources[2].name: ...").
    match = re.match(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)*): (.*)$", message)
    if match and (not key or match.group(1).startswith(key)):
        return match.group(1), match.group(2)
    return key or "(top level)", message


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Read, overlay the environment on, and validate a config file.

    Raises :class:`ConfigError` naming the file and the first bad key.
    """
    file = config_path(path, environ).expanduser()
    shown = str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found (pass --config PATH or set FLYGBLAD_CONFIG)", path=shown) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file: {err.strerror}", path=shown) from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.start})", path=shown) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", path=shown) from err
    if "path" in data:
        raise ConfigError("unknown key", path=shown, key="path")
    data = _apply_environment(data, environ)
    data["path"] = file.resolve()
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        # An unknown key first: a misspelling also shows up as the right key "missing".
        errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
        key, message = _message(errors[0])
        more = len(errors) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(message, path=shown, key=key) from None

"""Is this project ready to send? ``flygblad check``.

Each check answers ✓ (ready), ✗ (not ready: what to do) or – (does not apply,
or cannot be told from here). :func:`run_checks` runs them in order; a project
is ready when none says ✗. The checks only read: nothing is frozen or sent,
except the one test message of ``--send-test``.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.config import Settings
from pipeline.errors import FlygbladError

if TYPE_CHECKING:
    from pipeline.issues import Draft

State = Literal["ok", "fail", "skip"]
MARKS = {"ok": "✓", "fail": "✗", "skip": "–"}
#: SpamAssassin's own threshold for "spam".
SPAM_THRESHOLD = 5.0


@dataclass(frozen=True)
class Check:
    """One readiness point: its name, its state, what was found, and what to do when it is not ready."""

    name: str
    state: State
    detail: str
    advice: str = ""

    def line(self) -> str:
        text = f"{MARKS[self.state]} {self.name}: {self.detail}"
        return text + (f" → {self.advice}" if self.advice else "")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _fail(name: str, detail: str, advice: str) -> Check:
    return Check(name, "fail", detail, advice)


def _skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def check_secret(settings: Settings) -> Check:
    from pipeline.tokens import load_secret

    try:
        load_secret(settings)
    except FlygbladError as err:
        return _fail("secret", str(err).split(": ", 1)[-1], "set a secret of at least 32 random characters")
    source = f"${settings.web.secret_env}" if os.environ.get(settings.web.secret_env) else settings.web.secret_file
    return _ok("secret", f"from {source}, long enough to sign links")


def check_store(settings: Settings) -> Check:
    from pipeline.store import Store

    try:
        with Store.open(settings.storage_url) as store:
            count = store.count_items()
    except Exception as err:  # noqa: BLE001 - any failure to open the store is the answer
        return _fail("database", f"cannot open {settings.storage_url}: {err}", "check [storage] url and the server")
    return _ok("database", f"{_redacted(settings.storage_url)} answers ({count} items)")


def _redacted(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def check_sender(settings: Settings) -> Check:
    """The sender is reachable and takes our login (SMTP), or the provider accepts the API key."""
    sender = settings.sender
    if sender.kind == "file":
        folder = settings.outbox_dir
        if folder.exists() and not folder.is_dir():
            return _fail("sender", f"file sender: {folder} is not a folder", "point [sender] dir at a folder")
        return _ok("sender", f"file sender: messages are written to {folder}/ (nothing leaves this machine)")
    if sender.kind == "smtp":
        return _check_smtp(settings)
    if sender.kind in ("postmark", "sendgrid", "mailgun"):
        return _check_api(settings)
    return _skip("sender", f"{sender.kind!r} is a third-party sender: flygblad cannot test it")


def _check_smtp(settings: Settings) -> Check:
    sender = settings.sender
    where = f"{sender.host}:{sender.smtp_port}"
    try:
        client: smtplib.SMTP
        if sender.security == "ssl":
            client = smtplib.SMTP_SSL(sender.host, sender.smtp_port, timeout=min(sender.timeout, 15))
        else:
            client = smtplib.SMTP(sender.host, sender.smtp_port, timeout=min(sender.timeout, 15))
        with client:
            client.ehlo()
            if sender.security == "starttls":
                if not client.has_extn("starttls"):
                    return _fail("sender", f"SMTP {where} offers no STARTTLS", 'set security = "ssl" or "none"')
                client.starttls()
                client.ehlo()
            if sender.username:
                if not client.has_extn("auth"):
                    return _fail(
                        "sender", f"SMTP {where} offers no login (AUTH)", "remove username, or use the relay's port"
                    )
                client.login(sender.username, os.environ.get(sender.password_env or "", ""))
    except smtplib.SMTPAuthenticationError as err:
        return _fail("sender", f"SMTP {where} refused the login: {err.smtp_code}", f"check ${sender.password_env}")
    except (OSError, smtplib.SMTPException) as err:
        return _fail("sender", f"SMTP {where} cannot be reached: {err}", "check [sender] host, port and security")
    login = f", logged in as {sender.username}" if sender.username else ""
    return _ok("sender", f"SMTP {where} answers ({sender.security}{login})")


def _check_api(settings: Settings) -> Check:
    import requests

    from pipeline.delivery import sender_class

    sender = settings.sender
    key = os.environ.get(sender.api_key_env or "", "").strip()
    if not key:
        return _fail("sender", f"{sender.kind}: ${sender.api_key_env} is not set", "export the API key")
    api = sender_class(sender.kind)
    default = str(getattr(api, "default_base_url", ""))
    base = (sender.base_url or default).rstrip("/").removesuffix("/v3")
    request: dict[str, object]
    if sender.kind == "postmark":
        request = {"url": f"{base}/server", "headers": {"X-Postmark-Server-Token": key, "Accept": "application/json"}}
    elif sender.kind == "sendgrid":
        request = {"url": f"{base}/v3/scopes", "headers": {"Authorization": f"Bearer {key}"}}
    else:
        request = {"url": f"{base}/v3/domains/{sender.domain}", "auth": ("api", key)}
    try:
        answer = requests.get(timeout=min(sender.timeout, 15), **request)  # type: ignore[arg-type]
    except requests.RequestException as err:
        return _fail("sender", f"{sender.kind} API at {base} cannot be reached: {err}", "check the network")
    if answer.status_code in (401, 403):
        return _fail(
            "sender", f"{sender.kind} refused the API key ({answer.status_code})", f"check ${sender.api_key_env}"
        )
    if answer.status_code != 200:
        return _fail("sender", f"{sender.kind} API answered {answer.status_code}", "check [sender] domain and base_url")
    return _ok("sender", f"{sender.kind} API at {base} accepts the key")


def check_dkim(settings: Settings, nameserver: str | None = None) -> Check:
    """The DKIM key can sign, and (where DNS answers) the selector's published key is its public half."""
    if settings.dkim is None:
        return _skip("DKIM", "not configured (mail is not signed by flygblad; your relay or provider may sign it)")
    import base64

    import dkim.crypto

    config = settings.dkim
    path = settings.resolve(config.private_key_path)
    try:
        private = dkim.crypto.parse_pem_private_key(path.read_bytes())
    except (OSError, ValueError, dkim.crypto.UnparsableKeyError) as err:
        return _fail("DKIM", f"{path} is not an RSA private key in PEM: {err}", "write the PEM key there")
    name = f"{config.selector}._domainkey.{config.domain}"
    try:
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=nameserver is None)
        if nameserver:
            host, _, port = nameserver.partition(":")
            resolver.nameservers = [host]
            resolver.port = int(port or 53)
        resolver.lifetime = 5
        answer = resolver.resolve(name, "TXT")
        published = "".join(b.decode() for record in answer for b in record.strings)
    except Exception as err:  # noqa: BLE001 - no DNS here (offline), or no record: cannot tell
        return _skip("DKIM", f"key readable; {name} could not be looked up ({type(err).__name__})")
    found = re.search(r"p=([A-Za-z0-9+/=\s]*)", published)
    if not found or not found.group(1).strip():
        return _fail("DKIM", f"{name} has no public key (p=)", f"publish the public key at {name}")
    try:
        public = dkim.crypto.parse_public_key(base64.b64decode(re.sub(r"\s", "", found.group(1))))
    except (ValueError, dkim.crypto.UnparsableKeyError):
        public = {}
    if (public.get("modulus"), public.get("publicExponent")) != (private["modulus"], private["publicExponent"]):
        return _fail("DKIM", f"the key published at {name} is not the public half of {path}", "publish the right key")
    return _ok("DKIM", f"{path.name} matches the key published at {name}")


def check_sources(settings: Settings) -> Check:
    from pipeline.sources.http import Fetcher

    failing = []
    with Fetcher(settings.http, settings.site.base_url) as fetcher:
        for source in settings.sources:
            try:
                fetcher.get(settings.source_location(source))
            except FlygbladError as err:
                failing.append(f"{source.name} ({str(err)[:160]})")
    if failing:
        return _fail(
            "sources",
            f"{len(failing)} of {len(settings.sources)} do not answer: {'; '.join(failing)}",
            "fix their url in [[sources]]",
        )
    return _ok("sources", f"all {len(settings.sources)} answer")


def _drafts(settings: Settings) -> Iterator[tuple[str, Draft | FlygbladError | None]]:
    """(list name, its next draft, a RenderError, or None when it has nothing new) for each list."""
    from pipeline import jobs
    from pipeline.store import Store

    with Store.open(settings.storage_url) as store:
        for mailing_list in settings.lists:
            try:
                yield mailing_list.name, jobs.next_draft(settings, store, mailing_list)
            except FlygbladError as err:
                yield mailing_list.name, err


def check_issues(settings: Settings) -> list[Check]:
    """The templates render each list's next issue, under Gmail's clipping size, and SpamAssassin's score."""
    from pipeline import jobs
    from pipeline.render.checks import GMAIL_CLIP_BYTES

    if not settings.lists:
        return [_skip("templates", "no [[lists]]: feeds only")]
    checks = []
    spam = shutil.which("spamassassin")
    for name, draft in _drafts(settings):
        if isinstance(draft, FlygbladError):
            checks.append(_fail(f"templates ({name})", str(draft), "fix the template named above, or remove it"))
            continue
        if draft is None:
            checks.append(_skip(f"templates ({name})", "nothing new to render: run `flygblad collect` first"))
            continue
        preview = jobs.preview(settings, draft)
        checks.append(_ok(f"templates ({name})", f"issue {draft.number} renders ({len(draft.items)} items)"))
        html_bytes = _html_part_bytes(preview.eml)
        limit = f"{html_bytes / 1024:.0f} KB of Gmail's {GMAIL_CLIP_BYTES // 1024} KB"
        checks.append(
            _ok(f"size ({name})", f"HTML part {limit} as sent")
            if html_bytes < GMAIL_CLIP_BYTES
            else _fail(f"size ({name})", f"HTML part {limit} as sent: Gmail clips it", "lower max_items")
        )
        if spam is None:
            checks.append(_skip(f"spam score ({name})", "SpamAssassin is not installed (apt-get install spamassassin)"))
            continue
        score = _spam_score(spam, preview.eml)
        if score is None:
            checks.append(_skip(f"spam score ({name})", "SpamAssassin gave no score"))
        elif score >= SPAM_THRESHOLD:
            checks.append(
                _fail(f"spam score ({name})", f"SpamAssassin {score} (spam from {SPAM_THRESHOLD})", "see preview/")
            )
        else:
            checks.append(_ok(f"spam score ({name})", f"SpamAssassin {score} (spam from {SPAM_THRESHOLD})"))
    return checks


def _html_part_bytes(eml: bytes) -> int:
    """The size of the HTML part as it travels (quoted-printable), the size Gmail measures."""
    match = re.search(rb"Content-Type: text/html[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n(.*?)\r\n--=_flygblad", eml, re.S)
    return len(match.group(1)) if match else len(eml)


def _spam_score(binary: str, eml: bytes) -> float | None:
    try:
        done = subprocess.run(
            [binary, "-L", "-t"],
            input=eml,
            capture_output=True,
            timeout=120,
            check=False,  # -L: no network tests
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(rb"X-Spam-Status: \w+, score=(-?[\d.]+)", done.stdout)
    return float(found.group(1)) if found else None


def check_send_test(settings: Settings, address: str) -> Check:
    from pipeline import jobs
    from pipeline.store import Store
    from pipeline.subscribers import SubscriberError, check_address

    try:
        address = check_address(address)
    except SubscriberError as err:
        return _fail("test message", str(err), "give a valid address")
    if not settings.lists:
        return _skip("test message", "no [[lists]] to send from")
    try:
        with Store.open(settings.storage_url) as store:
            sent = jobs.send_test(settings, store, settings.lists[0], address)
    except FlygbladError as err:
        return _fail("test message", str(err), "see the sender check above")
    if sent is None:
        return _skip("test message", "nothing to send yet: run `flygblad collect` first")
    _issue, result = sent
    if result.status != "sent":
        return _fail("test message", f"{address}: {result.status} ({result.reply})", "see the sender check above")
    return _ok("test message", f"sent to {address}")


def run_checks(settings: Settings, *, send_test: str | None = None, nameserver: str | None = None) -> list[Check]:
    """Every readiness check, in order."""
    checks: list[Check] = [_ok("config", f"{settings.path} loads"), check_secret(settings)]
    database = check_store(settings)
    checks += [database, check_sender(settings), check_dkim(settings, nameserver), check_sources(settings)]
    if database.state == "fail":  # the issue checks read the store
        checks.append(_skip("templates", "not tried: the database does not answer"))
        return checks
    checks += check_issues(settings)
    if send_test:
        checks.append(check_send_test(settings, send_test))
    return checks


__all__ = ["Check", "run_checks"]

"""``kind = "postmark"``: Postmark's batch endpoints.

An issue goes as a **template**: its HTML, text and subject are stored once
with ``POST /templates`` (alias ``flygblad-`` and a hash of the content, so
every worker and every resumed send finds the same one), and each batch of up
to 500 goes to ``POST /email/batchWithTemplates`` with only each recipient's
model (greeting, links) and headers: about a kilobyte per recipient instead of
the whole issue. The template is removed when the sender closes; a batch that
finds it gone (another worker removed it: Postmark answers 1101) makes it again
and goes again. Where no template can be made (the server's 100 are taken by
others, or the call fails) the issue goes the old way, ``POST /email/batch``
with each recipient's own HTML and text, cut by Postmark's 50 MB limit.

The answer is one result per message, in order: ``ErrorCode`` 0 is accepted,
406 (inactive recipient: it bounced or complained before) is a bounce, a
template error (11xx) is ours and waits, anything else is a rejection with
Postmark's words.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from pipeline.delivery import Message, SendResult
from pipeline.delivery.api import ApiSender, in_order
from pipeline.errors import DeliveryError
from pipeline.render import token_pattern

log = logging.getLogger(__name__)

INACTIVE_RECIPIENT = 406
#: Postmark's template errors (1100-1199: not found, invalid model, …): our mistake, never the recipient's.
TEMPLATE_ERRORS = range(1100, 1200)
#: Postmark refuses a batch request over 50 MB; stay well under it, measured on the JSON we send.
MAX_REQUEST_BYTES = 45 * 1024 * 1024
TEMPLATE_PREFIX = "flygblad-"
#: Model keys that stand for a literal brace, so nothing in an issue can open a Mustachio tag.
OPEN, CLOSE = "fb_open", "fb_close"


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def mustachio(content: str, nonce: str, suffix: str) -> tuple[str, set[str]]:
    """*content* as a Postmark template, and the model keys it uses.

    Each placeholder becomes a triple-mustache tag (``{{{fb_name_h}}}``: the
    value goes in as given, escaped by us where it lands in HTML); each brace
    of the issue's own text becomes a tag for itself, so a ``{{`` in an article
    or a stylesheet is never read as Mustachio.
    """
    pattern = re.compile(rf"{token_pattern(nonce).pattern}|[{{}}]")  # a placeholder, or one brace
    used: set[str] = set()

    def tag(match: re.Match[str]) -> str:
        key = f"fb_{match.group(1)}{suffix}" if match.group(1) else (OPEN if match.group() == "{" else CLOSE)
        used.add(key)
        return "{{{" + key + "}}}"

    return pattern.sub(tag, content), used


@dataclass(frozen=True)
class Template:
    """One issue's template at Postmark (``alias`` None: none could be made, the issue goes whole)."""

    alias: str | None
    keys: frozenset[str] = frozenset()


class PostmarkSender(ApiSender):
    """Sends through Postmark's batch APIs, an issue's body once as a template."""

    name = "postmark"
    default_base_url = "https://api.postmarkapp.com"
    max_batch = 500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._templates: dict[tuple[str, str], Template] = {}
        self._made: set[str] = set()  # aliases this sender created, removed at close
        self._missing: set[str] = set()  # message ids Postmark answered with a template error
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the requests

    def _headers(self) -> dict[str, str]:
        return {
            "X-Postmark-Server-Token": self.api_key,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    def encode(self, payload: Any) -> tuple[str, bytes]:
        # UTF-8 as it is: requests' json= escapes every å as \u00e5 (6 bytes), which took an 80 KB
        # Swedish issue in a batch of 500 over Postmark's 50 MB limit.
        return ("/email/batchWithTemplates" if isinstance(payload, dict) else "/email/batch"), _json(payload)

    def post(self, payload: Any) -> requests.Response:
        path, body = payload
        return self.request(path, data=body, headers=self._headers())

    def _call(self, method: str, path: str, payload: Any = None) -> requests.Response | None:
        """A templates-API call; None when Postmark could not be reached or did not answer."""
        try:
            return self.request(path, method, data=None if payload is None else _json(payload), headers=self._headers())
        except (requests.RequestException, DeliveryError) as err:
            log.warning("postmark: %s %s: %s", method, path, err)
            return None

    # ------------------------------------------------------------ templates

    def template(self, first: Message) -> Template:
        """The template for *first*'s issue (and language), made at Postmark once per sender."""
        assert first.template is not None
        with self._lock:
            found = self._templates.get(first.template)
            if found is None:
                found = self._templates[first.template] = self._make(first)
            return found

    def _make(self, first: Message) -> Template:
        assert first.template is not None
        html, html_keys = mustachio(first.template[0], first.nonce, "_h")
        text, text_keys = mustachio(first.template[1], first.nonce, "")
        subject, subject_keys = mustachio(first.subject, first.nonce, "")
        digest = hashlib.sha256(_json([subject, html, text])).hexdigest()[:32]
        alias = f"{TEMPLATE_PREFIX}{digest}"
        body = {
            "Name": f"flygblad: {first.subject}"[:200],
            "Alias": alias,
            "Subject": subject,
            "HtmlBody": html,
            "TextBody": text,
            "TemplateType": "Standard",
        }
        made = self._create(body)
        if made is None:
            # Perhaps the server's 100 templates are taken: clear what earlier sends left, then try again.
            self._prune(keep={alias, *(t.alias for t in self._templates.values() if t.alias)})
            made = self._create(body)
        if made is None:
            log.warning("postmark: no template could be made for %r; the issue goes whole to each", first.subject)
            return Template(None)
        if made:
            self._made.add(alias)
        return Template(alias, frozenset(html_keys | text_keys | subject_keys))

    def _create(self, body: dict[str, Any]) -> bool | None:
        """True: made; False: it was there already (another worker made it); None: it cannot be had."""
        response = self._call("POST", "/templates", body)
        if response is not None and response.ok:
            return True
        found = self._call("GET", f"/templates/{body['Alias']}")
        if found is not None and found.ok:
            return False
        return None

    def _prune(self, keep: set[str | None]) -> None:
        """Remove the templates earlier sends left behind (``flygblad-…`` only: a project's own are never touched)."""
        listing = self._call("GET", "/templates?count=100&offset=0&TemplateType=Standard")
        if listing is None or not listing.ok:
            return
        try:
            templates = listing.json().get("Templates", [])
        except (ValueError, AttributeError):
            return
        for entry in templates if isinstance(templates, list) else []:
            alias = entry.get("Alias") if isinstance(entry, dict) else None
            if isinstance(alias, str) and alias.startswith(TEMPLATE_PREFIX) and alias not in keep:
                self._call("DELETE", f"/templates/{alias}")

    def close(self) -> None:
        for alias in sorted(self._made):
            self._call("DELETE", f"/templates/{alias}")
        self._made.clear()
        self._templates.clear()
        super().close()

    # ------------------------------------------------------------ payloads

    def build_payload(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """``/email/batch``: each message whole (its own HTML and text)."""
        payload = []
        for m in messages:
            html, text = m.parts() if m.parts else ("", m.data.decode("utf-8", "replace"))
            entry = self._envelope(m)
            entry.update({"Subject": m.subject, "HtmlBody": html, "TextBody": text})
            payload.append(entry)
        return payload

    def templated_payload(self, messages: Sequence[Message], template: Template) -> dict[str, Any]:
        """``/email/batchWithTemplates``: each message's model and headers, the body once at Postmark."""
        entries = []
        for m in messages:
            model = {OPEN: "{", CLOSE: "}"}
            for field, value in m.values:
                model[f"fb_{field}"] = value
                model[f"fb_{field}_h"] = html_lib.escape(value, quote=True)
            entry = self._envelope(m)
            entry.update(
                {
                    "TemplateAlias": template.alias,
                    "TemplateModel": {k: v for k, v in model.items() if k in template.keys},
                    "InlineCss": False,  # inlined already, @media kept
                }
            )
            entries.append(entry)
        return {"Messages": entries}

    def _envelope(self, m: Message) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "From": m.from_header,
            "To": m.to,
            "Headers": [{"Name": k, "Value": v} for k, v in (*m.list_headers, *m.headers)],
            "MessageStream": self.settings.message_stream,
            # Postmark refuses metadata values over 80 characters; the part before "@" names the list.
            "Metadata": {"flygblad-message-id": m.message_id.partition("@")[0][:80]},
        }
        if m.reply_to:
            entry["ReplyTo"] = m.reply_to
        return entry

    # ------------------------------------------------------------ sending

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        original = messages
        refused, messages = self.unsendable(messages)
        results = list(refused)
        whole: list[Message] = [m for m in messages if m.template is None]
        by_template: dict[int, list[Message]] = {}
        for m in messages:
            if m.template is not None:
                by_template.setdefault(id(m.template), []).append(m)
        for group in by_template.values():
            sent, rest = self._send_templated(group)
            results += sent
            whole += rest
        if whole:
            results += self._send_whole(whole)
        return in_order(original, results)

    def _send_templated(self, messages: list[Message]) -> tuple[list[SendResult], list[Message]]:
        """Results for what went as a template, and the messages that must go whole."""
        done: list[SendResult] = []
        for _ in range(2):  # once, and once more when the template was gone (another worker removed it)
            template = self.template(messages[0])
            if template.alias is None:
                break
            results = self.deliver(messages, self.templated_payload(messages, template))
            missing = self._take_missing(messages, template)
            done += [r for r in results if r.message.message_id not in missing]
            messages = [m for m in messages if m.message_id in missing]
            if not messages:
                return done, []
            log.info("postmark: template %s was gone for %d messages", template.alias, len(messages))
        return done, messages

    def _take_missing(self, messages: Sequence[Message], template: Template) -> set[str]:
        """The messages Postmark answered with a template error; the template is forgotten, to be made again."""
        with self._lock:
            missing = {m.message_id for m in messages} & self._missing
            self._missing -= missing
            key = messages[0].template
            if missing and key is not None and self._templates.get(key) is template:
                del self._templates[key]
                self._made.discard(template.alias or "")
            return missing

    def _send_whole(self, messages: Sequence[Message]) -> list[SendResult]:
        """``/email/batch``, in as many requests as Postmark's size limit needs (by the real encoded JSON)."""
        entries = self.build_payload(messages)
        results: list[SendResult] = []
        start, size = 0, 2
        for n, entry in enumerate(entries):
            length = len(_json(entry)) + 1
            if n > start and size + length > MAX_REQUEST_BYTES:
                results += self.deliver(messages[start:n], entries[start:n])
                start, size = n, 2
            size += length
        if start < len(entries):
            results += self.deliver(messages[start:], entries[start:])
        return results

    def _template_error(self, messages: Sequence[Message], code: int) -> bool:
        """Record *messages* as refused for our template (11xx); True when *code* is one."""
        if code not in TEMPLATE_ERRORS:
            return False
        with self._lock:
            self._missing.update(m.message_id for m in messages)
        return True

    def refused_request(self, messages: Sequence[Message], response: requests.Response) -> list[SendResult] | None:
        """A whole batch refused for its template (422 with an 11xx code): they wait and go again."""
        try:
            code = int(response.json().get("ErrorCode", -1))
        except (ValueError, AttributeError, TypeError):
            return None
        if not self._template_error(messages, code):
            return None
        words = f"postmark {code}: {response.json().get('Message', '')}"
        return [SendResult(m, "deferred", reply=words) for m in messages]

    def parse_result(self, messages: Sequence[Message], response: requests.Response) -> list[SendResult]:
        try:
            answers = response.json()
        except ValueError:
            return [
                SendResult(m, "failed", reply=f"postmark: unreadable answer {response.text[:200]!r}") for m in messages
            ]
        if not isinstance(answers, list) or len(answers) != len(messages):
            return [SendResult(m, "failed", reply="postmark: the answer does not match the batch") for m in messages]
        results = []
        for message, answer in zip(messages, answers, strict=True):
            # Postmark leaves ErrorCode out of some accepted answers ("delivery may be delayed"):
            # a MessageID is its acceptance.
            code = int(answer.get("ErrorCode", 0 if answer.get("MessageID") else -1))
            words = f"postmark {code}: {answer.get('Message', '')}"
            if code == 0:
                results.append(SendResult(message, "sent", provider_id=answer.get("MessageID"), reply=words))
            elif code == INACTIVE_RECIPIENT:
                results.append(SendResult(message, "bounced", reply=words))
            elif self._template_error([message], code):
                results.append(SendResult(message, "deferred", reply=words))
            else:
                results.append(SendResult(message, "rejected", reply=words))
        return results

"""The public web side: subscribe (double opt-in), confirm, unsubscribe (RFC 8058), archive, feeds.

Interface of this stage: :func:`create_app` builds the Flask application from
the settings; :func:`serve` runs it under waitress (a production WSGI server).
Handlers call the same store and delivery functions as the CLI.

Safety, by design rather than by hope:

* no state changes on GET: a link scanner that prefetches the confirm or
  unsubscribe link changes nothing; the change is the POST behind the button
  (and RFC 8058's ``List-Unsubscribe=One-Click`` POST, which needs no cookie);
* tokens are signed and bound to subscriber and list (confirm ones expire
  after seven days); a forged or altered token changes nothing and gets 404;
* the subscribe form answers the same bytes whether or not the address is
  known, has a CSRF token (double submit: a signed nonce matching a cookie),
  and is rate-limited per client;
* every page carries a CSP with no script at all, and works without JavaScript.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html as html_lib
import logging
import re
import secrets
import threading
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, make_response, render_template, request, send_file, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from pipeline import jobs
from pipeline.config import ListSettings, Settings
from pipeline.issues import rendered_of
from pipeline.render import RecipientValues
from pipeline.render.templates import environment, known_language, strings, template_file
from pipeline.store import Store
from pipeline.subscribers import SubscriberError, candidate
from pipeline.tokens import tokens_for
from pipeline.web import webhooks
from pipeline.web.proxies import ClientAddress

log = logging.getLogger(__name__)

CSRF_COOKIE = "flygblad_csrf"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
#: The largest issue number a database integer holds (PostgreSQL INTEGER): anything above is not an issue.
MAX_ISSUE_NUMBER = 2**31 - 1
#: No request a person or a provider sends is larger: a webhook batch, a form. Bigger bodies get 413.
MAX_BODY_BYTES = 1024 * 1024
#: Open connections served at once: 200 idle ones (a slowloris) leave room for every real visitor.
MAX_CONNECTIONS = 1000
#: The web version of an issue: the email's own styles (its <style> elements and style attributes, each
#: allowed by its hash, CSP Level 3 'unsafe-hashes'), images from anywhere over https, still no script.
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-hashes' {hashes}; img-src 'self' https: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors {frame_ancestors}"
)
#: A kept image's file name (pipeline.sources.images): content hash, width, format.
MEDIA_NAME = re.compile(r"[0-9a-f]{32}-[0-9]{1,5}\.(?:jpg|png)")
MEDIA_MAX_AGE = 365 * 24 * 3600
FEED_TYPES = {"rss": "application/rss+xml", "atom": "application/atom+xml", "json": "application/feed+json"}


def create_app(settings: Settings, store: Store | None = None) -> Flask:
    """The web application for *settings* (the store is opened, and migrated, once)."""
    tokens = tokens_for(settings)
    store = store or Store.open(settings.storage_url)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # The visitor's address (for the rate limit) through the proxies the operator trusts, and no one else's word.
    app.wsgi_app = ClientAddress(app.wsgi_app, settings.web.trusted_proxies)  # type: ignore[method-assign]
    # The same loader and autoescape as the emails: a plain Jinja environment where Flask keeps its subclass.
    app.jinja_env = environment(settings.templates_dir)  # type: ignore[assignment]
    app.jinja_env.auto_reload = app.debug  # as Flask's own: no stat of every template on every page in production
    app.jinja_env.globals["url_for"] = url_for
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://", strategy="fixed-window")
    pump = MailPump(settings, store).start()
    app.extensions["flygblad_mail_pump"] = pump
    base = settings.web_base_url
    organisation = settings.organisation.name if settings.organisation else settings.site.title

    templates_dir = settings.templates_dir  # resolved once: a realpath per request cost ~10 % of an unsubscribe

    def strings_for(mailing_list: ListSettings | None) -> dict[str, str]:
        return strings(templates_dir, settings.list_language(mailing_list) if mailing_list else settings.site.language)

    def page(template: str, mailing_list: ListSettings | None, status: int = 200, **context: Any) -> Response:
        t = strings_for(mailing_list)
        language = settings.list_language(mailing_list) if mailing_list else settings.site.language
        html = render_template(template, t=t, lang=language, organisation=organisation, **context)
        return make_response(html, status)

    def known_list(name: str) -> ListSettings:
        for mailing_list in settings.lists:
            if mailing_list.name == name:
                return mailing_list
        abort(404)

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)  # the web version of an issue sets its own
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("X-Frame-Options", "DENY")  # the desk's preview is framed by the desk
        if request.path.startswith(("/subscribe", "/confirm", "/unsubscribe")):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(404)
    def not_found(_error: Exception) -> Response:
        t = strings_for(None)
        return page("web/action.html.j2", None, 404, title=t["bad_link"], message=None, button=None)

    @app.errorhandler(400)
    def bad_request(_error: Exception) -> Response:
        t = strings_for(None)
        return page("web/action.html.j2", None, 400, title=t["bad_request"], message=None, button=None)

    @app.errorhandler(429)
    def too_many(_error: Exception) -> Response:
        t = strings_for(None)
        return page("web/action.html.j2", None, 429, title=t["too_many"], message=None, button=None)

    @app.get("/healthz")
    def healthz() -> Response:
        store.count_items()  # the database answers
        return make_response("ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"})

    @app.get("/static/site.css")
    def static_css() -> Response:
        return send_file(template_file(templates_dir, "web/site.css"), mimetype="text/css", max_age=3600)

    # ------------------------------------------------------------ subscribe

    def subscribe_form(
        mailing_list: ListSettings, message: str | None = None, done: bool = False, status: int = 200, email: str = ""
    ) -> Response:
        t = strings_for(mailing_list)
        nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
        intro = (t["subscribe_intro"] if mailing_list.double_opt_in else t["subscribe_intro_single"]).format(
            list=mailing_list.title
        )
        response = page(
            "web/subscribe.html.j2",
            mailing_list,
            status,
            title=t["subscribe_title"].format(list=mailing_list.title),
            intro=intro,
            list_name=mailing_list.name,
            csrf_token=tokens.csrf(nonce),
            message=message,
            done=done,
            email=email,
        )
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="Strict", secure=base.startswith("https://"))
        return response

    def chosen_language(form: Any) -> str | None:
        """The language a sign-up form chose (an embedded form's hidden field), if the templates have it."""
        tag = str(form.get("language") or "")[:35]
        try:
            return known_language(templates_dir, tag) if tag else None
        except ValueError:
            return None  # the list's language, rather than refusing someone over a form's field

    @app.get("/subscribe/<list_name>")
    def subscribe_page(list_name: str) -> Response:
        return subscribe_form(known_list(list_name))

    @app.post("/subscribe/<list_name>")
    @limiter.limit(settings.web.subscribe_rate_limit)
    def subscribe(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        t = strings_for(mailing_list)
        double = mailing_list.double_opt_in
        ours = tokens.check_csrf(request.form.get("csrf_token", ""), request.cookies.get(CSRF_COOKIE, ""))
        if not ours and not double:
            # A form embedded on another site (no cookie of ours, no token): with single opt-in nothing
            # else proves the visitor meant it, so they get this page with the address filled in, one press
            # from done. With double opt-in the confirmation mail is that proof, so such a form just works.
            return subscribe_form(mailing_list, t["press_to_subscribe"], email=request.form.get("email", "")[:254])
        try:
            who = candidate(
                request.form.get("email", ""), request.form.get("name") or None, chosen_language(request.form)
            )
        except SubscriberError:
            return subscribe_form(mailing_list, t["bad_email"], status=400)
        if jobs.subscribe(settings, store, mailing_list, who).confirmation_queued:
            pump.wake.set()
        # The same answer whether the address was new, known, active or suppressed: no enumeration.
        done = (t["subscribe_done"] if double else t["subscribe_done_single"]).format(list=mailing_list.title)
        return subscribe_form(mailing_list, done, done=True)

    # ------------------------------------------------------------ confirm and unsubscribe

    # Both are a signed link that shows a page with one button (GET changes nothing, so
    # link scanners are harmless) and a POST that does the change. For unsubscribe the
    # POST may also be RFC 8058's "List-Unsubscribe=One-Click" from a mail client: no
    # cookie, no CSRF token; the signed token in the URL is the authority.
    actions = {
        "confirm": (
            tokens.read_confirm,
            lambda subscriber_id, list_name: jobs.confirm(store, subscriber_id, list_name),
            "confirm_title",
            "confirm_intro",
            "confirm_button",
            "confirmed",
        ),
        "unsubscribe": (
            tokens.read_unsubscribe,
            lambda subscriber_id, list_name: jobs.unsubscribe(store, subscriber_id, list_name),
            "unsubscribe_title",
            "unsubscribe_intro",
            "unsubscribe_button",
            "unsubscribed",
        ),
    }

    def link_page(kind: str, token: str) -> Response:
        read, act, title, intro, button, done = actions[kind]
        found = read(token)
        if found is None:
            abort(404)
        subscriber_id, list_name = found
        mailing_list = known_list(list_name)
        t = strings_for(mailing_list)

        def said(key: str) -> Response:
            """The page that answers the link: its title and one message, no button."""
            text = t[key].format(list=mailing_list.title)
            return page("web/action.html.j2", mailing_list, title=t[title], message=text, button=None)

        if subscriber_id == jobs.PREVIEW_SUBSCRIBER_ID:  # the link in a preview: a real link to no one
            return said("preview_link")
        if request.method == "POST":
            if not act(subscriber_id, list_name):
                if kind != "unsubscribe":
                    abort(404)
                # Removed from the list since the email was sent: the link is fine, the address is not on it.
                return said("not_subscribed")
            return said(done)
        return page(
            "web/action.html.j2",
            mailing_list,
            title=t[title],
            message=None,
            intro=t[intro].format(list=mailing_list.title),
            button=t[button],
            action=request.path,
        )

    for kind in actions:
        app.add_url_rule(
            f"/{kind}/<token>", kind, lambda token, kind=kind: link_page(kind, token), methods=["GET", "POST"]
        )

    # ------------------------------------------------------------ archive and feeds

    @app.get("/archive/")
    def archive() -> Response:
        t = strings_for(None)
        return page(
            "web/archive.html.j2",
            None,
            title=t["archive_title"],
            lists=archive_index(settings, store),
            subscribe_href=None,
        )

    @app.get("/archive/<list_name>/")
    def list_archive(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        t = strings_for(mailing_list)
        [entry] = archive_index(settings, store, only=mailing_list)
        return page(
            "web/archive.html.j2",
            mailing_list,
            title=f"{t['archive_title']}: {mailing_list.title}",
            lists=[entry],
            subscribe_href=url_for("subscribe_page", list_name=mailing_list.name),
            subscribe_text=t["subscribe_title"].format(list=mailing_list.title),
        )

    @app.get("/archive/<list_name>/<int:number>")
    def archive_issue(list_name: str, number: int) -> Response:
        known_list(list_name)
        if number > MAX_ISSUE_NUMBER:  # a database integer cannot hold it: there is no such issue
            abort(404)
        issue = store.issue(list_name, number)
        if issue is None or issue.status not in ("sending", "sent"):
            abort(404)
        html = archive_html(settings, issue)
        return make_response(
            html,
            200,
            {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": archive_csp(html)},
        )

    @app.post("/webhooks/<provider>")
    @limiter.exempt
    def webhook(provider: str) -> Response:
        if provider not in webhooks.PROVIDERS or not webhooks.enabled(settings, provider):
            abort(404)
        body = request.get_data(cache=False)
        try:
            events = webhooks.PROVIDERS[provider](settings, request.headers, body)  # type: ignore[arg-type]
        except webhooks.Unverified:
            return make_response("unverified\n", 401 if provider == "postmark" else 403)
        except (ValueError, TypeError, AttributeError, RecursionError, KeyError):
            return make_response("unreadable\n", 400)
        changed = 0
        for event in events:
            list_name = _list_of(event.message_id, settings)
            changed += store.suppress(event.email, event.status, list_name=list_name)
        return make_response(f"ok {len(events)} events, {changed} subscribers changed\n", 200)

    @app.get("/c/<token>")
    @limiter.exempt
    def click(token: str) -> Response:
        # A tracked link: counted for the issue, never for a person (nothing about the reader is in it).
        found = tokens.read_click(token)
        if found is None:
            abort(404)
        list_name, number, url = found
        known_list(list_name)
        store.count_click(list_name, number, url)
        response = make_response("", 302)
        response.headers["Location"] = url
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/media/<name>")
    def media_file(name: str) -> Response:
        # Named by content hash: a file never changes, so it may be cached for a year.
        if not MEDIA_NAME.fullmatch(name):
            abort(404)
        path = settings.media_dir / name
        if not path.is_file():
            abort(404)
        kind = "image/png" if name.endswith(".png") else "image/jpeg"
        response = send_file(path, mimetype=kind, etag=name.partition(".")[0], conditional=True, max_age=MEDIA_MAX_AGE)
        response.headers["Cache-Control"] = f"public, max-age={MEDIA_MAX_AGE}, immutable"
        return response

    @app.get("/feeds/<name>.<suffix>")
    def feed(name: str, suffix: str) -> Response:
        if suffix not in FEED_TYPES or not name.replace("-", "").replace("_", "").isalnum():
            abort(404)
        path = settings.feeds_dir / f"{name}.{suffix}"
        if not path.is_file():
            abort(404)
        etag = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
        response = send_file(path, mimetype=FEED_TYPES[suffix], etag=etag, conditional=True, max_age=300)
        return response

    from pipeline.web import admin

    admin.register(app, settings, store, tokens, limiter)
    return app


def _list_of(message_id: str | None, settings: Settings) -> str | None:
    """The list a message of ours went to, from its Message-ID (``list.number.subscriber.nonce@domain``)."""
    if not message_id:
        return None
    name = message_id.strip("<>").split(".", 1)[0]
    return name if any(m.name == name for m in settings.lists) else None


class MailPump:
    """Delivers the transactional queue in the background of ``serve``: woken by a sign-up, else every minute.

    A sign-up only queues its confirmation (:func:`pipeline.jobs.subscribe`), so
    the form answers at once and the same for every address; this thread sends
    it moments later, and retries it when the relay was down.
    """

    def __init__(self, settings: Settings, store: Store, interval: float = 60.0) -> None:
        self.settings = settings
        self.store = store
        self.interval = interval
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="flygblad-mail", daemon=True)

    def start(self) -> MailPump:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    def _run(self) -> None:
        from pipeline.jobs import deliver_mail

        while not self.stopped.is_set():
            self.wake.wait(self.interval)
            self.wake.clear()
            if self.stopped.is_set():
                return
            try:
                deliver_mail(self.settings, self.store)
            except Exception:  # the pump must outlive any one failure; the queue keeps the mail
                log.exception("delivering the transactional queue failed; it is tried again")


def archive_index(settings: Settings, store: Store, only: ListSettings | None = None) -> list[dict[str, Any]]:
    """Every list (or *only* one) with its sent issues, newest first, for the archive pages."""
    out = []
    for mailing_list in [only] if only else settings.lists:
        issues = [i for i in store.issues(mailing_list.name) if i.status in ("sending", "sent")]
        out.append(
            {
                "title": mailing_list.title,
                "href": f"{settings.web_base_url}/archive/{mailing_list.name}/",
                "issues": [
                    {
                        "href": f"{settings.web_base_url}/archive/{i.list}/{i.number}",
                        "date": i.created.astimezone(settings.site.tz).date().isoformat(),
                        "subject": i.subject,
                    }
                    for i in issues
                ],
            }
        )
    return out


#: Stands for the unsubscribe link while an issue is filled in for its web version (then replaced).
_NO_ONE = "flygblad-archive-no-recipient"


def archive_html(settings: Settings, issue: Any) -> str:
    """A frozen issue as anyone may see it: no greeting by name, no personal links.

    The copy is for anyone, so its footer offers the list (a link to the
    subscribe page saying so) where a subscriber's copy offers to leave it.
    """
    t = strings(settings.templates_dir, issue.language)
    base = settings.web_base_url
    values = RecipientValues(
        greeting=t["greeting"],
        name="",
        email="",
        view_url=f"{base}/archive/{issue.list}/{issue.number}",
        unsubscribe_url=_NO_ONE,
    )
    html = rendered_of(issue).fill(values)[0]
    subscribe_url = html_lib.escape(f"{base}/subscribe/{issue.list}", quote=True)
    label = html_lib.escape(t["subscribe_button"])
    html = re.sub(
        rf'(<a\b[^>]*\bhref="){_NO_ONE}("[^>]*>)(.*?)(</a>)',
        lambda m: f"{m.group(1)}{subscribe_url}{m.group(2)}{label}{m.group(4)}",
        html,
        flags=re.S,
    )
    return html.replace(_NO_ONE, subscribe_url)  # anywhere else (a custom template's own use of it)


@functools.lru_cache(maxsize=256)
def archive_csp(html: str, frame_ancestors: str = "'none'") -> str:
    """The web version's CSP: each of the page's own styles allowed by its SHA-256, and nothing else inline.

    *frame_ancestors* is who may frame the page: no one, or the desk itself for its preview (``'self'``).
    """
    import lxml.html

    document = lxml.html.document_fromstring(html)
    styles = {element.text or "" for element in document.iter("style")}
    styles |= {element.get("style") or "" for element in document.iter() if element.get("style") is not None}
    hashes = sorted(
        "'sha256-" + base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode("ascii") + "'"
        for style in styles
    )
    return ARCHIVE_CSP.format(hashes=" ".join(hashes), frame_ancestors=frame_ancestors)


def write_archive(settings: Settings, store: Store) -> list[Path]:
    """The archive as static files next to the feeds (``archive/{list}/{number}.html``), for any web server."""
    root = settings.feeds_dir / "archive"
    written = []
    for mailing_list in settings.lists:
        for issue in store.issues(mailing_list.name):
            if issue.status not in ("sending", "sent"):
                continue
            path = root / issue.list / f"{issue.number}.html"
            content = archive_html(settings, issue).encode("utf-8")
            if path.exists() and path.read_bytes() == content:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_suffix(".tmp")
            temp.write_bytes(content)
            temp.replace(path)
            written.append(path)
    return written


def make_server(settings: Settings, host: str | None = None, port: int | None = None, app: Flask | None = None) -> Any:
    """The app under waitress with the limits of a public service (``.run()`` serves until interrupted)."""
    from waitress import create_server

    return create_server(
        app or create_app(settings),
        host=host or settings.web.host,
        port=port or settings.web.port,
        threads=8,
        ident="flygblad",
        # X-Forwarded-For reaches the app only when proxies are trusted; ClientAddress decides what to believe.
        clear_untrusted_proxy_headers=not settings.web.trusted_proxies,
        # Limits for a public service: idle or slow clients cannot hold every channel (poll, not select:
        # select stops at 1,024 descriptors), a channel silent for 30 s is closed, and a body is refused
        # before it is read into memory when it is larger than any real request.
        connection_limit=MAX_CONNECTIONS,
        asyncore_use_poll=True,
        channel_timeout=30,
        max_request_body_size=MAX_BODY_BYTES,
    )


def close_server(server: Any, thread: threading.Thread | None = None, timeout: float = 10) -> None:
    """Stop a server from :func:`make_server` that runs in *thread*: requests finish, then the loop ends.

    waitress's own ``close()`` closes its wake-up pipe while request threads may still be
    answering; one that finishes later writes ``b"x"`` into that descriptor number, by then
    another file's. So: the request threads end first, the wake-up is disarmed, and only then
    is anything closed.
    """
    from waitress import wasyncore

    server.task_dispatcher.shutdown(timeout=timeout)
    server.trigger._physical_pull = lambda: None  # noqa: SLF001 - a straggler's wake-up goes nowhere
    wasyncore.close_all(server._map)  # noqa: SLF001 - every channel, the listener and the pipe
    if thread is not None:
        thread.join(timeout)


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the web app under waitress until interrupted."""
    _enough_descriptors(MAX_CONNECTIONS + 100)
    make_server(settings, host, port).run()


def _enough_descriptors(wanted: int) -> None:
    """Raise this process's open-file limit to *wanted* when the hard limit allows (many systems start at 1,024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


__all__ = ["archive_html", "close_server", "create_app", "make_server", "serve", "write_archive"]

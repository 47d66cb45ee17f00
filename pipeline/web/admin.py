"""The communicator's desk on ``serve``: ``/admin/`` — lists, drafts, schedules, issues, subscribers, sources.

A thin front end over :mod:`pipeline.jobs` and :mod:`pipeline.accounts`: each
handler parses a form, calls one use case and renders the answer. Server-rendered
pages that work without JavaScript (the progress of a send refreshes itself).

Safety, by design:

* every route but the sign-in page needs a session: a GET without one is sent to
  sign in, anything else gets 401, and neither answer carries any data;
* a session is a random cookie (``Secure``, ``HttpOnly``, ``SameSite=Strict``,
  ``Path=/admin``) whose SHA-256 the store keeps (:mod:`pipeline.accounts`);
* every form carries the session's CSRF token (sign-in: a signed double-submit
  nonce); a POST without the right one gets 400 and changes nothing;
* sign-in is rate-limited per client and per account address;
* pages are served ``no-store`` under a CSP with no script at all; the draft's
  preview is framed only by the desk itself and allows only the email's own styles;
* collected text is escaped by the templates, and the email preview is the
  sanitised issue itself (nh3 at collect).
"""

from __future__ import annotations

import secrets
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, abort, g, make_response, redirect, render_template, request, url_for
from flask_limiter import Limiter

from pipeline import accounts, jobs
from pipeline.config import ListSettings, Settings
from pipeline.errors import FlygbladError
from pipeline.store import Store
from pipeline.subscribers import SubscriberError
from pipeline.tokens import Tokens
from pipeline.types import STATUSES, SUPPRESSED

COOKIE = "flygblad_admin"
LOGIN_COOKIE = "flygblad_admin_login"
ADMIN_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
#: The widths the preview is shown at: a desktop mail client's reading pane, and a phone.
PREVIEW_WIDTHS = {"desktop": 640, "phone": 375}
PAGE_SIZE = 50
#: A CSV upload larger than this is refused (the web side's body limit also applies).
MAX_UPLOAD = 1024 * 1024


def register(app: Flask, settings: Settings, store: Store, tokens: Tokens, limiter: Limiter) -> None:
    """Add the desk's routes to *app*."""
    from pipeline.render.templates import DESK_STRINGS, strings, template_file
    from pipeline.web import archive_csp

    admin = Blueprint("admin", __name__, url_prefix="/admin")
    tz = settings.site.tz
    language = settings.site.language.split("-")[0].lower()

    def translations() -> dict[str, str]:
        """The desk's texts in the site's language, read once per request (empty: English throughout)."""
        if "desk_strings" not in g:
            g.desk_strings = strings(settings.templates_dir, language, DESK_STRINGS)
        found: dict[str, str] = g.desk_strings
        return found

    def _(text: str) -> str:
        """The desk's text in the site's language (English where a translation is missing)."""
        return translations().get(text, text)

    sending: dict[str, threading.Thread] = {}

    def known_list(name: str) -> ListSettings:
        for mailing_list in settings.lists:
            if mailing_list.name == name:
                return mailing_list
        abort(404)

    def local(moment: datetime | None) -> str:
        return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else ""

    def show(template: str, title: str, code: int = 200, **context: Any) -> Response:
        context.setdefault("refresh", False)
        html = render_template(
            f"admin/{template}",
            _=_,
            lang=language if translations() else "en",  # a language the desk has no texts for is shown in English
            title=title,
            organisation=settings.organisation.name if settings.organisation else settings.site.title,
            me=g.get("admin_email"),
            csrf_token=g.get("csrf", ""),
            lists=settings.lists,
            local=local,
            flash=request.args.get("done", "")[:300],
            problem=context.pop("problem", None) or request.args.get("problem", "")[:500],
            **context,
        )
        return make_response(html, code)

    def back(endpoint: str, done: str = "", problem: str = "", **values: Any) -> Response:
        """Post/redirect/get: the page again, with what happened in its query (shown escaped)."""
        values.update({k: v for k, v in {"done": done, "problem": problem}.items() if v})
        return redirect(url_for(endpoint, **values), 303)  # type: ignore[return-value]

    # ------------------------------------------------------------ the guard

    @admin.before_request
    def guard() -> Response | None:
        if request.endpoint in ("admin.login", "admin.login_post", "admin.css"):
            return None
        found = accounts.session(store, request.cookies.get(COOKIE, ""))
        if found is None:
            if request.method == "GET":
                return redirect(url_for("admin.login", next=request.full_path.rstrip("?")), 303)  # type: ignore[return-value]
            return make_response(_("Sign in first.") + "\n", 401, {"Content-Type": "text/plain; charset=utf-8"})
        if request.method == "POST" and not secrets.compare_digest(
            request.form.get("csrf_token", "").encode(), found.csrf.encode()
        ):
            abort(400)
        g.admin_email, g.csrf = found.admin.email, found.csrf
        return None

    @admin.after_request
    def private(response: Response) -> Response:
        response.headers["Cache-Control"] = "private, max-age=3600" if request.endpoint == "admin.css" else "no-store"
        response.headers.setdefault("Content-Security-Policy", ADMIN_CSP)
        return response

    # ------------------------------------------------------------ sign in and out

    def login_form(message: str = "", status: int = 200, email: str = "") -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
        response = show(
            "login.html.j2",
            _("Sign in"),
            status,
            login_token=tokens.csrf(nonce),
            next=safe_next(request.values.get("next", "")),
            message=message,
            email=email,
        )
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="Strict", secure=True, path="/admin")
        return response

    def safe_next(target: str) -> str:
        """Only a path of the desk itself: never another site (an open redirect)."""
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path.startswith("/admin/") or "\\" in target:
            return url_for("admin.home")
        return target

    @admin.get("/admin.css")
    def css() -> Response:
        from flask import send_file

        return send_file(template_file(settings.templates_dir, "admin/admin.css"), mimetype="text/css", max_age=3600)

    @admin.get("/login")
    def login() -> Response:
        return login_form()

    @admin.post("/login")
    @limiter.limit(settings.web.login_rate_limit)
    @limiter.limit(
        settings.web.login_rate_limit_per_account,
        key_func=lambda: "account:" + request.form.get("email", "").strip().lower()[:254],
    )
    def login_post() -> Response:
        if not tokens.check_csrf(request.form.get("csrf_token", ""), request.cookies.get(LOGIN_COOKIE, "")):
            abort(400)
        email = request.form.get("email", "")[:254]
        signed = accounts.sign_in(store, email, request.form.get("password", ""))
        if signed is None:
            return login_form(_("That address and password do not match an account."), 401, email=email)
        response = make_response(redirect(safe_next(request.form.get("next", "")), 303))
        response.set_cookie(
            COOKIE,
            signed.token,
            max_age=int(accounts.LONGEST.total_seconds()),
            secure=True,
            httponly=True,
            samesite="Strict",
            path="/admin",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/admin")
        return response

    @admin.post("/logout")
    def logout() -> Response:
        accounts.sign_out(store, request.cookies.get(COOKIE, ""))
        response = make_response(redirect(url_for("admin.login"), 303))
        response.delete_cookie(COOKIE, path="/admin", secure=True, httponly=True, samesite="Strict")
        return response

    # ------------------------------------------------------------ lists

    @admin.get("/")
    def home() -> Response:
        rows = []
        for mailing_list in settings.lists:
            issues = store.issues(mailing_list.name)
            choices = store.draft_choices(mailing_list.name)
            rows.append(
                {
                    "list": mailing_list,
                    "active": store.count_subscribers(mailing_list.name, "active"),
                    "all": store.count_subscribers(mailing_list.name),
                    "last": issues[-1] if issues else None,
                    "choices": choices,
                    "sends": [s for s in jobs.scheduled_sends(store, mailing_list.name) if s["status"] == "scheduled"],
                }
            )
        return show("home.html.j2", _("Lists"), rows=rows)

    # ------------------------------------------------------------ the draft

    @admin.get("/lists/<list_name>/draft")
    def draft(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        view = jobs.draft_view(settings, store, mailing_list)
        width = request.args.get("width", "desktop")
        if width not in PREVIEW_WIDTHS:
            width = "desktop"
        return show(
            "draft.html.j2",
            _("Next issue of {list}").format(list=mailing_list.title),
            mailing_list=mailing_list,
            view=view,
            summaries={k: v.summary for k, v in view.choices.items.items() if v.summary},
            width=width,
            widths=PREVIEW_WIDTHS,
            sends=[s for s in jobs.scheduled_sends(store, list_name) if s["status"] in ("scheduled", "waiting")],
        )

    @admin.get("/lists/<list_name>/preview")
    def preview(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        made = jobs.next_draft(settings, store, mailing_list)
        if made is None:
            html = "<!DOCTYPE html><html lang=en><title>No issue</title><p>Nothing new: no next issue yet.</p></html>"
        else:
            html = jobs.preview(settings, made).html
        response = make_response(html, 200, {"Content-Type": "text/html; charset=utf-8"})
        # Framed by the draft page only: the email's own styles, no script, nothing else inline.
        response.headers["Content-Security-Policy"] = archive_csp(html, frame_ancestors="'self'")
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response

    @admin.post("/lists/<list_name>/draft")
    def draft_edit(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        form = request.form
        values = {k: form.get(k, "")[:20000] for k in ("note", "subject", "preheader") if k in form}
        jobs.edit_draft(store, mailing_list, **values)
        return back("admin.draft", _("Draft saved."), list_name=list_name)

    @admin.post("/lists/<list_name>/draft/items")
    def draft_item(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        form = request.form
        ref, action = form.get("item", ""), form.get("action", "")
        try:
            if action == "exclude":
                stored = jobs.choose_item(settings, store, mailing_list, ref, excluded=True)
                done = _("Left out: {title}").format(title=stored.item.title)
            elif action == "include":
                stored = jobs.choose_item(settings, store, mailing_list, ref, included=True)
                done = _("Put back: {title}").format(title=stored.item.title)
            elif action in ("up", "down"):
                stored = jobs.move_item(settings, store, mailing_list, ref, by=-1 if action == "up" else 1)
                done = _("Moved: {title}").format(title=stored.item.title)
            elif action == "summary":
                text = form.get("summary", "")[:5000].strip()
                stored = jobs.choose_item(settings, store, mailing_list, ref, summary=text or None)
                done = _("Summary saved: {title}").format(title=stored.item.title)
            else:
                abort(400)
        except (FlygbladError, ValueError) as err:
            return back("admin.draft", problem=str(err), list_name=list_name)
        return back("admin.draft", done, list_name=list_name)

    @admin.post("/lists/<list_name>/approve")
    def approve(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        try:
            jobs.approve_draft(settings, store, mailing_list, by=g.admin_email)
        except FlygbladError as err:
            return back("admin.draft", problem=str(err), list_name=list_name)
        return back("admin.draft", _("Approved: the next firing sends this issue."), list_name=list_name)

    @admin.post("/lists/<list_name>/test")
    def test_send(list_name: str) -> Response:
        from pipeline.subscribers import check_address

        mailing_list = known_list(list_name)
        try:
            address = check_address(request.form.get("address", ""))
            tried = jobs.send_test(settings, store, mailing_list, address)
        except (SubscriberError, FlygbladError) as err:
            return back("admin.draft", problem=_("Test not sent: {why}").format(why=err), list_name=list_name)
        if tried is None:
            return back("admin.draft", problem=_("Nothing new: there is no issue to test."), list_name=list_name)
        issue, result = tried
        if result.status != "sent":
            return back(
                "admin.draft",
                problem=_("Test to {address}: {status} {reply}").format(
                    address=address, status=result.status, reply=result.reply
                ),
                list_name=list_name,
            )
        return back(
            "admin.draft",
            _("Test of issue {number} sent to {address}.").format(number=issue.number, address=address),
            list_name=list_name,
        )

    @admin.post("/lists/<list_name>/send")
    def send_now(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        running = sending.get(list_name)
        if running is not None and running.is_alive():
            return back("admin.issues", problem=_("This list is being sent already."), list_name=list_name)

        outcome: list[jobs.ListSendReport] = []

        def run() -> None:
            try:
                outcome.append(jobs.send_and_publish(settings, store, mailing_list))
            except Exception:  # noqa: BLE001 - the ledger keeps what was sent; the next send resumes
                import logging

                logging.getLogger(__name__).exception("send of %s from the admin failed", list_name)

        thread = threading.Thread(target=run, name=f"flygblad-admin-send-{list_name}", daemon=True)
        sending[list_name] = thread
        thread.start()
        thread.join(timeout=2)  # a small list is done by the time the page shows
        if outcome and not outcome[0].sends:  # nothing was sent, and the reason is known: say it
            return back(
                "admin.draft", problem=_("Nothing sent: {why}").format(why=outcome[0].note), list_name=list_name
            )
        if outcome:
            return back("admin.issues", "; ".join(s.summary() for s in outcome[0].sends), list_name=list_name)
        return back("admin.issues", _("Sending started."), list_name=list_name)

    @admin.post("/lists/<list_name>/send-at")
    def send_at(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        raw = request.form.get("at", "").strip()[:40]
        try:
            when = datetime.fromisoformat(raw.replace(" ", "T")).replace(tzinfo=tz)
            at = jobs.schedule_send(store, mailing_list, when)
        except ValueError:
            return back(
                "admin.draft",
                problem=_("Not a date and time: {value} (YYYY-MM-DD HH:MM)").format(value=repr(raw)),
                list_name=list_name,
            )
        except FlygbladError as err:
            return back("admin.draft", problem=str(err), list_name=list_name)
        return back("admin.draft", _("The issue goes out at {at}.").format(at=local(at)), list_name=list_name)

    @admin.post("/lists/<list_name>/send-at/cancel")
    def send_at_cancel(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        try:
            jobs.cancel_send(store, mailing_list, datetime.fromisoformat(request.form.get("due", "")))
        except (ValueError, FlygbladError) as err:
            return back("admin.draft", problem=str(err), list_name=list_name)
        return back("admin.draft", _("The scheduled send is cancelled."), list_name=list_name)

    # ------------------------------------------------------------ issues

    @admin.get("/lists/<list_name>/issues")
    def issues(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        rows = [(issue, store.outbox_counts(issue.id)) for issue in reversed(store.issues(list_name))]
        refresh = any(issue.status == "sending" for issue, _ in rows) or (
            sending.get(list_name) is not None and sending[list_name].is_alive()
        )
        return show(
            "issues.html.j2",
            _("Issues of {list}").format(list=mailing_list.title),
            mailing_list=mailing_list,
            rows=rows,
            refresh=refresh,
        )

    @admin.get("/lists/<list_name>/issues/<int:number>")
    def issue(list_name: str, number: int) -> Response:
        mailing_list = known_list(list_name)
        try:
            found = jobs.delivery_log(store, list_name, number)
        except FlygbladError:
            abort(404)
        return show(
            "issue.html.j2",
            _("Issue {number} of {list}").format(number=number, list=mailing_list.title),
            mailing_list=mailing_list,
            log=found,
            refresh=found.issue.status == "sending",
        )

    # ------------------------------------------------------------ subscribers

    def subscribers_page(
        mailing_list: ListSettings, text: str = "", status: str = "", page_number: int = 1, **report: Any
    ) -> Response:
        """The subscribers page: a page of those matching *text* and *status*, and an import's report if any."""
        chosen = (status,) if status in STATUSES else ()
        rows, total = store.find_subscribers(
            mailing_list.name, text, statuses=chosen, limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE
        )
        return show(
            "subscribers.html.j2",
            _("Subscribers of {list}").format(list=mailing_list.title),
            mailing_list=mailing_list,
            rows=rows,
            total=total,
            counts={s: store.count_subscribers(mailing_list.name, s) for s in STATUSES},
            q=text,
            status=status if chosen else "",
            statuses=STATUSES,
            page=page_number,
            pages=max(1, -(-total // PAGE_SIZE)),
            report=report.get("report"),
            filename=report.get("filename", ""),
        )

    @admin.get("/lists/<list_name>/subscribers")
    def subscribers(list_name: str) -> Response:
        page = request.args.get("page", "1")
        return subscribers_page(
            known_list(list_name),
            request.args.get("q", "")[:254].strip(),
            request.args.get("status", ""),
            max(1, min(10**6, int(page))) if page.isdigit() else 1,
        )

    @admin.get("/lists/<list_name>/suppressed")
    def suppressed(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        rows, total = store.find_subscribers(list_name, statuses=tuple(sorted(SUPPRESSED)), limit=1000)
        return show(
            "suppressed.html.j2",
            _("Suppression list of {list}").format(list=mailing_list.title),
            mailing_list=mailing_list,
            rows=rows,
            total=total,
        )

    @admin.post("/lists/<list_name>/subscribers/add")
    def subscriber_add(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        form = request.form
        status = form.get("status", "active")
        if status not in ("active", "unconfirmed"):
            abort(400)
        try:
            added = jobs.add_subscriber(
                settings,
                store,
                mailing_list,
                form.get("email", "")[:320],
                name=form.get("name", "")[:200] or None,
                language=form.get("language", "")[:35] or None,
                status=status,
            )
        except SubscriberError as err:
            return back("admin.subscribers", problem=_("Not added: {why}").format(why=err), list_name=list_name)
        return back(
            "admin.subscribers", _("Added: {summary}").format(summary=added.report.summary()), list_name=list_name
        )

    @admin.post("/lists/<list_name>/subscribers/import")
    def subscriber_import(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        upload = request.files.get("file")
        status = request.form.get("status", "active")
        if upload is None or status not in ("active", "unconfirmed"):
            return back("admin.subscribers", problem=_("Choose a CSV file to import."), list_name=list_name)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "import.csv"
            upload.save(path)
            if path.stat().st_size > MAX_UPLOAD:
                return back("admin.subscribers", problem=_("The file is over 1 MB."), list_name=list_name)
            added = jobs.import_subscribers(settings, store, mailing_list, path, status=status)
        return subscribers_page(mailing_list, report=added.report, filename=(upload.filename or "")[:200])

    @admin.get("/lists/<list_name>/subscribers.csv")
    def subscriber_export(list_name: str) -> Response:
        import io

        mailing_list = known_list(list_name)
        out = io.StringIO()
        jobs.export_subscribers(settings, store, mailing_list, out)
        stamp = datetime.now(UTC).astimezone(tz).strftime("%Y-%m-%d")
        return make_response(
            out.getvalue(),
            200,
            {
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{list_name}-{stamp}.csv"',
            },
        )

    @admin.post("/lists/<list_name>/subscribers/remove")
    def subscriber_remove(list_name: str) -> Response:
        known_list(list_name)
        email = request.form.get("email", "")[:320]
        if not store.remove_subscriber(list_name, email.strip()):
            return back(
                "admin.subscribers", problem=_("{email} is not on the list.").format(email=email), list_name=list_name
            )
        return back("admin.subscribers", _("Removed: {email}").format(email=email), list_name=list_name)

    @admin.post("/lists/<list_name>/subscribers/suppress")
    def subscriber_suppress(list_name: str) -> Response:
        mailing_list = known_list(list_name)
        email = request.form.get("email", "")[:320]
        if not jobs.suppress_subscriber(store, mailing_list, email):
            return back(
                "admin.subscribers", problem=_("{email} is not on the list.").format(email=email), list_name=list_name
            )
        return back(
            "admin.subscribers", _("Suppressed: {email} gets no more issues.").format(email=email), list_name=list_name
        )

    # ------------------------------------------------------------ schedules and sources

    @admin.get("/schedules")
    def schedules() -> Response:
        from pipeline.schedule import next_runs

        rows = [
            {
                "schedule": schedule,
                "next": next_runs(settings, schedule, 5),
                "last": jobs.recent_firings(store, schedule.name, 5),
            }
            for schedule in settings.schedules
        ]
        return show("schedules.html.j2", _("Schedules"), rows=rows, sends=jobs.scheduled_sends(store)[:50])

    @admin.get("/sources")
    def sources() -> Response:
        runs = store.source_runs()
        rows = [(source, runs.get(source.name)) for source in settings.sources]
        return show("sources.html.j2", _("Sources"), rows=rows)

    app.register_blueprint(admin)


__all__ = ["COOKIE", "register"]

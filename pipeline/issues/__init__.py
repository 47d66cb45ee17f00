"""Issues: what is new for a list, rendered once and frozen.

Interface of this stage:

* :func:`next_issue` decides what the list's next issue holds (the items first
  seen since its previous issue: leaders first, then articles, newest first, at
  most ``max_items``) and renders it, without storing anything: a preview;
* :func:`freeze` stores a draft as a frozen issue, so the later send uses the
  very bytes the preview showed (:func:`pipeline.jobs.freeze_next` decides
  when, in the list's turn);
* :class:`~pipeline.store.Issue` is a frozen issue.

No new items means no issue: both return ``None``.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.config import ListSettings, Settings
from pipeline.errors import RenderError, TooBig
from pipeline.render import Rendered, item_problem, order_items, render_issue
from pipeline.render.checks import GMAIL_CLIP_BYTES
from pipeline.store import Store
from pipeline.types import DraftChoices, DraftItem, Issue, Media, StoredItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draft:
    """The next issue of a list, rendered but not frozen."""

    list: ListSettings
    number: int
    items: builtins.list[StoredItem]
    left_out: int  # new items beyond max_items
    cutoff: datetime  # the newest first_seen considered; the issue after this one starts there
    rendered: Rendered

    def as_issue(self) -> Issue:
        """The draft as an (unstored) Issue, for a test send of what would be frozen next."""
        r = self.rendered
        return Issue(
            id=0,
            list=self.list.name,
            number=self.number,
            subject=r.subject,
            preheader=r.preheader,
            html=r.html,
            text=r.text,
            nonce=r.nonce,
            language=r.language,
            created=datetime.now(UTC),
            cutoff=self.cutoff,
            status="draft",
            item_ids=tuple(s.item.id for s in self.items),
        )


@dataclass(frozen=True)
class NewItems:
    """What is new for a list's next issue, in issue order."""

    chosen: builtins.list[StoredItem]
    #: New, but beyond max_items: they wait for the next issue.
    left_out: builtins.list[StoredItem]
    #: New to flygblad but published before the issue's window (a first issue's back catalogue, or
    #: before ``send --since``): never mailed; the issue's cutoff passes them.
    too_old: builtins.list[StoredItem]
    #: Left out of this issue by a communicator: passed over like the too old ones.
    excluded: builtins.list[StoredItem] = dataclasses.field(default_factory=builtins.list)


def window_start(
    settings: Settings, store: Store, mailing_list: ListSettings, *, since: datetime | None = None
) -> datetime | None:
    """The earliest publication an issue takes: *since*, or for a list's first issue ``first_issue_days`` back."""
    if since is not None:
        return since
    if store.issue(mailing_list.name) is None:
        return datetime.now(UTC) - timedelta(days=mailing_list.first_issue_days)
    return None


def new_items(
    settings: Settings,
    store: Store,
    mailing_list: ListSettings,
    *,
    since: datetime | None = None,
    choices: DraftChoices | None = None,
) -> NewItems:
    """The items for the list's next issue in issue order, those max_items left out, and those passed over.

    "New" is first seen after the previous issue's cutoff, and in no issue of the
    list yet: the store's own clock decides, so an issue built with a back-dated
    ``now`` changes nothing. A first issue (or ``send --since``) takes only what
    was published in its window: a list that starts today does not mail its
    subscribers years of back catalogue. Then the communicator's draft choices
    apply: items left out, put in, placed, or given a shorter summary.
    """
    choices = choices if choices is not None else store.draft_choices(mailing_list.name)
    previous = store.issue(mailing_list.name)
    found = store.items_first_seen_after(
        settings.list_sources(mailing_list), previous.cutoff if previous else None, not_in_list=mailing_list.name
    )
    seen = {s.item.id for s in found}
    forced = [c.item_id for c in choices.items.values() if c.included and c.item_id not in seen]
    if forced:  # put in by hand: not new, or older than the window, but not yet in an issue of the list
        in_issues = store.items_in_list_issues(mailing_list.name, forced)
        found += [s for s in store.items_by_id(forced) if s.item.id not in in_issues]
    found = [s for s in found if not _unusable(s)]
    start = window_start(settings, store, mailing_list, since=since)

    def choice(stored: StoredItem) -> DraftItem | None:
        return choices.items.get(stored.item.id)

    excluded = [s for s in found if (c := choice(s)) is not None and c.excluded]
    too_old = [
        s
        for s in found
        if start is not None
        and (s.item.published or s.first_seen) < start
        and not ((c := choice(s)) is not None and c.included)
    ]
    passed = {s.item.id for s in excluded + too_old}
    ordered = order_items([s for s in found if s.item.id not in passed])

    def place(pair: tuple[int, StoredItem]) -> tuple[int, int, int]:
        """Placed items first, by their position; the others after them, in the usual order."""
        c = choice(pair[1])
        return (0, c.position, pair[0]) if c is not None and c.position else (1, 0, pair[0])

    placed = sorted(enumerate(ordered), key=place)
    final = []
    for _, stored in placed:
        c = choice(stored)
        if c is not None and c.summary:
            stored = replace(stored, item=replace(stored.item, summary=c.summary))
        final.append(stored)
    if choices.approved:  # exactly what was approved; what came after waits for the next issue
        final = [s for s in final if (c := choice(s)) is not None and c.position]
    return NewItems(final[: mailing_list.max_items], final[mailing_list.max_items :], too_old, excluded)


def _unusable(stored: StoredItem) -> bool:
    """An item that would break the issue's rules is left out (and said so), never blocking the list."""
    problem = item_problem(stored)
    if problem:
        log.warning("%s", problem)
    return problem is not None


def next_issue(
    settings: Settings,
    store: Store,
    mailing_list: ListSettings,
    *,
    now: datetime | None = None,
    since: datetime | None = None,
) -> Draft | None:
    """Render the list's next issue without freezing it; ``None`` when nothing is new."""
    choices = store.draft_choices(mailing_list.name)
    new = new_items(settings, store, mailing_list, since=since, choices=choices)
    if not new.chosen:
        return None
    return draft(
        settings,
        store,
        mailing_list,
        new.chosen,
        left_out=new.left_out,
        too_old=new.too_old + new.excluded,
        now=now,
        choices=choices,
    )


def draft(
    settings: Settings,
    store: Store,
    mailing_list: ListSettings,
    items: list[StoredItem],
    *,
    left_out: list[StoredItem] | None = None,
    too_old: list[StoredItem] | None = None,
    now: datetime | None = None,
    choices: DraftChoices | None = None,
) -> Draft:
    """Render *items* as the list's next issue (its next number), without freezing it."""
    left_out = left_out or []
    too_old = too_old or []
    previous = store.issue(mailing_list.name)
    number = (previous.number if previous else 0) + 1
    date = now or datetime.now(UTC)
    items = list(items)
    images = store.media_for(s.item.image for s in items if s.item.image)  # as kept at collect time
    logo = list_logo(settings, store, mailing_list)
    trimmed = 0
    while True:
        try:
            rendered = render_issue(
                settings,
                mailing_list,
                items,
                date=date,
                number=number,
                images=images,
                note=choices.note if choices else None,
                subject=choices.subject if choices else None,
                preheader=choices.preheader if choices else None,
                keep_order=choices is not None,  # new_items put them in the issue's (and the editor's) order
                link_wrapper=click_links(settings, mailing_list, number),
                logo=logo,
            )
            break
        except TooBig as too_big:
            if len(items) <= 1:
                raise
            # Leave out the last (oldest) items until the email is under Gmail's clipping size.
            keep = max(1, min(len(items) - 1, int(len(items) * too_big.limit / too_big.size * 0.97)))
            trimmed += len(items) - keep
            left_out = items[keep:] + left_out
            items = items[:keep]
    if trimmed:
        note = (
            f"{trimmed} items left out so that the email stays under Gmail's {GMAIL_CLIP_BYTES // 1024} KB "
            "clipping size (lower the list's max_items to choose yourself)"
        )
        log.warning("list %s: %s", mailing_list.name, note)
        rendered = replace(rendered, warnings=(*rendered.warnings, note))
    cutoff = max(s.first_seen for s in items + left_out + too_old)
    if previous is not None:
        cutoff = max(cutoff, previous.cutoff)  # an issue never moves "new" backwards
    return Draft(mailing_list, number, items, len(left_out), cutoff, rendered)


def list_logo(settings: Settings, store: Store, mailing_list: ListSettings) -> Media | None:
    """The list's logo kept in the media folder (once per version of the file), or None without one.

    Kept here, where an issue is drafted, rather than in the renderer, which only formats what it is given.
    """
    if not mailing_list.logo:
        return None
    from pipeline.images import NotAnImage, keep_file

    path = settings.resolve(mailing_list.logo)
    try:
        stat = path.stat()
        key = f"{path.resolve().as_uri()}#{stat.st_size}-{stat.st_mtime_ns}"  # a new file is kept again
        found = store.media_for([key]).get(key)
        if found is not None:
            return found
        kept = keep_file(path, settings.media_dir)
    except (NotAnImage, OSError) as err:
        raise RenderError(f"list {mailing_list.name!r}: the logo {path}: {err}") from err
    store.save_media(key, digest=kept.digest, ext=kept.ext, width=kept.width, height=kept.height)
    return replace(kept, url=key)


def versions_for(
    settings: Settings,
    store: Store,
    draft: Draft,
    languages: set[str],
    *,
    now: datetime | None = None,
    choices: DraftChoices | None = None,
) -> dict[str, dict[str, str]]:
    """The draft rendered in each of *languages* other than its own: the same items, number and placeholders."""
    images = store.media_for(s.item.image for s in draft.items if s.item.image)
    logo = list_logo(settings, store, draft.list)
    out = {}
    for language in sorted(languages - {draft.rendered.language}):
        rendered = render_issue(
            settings,
            draft.list,
            draft.items,
            date=now or datetime.now(UTC),
            number=draft.number,
            nonce=draft.rendered.nonce,
            images=images,
            language=language,
            note=choices.note if choices else None,
            subject=choices.subject if choices else None,
            preheader=choices.preheader if choices else None,
            keep_order=True,
            link_wrapper=click_links(settings, draft.list, draft.number),
            logo=logo,
        )
        out[language] = {
            "subject": rendered.subject,
            "preheader": rendered.preheader,
            "html": rendered.html,
            "text": rendered.text,
        }
    return out


def click_links(settings: Settings, mailing_list: ListSettings, number: int) -> Callable[[str], str] | None:
    """For a ``track_clicks`` list: a link's signed redirect through ``/c/`` (naming issue and URL, never a person)."""
    if not mailing_list.track_clicks:
        return None
    from pipeline.tokens import tokens_for

    tokens = tokens_for(settings)
    base = settings.web_base_url
    return lambda url: f"{base}/c/{tokens.click(mailing_list.name, number, url)}"


def frozen_content(draft: Draft, *, now: datetime | None = None) -> dict[str, Any]:
    """What the store keeps of a draft (:meth:`~pipeline.store.ListTurn.freeze`'s arguments)."""
    rendered = draft.rendered
    return {
        "subject": rendered.subject,
        "preheader": rendered.preheader,
        "html": rendered.html,
        "text": rendered.text,
        "nonce": rendered.nonce,
        "language": rendered.language,
        "item_ids": [s.item.id for s in draft.items],
        "cutoff": draft.cutoff,
        "created": now or datetime.now(UTC),
    }


def freeze(store: Store, draft: Draft, *, now: datetime | None = None) -> Issue:
    """Store a draft as a frozen issue: what is sent later is exactly these bytes."""
    return store.freeze_issue(draft.list.name, **frozen_content(draft, now=now))


def rendered_of(issue: Issue) -> Rendered:
    """A frozen issue as a :class:`Rendered`, to fill in recipients' values."""
    return Rendered(issue.subject, issue.preheader, issue.html, issue.text, issue.nonce, issue.language)


__all__ = [
    "Draft",
    "Issue",
    "NewItems",
    "draft",
    "versions_for",
    "freeze",
    "frozen_content",
    "new_items",
    "next_issue",
    "rendered_of",
]

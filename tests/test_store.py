"""The store on SQLite and PostgreSQL: stable keys, in-place updates, aware times, migrations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect, text

from pipeline.sources import Item, Validators
from pipeline.store import Store

T0 = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)


def _item(n: int, **changes: object) -> Item:
    item = Item(
        id=f"https://site.example/a/{n}",
        source="ledare",
        category="leader",
        url=f"https://site.example/a/{n}",
        title=f"Rubrik {n}",
        author="Anna Ek",
        author_role="Redaktör",
        published=T0 + timedelta(days=n),
        summary="Sammanfattning",
        body_html="<p>Text med åäö</p>",
        language="sv",
    )
    return replace(item, **changes)


def test_a_batch_of_items_says_what_saving_them_one_by_one_would(store_url: str) -> None:
    """save_items (one transaction, executemany) gives each item the outcome save_item would, in order:
    repeats within the batch, changes, an item another source collected first, a category changed."""
    from pipeline.types import Validators

    with Store.open(store_url) as store:
        assert store.save_item(_item(1), now=T0) == "new"
        batch = [
            (_item(1), None, None),  # known, the same
            (_item(2), "https://site.example/a/2", Validators('"v2"', None)),  # new, with its page's validators
            (_item(2, title="Rubrik 2, rättad"), None, None),  # the same id again, changed: updated
            (_item(3), None, None),
            (_item(1, source="artiklar", category="article"), None, None),  # another source lists 1: new to it
            (_item(1, title="Artiklars rubrik", source="artiklar", category="article"), None, None),  # not its
        ]
        outcomes = store.save_items(
            batch,
            now=T0 + timedelta(hours=1),
            listings=[("https://site.example/", Validators('"l"', None), ["a", "b"])],
        )
        assert outcomes == ["unchanged", "new", "updated", "new", "new", "unchanged"]
        stored = {s.item.id: s for s in store.items()}
        assert stored["https://site.example/a/2"].item.title == "Rubrik 2, rättad"
        assert stored["https://site.example/a/1"].item.title == "Rubrik 1", "the first source's content stays"
        assert [s.item.id for s in store.items(source="artiklar")] == ["https://site.example/a/1"]
        assert store.validators("https://site.example/a/2") == Validators('"v2"', None)
        assert store.links("https://site.example/") == ["a", "b"]
        again = store.save_items([(_item(1, category="article"), None, None)], now=T0 + timedelta(hours=2))
        assert again == ["updated"]  # the source's category changed in the config: the item and its listing
        [ledare] = [s for s in store.items(source="ledare") if s.item.id == "https://site.example/a/1"]
        assert ledare.item.category == "article"


def test_an_item_read_in_another_process_is_saved_by_what_it_says_now(store_url: str) -> None:
    """The digest an item carries from a reading process (pickled with it) is its own: an article changed
    since the last collect is saved as updated, an unchanged one as unchanged."""
    import pickle

    from pipeline.sources import Found

    with Store.open(store_url) as store:
        assert store.save_item(_item(1), now=T0) == "new"
        read_elsewhere = [
            pickle.loads(pickle.dumps(Found(it, it.url))).item
            for it in (_item(1), replace(_item(1), body_html="<p>Rättad text</p>"))
        ]
        assert store.save_item(read_elsewhere[0], now=T0 + timedelta(hours=1)) == "unchanged"
        assert store.save_item(read_elsewhere[1], now=T0 + timedelta(hours=2)) == "updated"
        [stored] = store.items()
        assert stored.item.body_html == "<p>Rättad text</p>"


def test_insert_update_unchanged(store_url: str) -> None:
    with Store.open(store_url) as store:
        assert store.save_item(_item(1), now=T0) == "new"
        assert store.save_item(_item(1), now=T0 + timedelta(hours=1)) == "unchanged"
        assert store.save_item(_item(1, title="Ny rubrik"), now=T0 + timedelta(hours=2)) == "updated"
        [stored] = store.items()
        assert stored.item.title == "Ny rubrik"
        assert stored.first_seen == T0
        assert stored.updated == T0 + timedelta(hours=2)
        assert stored.updated.tzinfo is not None and stored.item.published.tzinfo is not None
        assert store.count_items() == 1


def test_newest_first_and_by_source(store_url: str) -> None:
    with Store.open(store_url) as store:
        for n in (2, 5, 1):
            store.save_item(_item(n), now=T0)
        store.save_item(_item(9, source="artiklar", category="article", published=None), now=T0)
        assert [s.item.title for s in store.items()] == ["Rubrik 5", "Rubrik 2", "Rubrik 1", "Rubrik 9"]
        assert [s.item.title for s in store.items(source="artiklar")] == ["Rubrik 9"]
        assert [s.item.title for s in store.items(limit=2)] == ["Rubrik 5", "Rubrik 2"]


def test_an_item_in_two_sources_is_stored_once_and_belongs_to_each(store_url: str) -> None:
    """The second source of one item (a WordPress RSS + Atom pair, a category feed inside the main feed) came out
    empty: its feed had nothing, and its category never applied."""
    with Store.open(store_url) as store:
        assert store.save_item(_item(1, category="article"), now=T0) == "new"
        leader = _item(1, source="artiklar", category="leader", title="Annan rubrik")
        assert store.save_item(leader, now=T0 + timedelta(hours=1)) == "new"  # new to that source
        assert store.save_item(leader, now=T0 + timedelta(hours=2)) == "unchanged"
        assert store.count_items() == 1
        [stored] = store.items()
        assert (stored.item.source, stored.item.title) == ("ledare", "Rubrik 1")  # the first source's content
        assert stored.item.category == "leader"  # the strongest category any source gives
        assert [s.item.category for s in store.items(source="ledare")] == ["article"]
        assert [s.item.category for s in store.items(source="artiklar")] == ["leader"]
        assert store.item_sources([stored.item.id]) == {stored.item.id: ["ledare", "artiklar"]}
        # A list of the second source alone sees it first when that source first saw it.
        [listed] = store.items_first_seen_after(["artiklar"], T0)
        assert (listed.first_seen, listed.item.category) == (T0 + timedelta(hours=1), "leader")
        assert store.items_first_seen_after(["ledare"], T0) == []


def test_fetch_state(store_url: str) -> None:
    with Store.open(store_url) as store:
        assert store.validators("https://site.example/") is None
        listing = ("https://site.example/", Validators('"abc"', "Wed, 06 Mar 2024 12:00:00 GMT"), ["u1", "u2"])
        assert store.save_items([], listings=[listing]) == []  # a listing without new items (all 304)
        assert store.validators("https://site.example/") == Validators('"abc"', "Wed, 06 Mar 2024 12:00:00 GMT")
        assert store.links("https://site.example/") == ["u1", "u2"]
        store.save_item(_item(1), fetched_url="https://site.example/a/1", validators=Validators('"x"'))
        assert store.validators("https://site.example/a/1") == Validators('"x"')
        store.save_items([], listings=[("https://site.example/", Validators('"def"'), ["u3"])])
        assert store.links("https://site.example/") == ["u3"]


def test_migrations_run_once_and_reopen(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.save_item(_item(1), now=T0)
        tables = set(inspect(store.engine).get_table_names())
    assert {"items", "fetch_state", "alembic_version"} <= tables
    with Store.open(store_url) as again:
        assert again.count_items() == 1


def test_the_head_revision_the_store_knows_is_alembics(store_url: str) -> None:
    """Store.open skips Alembic when the database is at HEAD_REVISION: that must be the newest migration."""
    from importlib.resources import files

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pipeline.store import HEAD_REVISION

    config = Config()
    config.set_main_option("script_location", str(files("pipeline.store") / "migrations"))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]
    with Store.open(store_url) as store, store.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION


def test_a_store_from_before_items_had_sources_is_upgraded_in_place(store_url: str) -> None:
    """Migration 0009 gives every stored item its source's listing, with issues already referring to items (a
    rebuild of the items table failed there on SQLite), and old items keep their digest (no false "updated")."""
    from importlib.resources import files

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("pipeline.store") / "migrations"))
    old = replace(_item(1), author=None, author_role=None, published=None, summary=None, language=None)
    with Store.open(store_url, migrate=False) as store:
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0008")
        with store.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO items (id, source, category, url, title, body_html, content_hash, first_seen, "
                    "updated) VALUES (:id, :source, :category, :url, :title, :body, :digest, :seen, :seen)"
                ),
                {
                    "id": old.id,
                    "source": old.source,
                    "category": old.category,
                    "url": old.url,
                    "title": old.title,
                    "body": old.body_html,
                    "digest": old.content_hash(),
                    "seen": T0,
                },
            )
        issue = store.freeze_issue(
            "brev", subject="S", preheader="P", html="<p>h</p>", text="t", nonce="n", language="sv",
            item_ids=[old.id], cutoff=T0,
        )  # fmt: skip
    with Store.open(store_url) as store:
        assert store.item_sources([old.id]) == {old.id: ["ledare"]}
        [stored] = store.items(source="ledare")
        assert stored.item.note is False
        assert store.save_item(old, now=T0 + timedelta(days=1)) == "unchanged"
        assert store.issue("brev").id == issue.id


def test_outbox_ledger(store_url: str) -> None:
    from pipeline.store import LedgerUpdate
    from pipeline.subscribers import ImportReport, candidate

    with Store.open(store_url) as store:
        store.upsert_subscribers("brev", [candidate(f"p{n}@example.org") for n in range(5)], report=ImportReport())
        store.upsert_subscribers("brev", [candidate("gone@example.org")], status="unconfirmed", report=ImportReport())
        issue = store.freeze_issue(
            "brev",
            subject="S",
            preheader="P",
            html="<p>h</p>",
            text="t",
            nonce="n",
            language="sv",
            item_ids=[],
            cutoff=T0,
        )
        assert store.start_outbox(issue.id, "brev", now=T0) == 5, "only active subscribers"
        assert store.start_outbox(issue.id, "brev", now=T0) == 0, "a resume adds nobody"
        assert store.issue("brev").status == "sending"
        first = store.claim(issue.id, 2, now=T0, worker="w1")
        assert [r.email for r in first] == ["p0@example.org", "p1@example.org"]
        assert {r.status for r in first} == {"sending"} and {r.attempts for r in first} == {1}
        later = T0 + timedelta(minutes=5)
        nxt = store.record_and_claim(
            issue.id,
            [
                LedgerUpdate(first[0].subscriber_id, "sent", "m0", "p-0", "250 ok"),
                LedgerUpdate(first[1].subscriber_id, "deferred", "m1", None, "451 later", next_attempt=later),
            ],
            2,
            now=T0,
        )
        assert [r.email for r in nxt] == ["p2@example.org", "p3@example.org"]
        store.record(issue.id, [LedgerUpdate(nxt[0].subscriber_id, "bounced", "m2", None, "550 no")], now=T0)
        assert store.subscriber("brev", "p2@example.org").status == "bounced"
        assert store.abandon_claims(issue.id, now=T0) == 1, "p3 was claimed and never recorded"
        assert store.next_due(issue.id) == later
        assert [r.email for r in store.claim(issue.id, 5, now=T0)] == ["p4@example.org"]
        assert [r.email for r in store.claim(issue.id, 5, now=later)] == ["p1@example.org"], "a deferred row comes due"
        assert store.outbox_counts(issue.id) == {"sent": 1, "sending": 2, "bounced": 1, "uncertain": 1}
        store.release(issue.id, [store.outbox_rows(issue.id, "sending")[0].subscriber_id])
        assert store.requeue_uncertain(issue.id) == 1
        assert not store.finish_issue(issue.id)
        [sent] = store.outbox_rows(issue.id, "sent")
        assert (sent.message_id, sent.last_reply) == ("m0", "250 ok")


def test_postgresql_finds_a_big_sends_rows_by_key_from_the_start() -> None:
    """A fresh outbox has no statistics: PostgreSQL then read the issue's whole outbox for every batch of outcomes
    (quadratic in the list), and with statistics it walked the claim over the rows already sent. The store
    analyses a new outbox, and the claim has an index of pending rows: both are looked up by key."""
    from datetime import datetime

    from pipeline.subscribers import ImportReport, candidate
    from pipeline.types import LedgerUpdate
    from tests.conftest import postgres_schema

    with postgres_schema() as store_url, Store.open(store_url) as store:
        report = ImportReport()
        for start in range(0, 30_000, 1000):
            store.upsert_subscribers(
                "brev", [candidate(f"p{n}@example.org") for n in range(start, start + 1000)], report=report
            )
        with store.engine.connect() as connection:
            lookup = "\n".join(
                row[0]
                for row in connection.execute(
                    text("EXPLAIN SELECT id FROM subscribers WHERE list = 'brev' AND email_key = ANY(:k)"),
                    {"k": [f"p{n}@example.org" for n in range(0, 30_000, 300)]},
                )
            )
        assert "uq_subscribers_list_email_key" in lookup, lookup
        issue = store.freeze_issue(
            "brev", subject="S", preheader="", html="h", text="t", nonce="n", language="sv", item_ids=[], cutoff=T0
        )
        store.start_outbox(issue.id, "brev", now=T0)
        ledger = store._ledger()
        for _ in range(3):
            rows = store.claim(issue.id, 500, now=T0, worker="w")
            outcomes = [LedgerUpdate(r.subscriber_id, "sent", f"m{r.subscriber_id}", None, "250 ok") for r in rows]
            store.record(issue.id, outcomes, now=T0)
        with store.engine.connect() as connection:
            cursor = connection.connection.dbapi_connection.cursor()
            now = datetime.now(UTC)
            sql, params = ledger.record_many(issue.id, outcomes, now)
            cursor.execute("EXPLAIN " + sql, params)
            record = "\n".join(row[0] for row in cursor.fetchall())
            claim = ledger.claims[False]
            values = {"b_issue": issue.id, "b_limit": 500, "b_now": now, "b_worker": "w"}
            cursor.execute("EXPLAIN " + claim.sql, claim.args(values))
            claiming = "\n".join(row[0] for row in cursor.fetchall())
        assert "Index Scan using pk_outbox on outbox o" in record and "Bitmap" not in record, record
        assert "ix_outbox_pending" in claiming, claiming
        assert store.outbox_counts(issue.id) == {"sent": 1500, "pending": 28_500}


def test_a_drafts_choices_are_kept_approved_withdrawn_and_cleared(store_url: str) -> None:
    with Store.open(store_url) as store:
        for n in (1, 2):
            store.save_item(_item(n))
        store.edit_draft("brev", note="**Hej**", subject="Ämnet")
        store.edit_draft_item("brev", _item(1).id, excluded=True)
        store.place_draft_items("brev", [_item(2).id, _item(1).id])
        store.approve_draft("brev", "Redaktören")
        choices = store.draft_choices("brev")
        assert (choices.note, choices.subject, choices.approved_by) == ("**Hej**", "Ämnet", "Redaktören")
        assert choices.items[_item(1).id].excluded and choices.items[_item(2).id].position == 1
        store.edit_draft_item("brev", _item(2).id, summary="Kortare.")
        assert not store.draft_choices("brev").approved, "an edit withdraws the approval"
        store.clear_draft("brev")
        cleared = store.draft_choices("brev")
        assert cleared.items == {} and cleared.note is None and store.draft_choices("annat").items == {}


def test_postgresql_plans_each_lookup_for_its_own_addresses() -> None:
    """An import's lookup of 1,000 addresses a batch must use the list's index however large the list grew
    since the statement was prepared: PostgreSQL kept a small table's sequential-scan plan (bench.scale)."""
    from sqlalchemy import text

    from pipeline.subscribers import ImportReport, candidate
    from tests.conftest import postgres_schema

    with postgres_schema() as store_url, Store.open(store_url) as store:
        report = ImportReport()
        for start in range(0, 8000, 1000):  # more batches than psycopg's prepare threshold (5)
            store.upsert_subscribers(
                "nyhetsbrev", [candidate(f"p{n}@example.org") for n in range(start, start + 1000)], report=report
            )
        assert report.added == 8000
        with store.engine.connect() as connection:
            assert connection.execute(text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
            connection.execute(text("ANALYZE subscribers"))
            plan = "\n".join(
                row[0]
                for row in connection.execute(
                    text("EXPLAIN SELECT id FROM subscribers WHERE list = 'nyhetsbrev' AND email_key = ANY(:k)"),
                    {"k": [f"p{n}@example.org" for n in range(10)]},
                )
            )
        assert "uq_subscribers_list_email_key" in plan, plan

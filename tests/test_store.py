"""The store on SQLite and PostgreSQL: stable keys, in-place updates, aware times, migrations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect

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


def test_an_item_keeps_its_first_source(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.save_item(_item(1), now=T0)
        assert store.save_item(_item(1, source="artiklar"), now=T0) == "unchanged"
        assert store.items()[0].item.source == "ledare"


def test_fetch_state(store_url: str) -> None:
    with Store.open(store_url) as store:
        assert store.validators("https://site.example/") is None
        store.save_listing("https://site.example/", Validators('"abc"', "Wed, 06 Mar 2024 12:00:00 GMT"), ["u1", "u2"])
        assert store.validators("https://site.example/") == Validators('"abc"', "Wed, 06 Mar 2024 12:00:00 GMT")
        assert store.links("https://site.example/") == ["u1", "u2"]
        store.save_item(_item(1), fetched_url="https://site.example/a/1", validators=Validators('"x"'))
        assert store.validators("https://site.example/a/1") == Validators('"x"')
        store.save_listing("https://site.example/", Validators('"def"'), ["u3"])
        assert store.links("https://site.example/") == ["u3"]


def test_migrations_run_once_and_reopen(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.save_item(_item(1), now=T0)
        tables = set(inspect(store.engine).get_table_names())
    assert {"items", "fetch_state", "alembic_version"} <= tables
    with Store.open(store_url) as again:
        assert again.count_items() == 1

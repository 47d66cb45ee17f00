"""The public side against abuse, under waitress on 127.0.0.1: bad input gets a 4xx page, never a 500."""

from __future__ import annotations

import requests

from pipeline.store import Store
from pipeline.subscribers import ImportReport, candidate
from pipeline.tokens import Tokens
from tests.test_web import SECRET, _form, site  # noqa: F401 - the fixture


def test_a_huge_archive_number_is_404_not_500(site) -> None:  # noqa: F811
    settings, server = site
    answer = requests.get(f"{server.url}/archive/nyhetsbrev/{10**30}")
    assert answer.status_code == 404


def test_a_body_larger_than_any_real_request_is_refused(site) -> None:  # noqa: F811
    settings, server = site
    answer = requests.post(f"{server.url}/subscribe/nyhetsbrev", data=b"x" * (3 * 1024 * 1024))
    assert answer.status_code == 413


def test_one_address_gets_one_confirmation_an_hour_however_often_it_is_entered(site) -> None:  # noqa: F811
    """One client could make the site mail the same victim ten times a minute."""
    settings, server = site
    url = f"{server.url}/subscribe/nyhetsbrev"
    for _ in range(4):  # the form's own rate limit is 5 a minute per client
        session = requests.Session()
        token = _form(session, url)
        assert session.post(url, data={"csrf_token": token, "email": "victim@example.org"}).status_code == 200
    with Store.open(settings.storage_url) as store:
        victim = store.subscriber("nyhetsbrev", "victim@example.org")
        assert victim is not None
        assert len(store.mail_rows(victim.id)) == 1


def test_an_old_unsubscribe_link_never_reaches_the_next_subscriber(site) -> None:  # noqa: F811
    """On SQLite a removed subscriber's id was handed out again, and its old link unsubscribed the next person."""
    settings, server = site
    with Store.open(settings.storage_url) as store:
        store.upsert_subscribers("nyhetsbrev", [candidate("first@example.org")], report=ImportReport())
        first = store.subscriber("nyhetsbrev", "first@example.org")
        assert first is not None
        store.remove_subscriber("nyhetsbrev", "first@example.org")
        store.upsert_subscribers("nyhetsbrev", [candidate("next@example.org")], report=ImportReport())
        following = store.subscriber("nyhetsbrev", "next@example.org")
        assert following is not None and following.id != first.id
    old_link = f"{server.url}/unsubscribe/{Tokens(SECRET).unsubscribe(first.id, 'nyhetsbrev')}"
    assert requests.post(old_link, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "next@example.org").status == "active"

"""Each subscriber's language: checked at the door, and the issue written in it.

The subscriber ``language`` field used to be accepted whatever it said ("xx",
"klingon") and never used; English lists greeted "Hello Förnamn Efternamn" in
their previews.
"""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

from pipeline.config import Settings
from pipeline.store import Store
from tests.test_jobs import flygblad, with_list_options


def _messages(settings: Settings) -> dict[str, object]:
    out = {}
    for path in sorted(settings.outbox_dir.glob("nyhetsbrev.*.eml")):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        out[message["To"].addresses[0].addr_spec] = message
    return out


def test_a_language_the_templates_lack_is_refused_at_the_door(example_settings) -> None:
    settings = example_settings
    bad = flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "a@example.org", "--language", "xx")
    assert bad.returncode != 0 and "language 'xx' is not one the templates have (en, sv)" in bad.stderr, bad.stderr
    regional = flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "b@example.org", "--language", "en-GB")
    assert regional.returncode == 0, regional.stderr
    (settings.base_dir / "people.csv").write_text(
        "email,name,language\nc@example.org,C,sv\nd@example.org,D,fi\n", encoding="utf-8"
    )
    imported = flygblad(settings, "subscribers", "import", "--list", "nyhetsbrev", "people.csv")
    assert "line 3: language 'fi' is not one the templates have" in imported.stderr, imported.stderr
    with Store.open(settings.storage_url) as store:
        assert store.subscriber("nyhetsbrev", "a@example.org") is None
        assert store.subscriber("nyhetsbrev", "b@example.org").language == "en"
        assert store.subscriber("nyhetsbrev", "c@example.org").language == "sv"
        assert store.subscriber("nyhetsbrev", "d@example.org") is None


def test_each_subscriber_reads_the_issue_in_their_language(example_settings) -> None:
    settings = example_settings
    assert (
        flygblad(settings, "subscribers", "add", "--list", "nyhetsbrev", "anna@example.org", "-n", "Anna").returncode
        == 0
    )
    english = flygblad(
        settings, "subscribers", "add", "--list", "nyhetsbrev", "bob@example.org", "-n", "Bob", "--language", "en"
    )
    assert english.returncode == 0, english.stderr
    sent = flygblad(settings, "send", "--list", "nyhetsbrev")
    assert sent.returncode == 0 and "2 sent" in sent.stdout, sent.stdout + sent.stderr
    messages = _messages(settings)
    swedish, british = messages["anna@example.org"], messages["bob@example.org"]
    sv_html = swedish.get_body(("html",)).get_content()
    en_html = british.get_body(("html",)).get_content()
    en_text = british.get_body(("plain",)).get_content()
    assert "Hej Anna!" in sv_html and "Läs hela ledaren" in sv_html and "20 december 2018" in sv_html
    assert 'lang="sv"' in sv_html
    assert "Hello Bob," in en_html and "Read the full leader" in en_html and "December 20, 2018" in en_html
    assert 'lang="en"' in en_html and "Unsubscribe" in en_html and "Läs" not in en_text
    assert swedish["Subject"] == british["Subject"] == "Utmanande, lärorikt och inspirerande"  # the content's own
    assert swedish["List-Unsubscribe"] != british["List-Unsubscribe"]


def test_an_english_lists_preview_greets_in_english(example_settings) -> None:
    settings = example_settings
    with_list_options(settings, 'language = "en"')
    assert flygblad(settings, "preview").returncode == 0
    html = (settings.base_dir / "preview" / "issue.html").read_text(encoding="utf-8")
    assert "Hello Firstname Lastname," in html and "Förnamn" not in html

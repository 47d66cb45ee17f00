"""Bad config gets one clear message naming the key and the file, exit code 2, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import load_settings
from pipeline.errors import ConfigError

GOOD = textwrap.dedent(
    """
    [site]
    title = "Sajten"
    base_url = "https://sajten.example/"

    [storage]
    url = "sqlite:///data/flygblad.db"

    [[sources]]
    name = "ledare"
    kind = "html"
    url = "site/ledare.html"
    category = "leader"
    max_items = 5

    [sources.select]
    author = ".byline .name"

    [feeds]
    dir = "out/feeds"
    """
)

# (what to change, the key the message must name, a phrase it must contain)
BAD = [
    (('category = "leader"', 'catgory = "leader"'), "sources[1].catgory", "did you mean 'category'"),
    (("[feeds]", "[feeds]\nmax_item = 5"), "feeds.max_item", "did you mean 'max_items'"),
    (('title = "Sajten"', 'tilte = "Sajten"'), "site.tilte", "unknown key"),
    (("[feeds]", "[feed]"), "feed", "unknown key"),
    (("max_items = 5", 'max_items = "five"'), "sources[1].max_items", "integer"),
    (("max_items = 5", "max_items = 0"), "sources[1].max_items", "greater than or equal to 1"),
    (('kind = "html"', 'kind = "rss"'), "sources[1].kind", "'html' or 'feed'"),
    (('category = "leader"', 'category = "ledare"'), "sources[1].category", "'leader' or 'article'"),
    (('kind = "html"\n', ""), "sources[1].kind", "required key is missing"),
    (('base_url = "https://sajten.example/"\n', ""), "site.base_url", "required key is missing"),
    (('base_url = "https://sajten.example/"', 'base_url = "sajten.example"'), "site.base_url", "http(s) URL"),
    (('title = "Sajten"', 'title = "Sajten"\ntimezone = "Europe/Stockholmm"'), "site.timezone", "unknown time zone"),
    (('author = ".byline .name"', 'author = ".byline[["'), "sources[1].select.author", "not a valid CSS selector"),
    (('url = "site/ledare.html"', 'url = "ftp://sajten.example/x"'), "sources[1].url", "file:// URL or a local path"),
    (('name = "ledare"', 'name = "Ledare!"'), "sources[1].name", "lower-case"),
    (('name = "ledare"', 'name = "all"'), "sources[1].name", "every source together"),
    (('title = "Sajten"', 'title = "Sajten"\npassword = "hemligt"'), "site.password", "environment variable"),
    (
        ('[storage]\nurl = "sqlite:///data/flygblad.db"', '[storage]\nurl = "flygblad.db"'),
        "storage.url",
        "SQLAlchemy URL",
    ),
    (("[feeds]", '[web]\nbase_url = "http://nyhetsbrev.sajten.example"\n\n[feeds]'), "web.base_url", "must be https"),
    (("[feeds]", '[web]\nsecret_env = "my secret"\n\n[feeds]'), "web.secret_env", "name of an environment variable"),
    (
        ("[feeds]", '[sender]\nkind = "file"\nhost = "smtp.sajten.example"\n\n[feeds]'),
        "sender.host",
        "not a setting of the 'file' sender",
    ),
    # Values that used to fail only at run time (issue 13): checked at load, exit 2 naming the key.
    (('base_url = "https://sajten.example/"', 'base_url = "https://sajten.example/ x"'), "site.base_url", "spaces"),
    (("[feeds]", "[http]\ndelay_seconds = inf\n\n[feeds]"), "http.delay_seconds", "finite"),
    (("[feeds]", "[sender]\nretry_base_seconds = 1e300\n\n[feeds]"), "sender.retry_base_seconds", "less than"),
    (("[feeds]", "[sender]\nrate_per_second = 1e-300\n\n[feeds]"), "sender.rate_per_second", "greater than"),
    (("[feeds]", '[sender]\nkind = "duva"\n\n[feeds]'), "sender.kind", "no sender named 'duva'"),
    (
        ("[feeds]", '[dkim]\ndomain = "sajten.example"\nselector = "s1"\nprivate_key_path = "nyckel.pem"\n\n[feeds]'),
        "dkim.private_key_path",
        "no such file",
    ),
    (('title = "Sajten"', 'title = "Sajten\\r\\nBcc: x@evil.example"'), "site.title", "must be one line"),
    # The public address is https wherever it comes from: [site] base_url stands in when [web] has none.
    (
        (
            'base_url = "https://sajten.example/"',
            'base_url = "http://sajten.example/"\n[organisation]\nname = "S"\naddress = "Gatan 1"\n'
            '[[lists]]\nname = "brev"\ntitle = "Brev"\nfrom = "brev@sajten.example"',
        ),
        "web.base_url",
        "plain http: set [web] base_url",
    ),
    (("[feeds]", '[web]\ntrusted_proxies = ["10.0.0.0/8", "proxy"]\n\n[feeds]'), "web.trusted_proxies", "'proxy'"),
    (("[feeds]", '[web]\nprevious_secret_env = "old secret"\n\n[feeds]'), "web.previous_secret_env", "variable"),
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_is_typed_and_read_only(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, GOOD))
    assert settings.site.base_url == "https://sajten.example"
    assert settings.site.language == "sv" and settings.site.timezone == "Europe/Stockholm"
    assert settings.sources[0].max_items == 5
    assert settings.sources[0].select is not None and settings.sources[0].select.author == ".byline .name"
    with pytest.raises(ValidationError, match="frozen"):
        settings.sources[0].max_items = 6  # type: ignore[misc]


def test_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    settings = load_settings(_write(tmp_path, GOOD))
    assert settings.storage_url == f"sqlite:///{tmp_path / 'data' / 'flygblad.db'}"
    assert settings.feeds_dir == tmp_path / "out" / "feeds"
    assert settings.source_location(settings.sources[0]) == (tmp_path / "site" / "ledare.html").as_uri()


def test_default_storage_is_next_to_the_config(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, GOOD.replace('[storage]\nurl = "sqlite:///data/flygblad.db"', "")))
    assert settings.storage_url == f"sqlite:///{tmp_path / 'flygblad.db'}"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    environ = {
        "FLYGBLAD_STORAGE_URL": "sqlite:///other.db",
        "FLYGBLAD_FEEDS_MAX_ITEMS": "7",
        "FLYGBLAD_SITE_LANGUAGE": "en",
    }
    settings = load_settings(_write(tmp_path, GOOD), environ=environ)
    assert settings.storage_url == f"sqlite:///{tmp_path / 'other.db'}"
    assert settings.feeds.max_items == 7
    assert settings.site.language == "en"
    with pytest.raises(ConfigError, match=r"feeds\.max_items"):
        load_settings(_write(tmp_path, GOOD), environ={"FLYGBLAD_FEEDS_MAX_ITEMS": "many"})


@pytest.mark.parametrize(("change", "key", "phrase"), BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_config_names_key_and_file(tmp_path: Path, change: tuple[str, str], key: str, phrase: str) -> None:
    old, new = change
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert phrase in message, message
    assert "\n" not in message


def test_duplicate_source_names(tmp_path: Path) -> None:
    block = GOOD[GOOD.index("[[sources]]") : GOOD.index("[feeds]")]
    with pytest.raises(ConfigError, match=r"sources\[2\]\.name: 'ledare' is used by an earlier source"):
        load_settings(_write(tmp_path, GOOD + block))


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_settings(_write(tmp_path, "[site]\ntitle = \n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def _flygblad(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("command", ["run", "collect", "feeds", "items"])
def test_cli_misspelled_key_exits_2_and_writes_nothing(tmp_path: Path, command: str) -> None:
    _write(tmp_path, GOOD.replace("[feeds]", "[feeds]\nmax_item = 5"))
    result = _flygblad(command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "flygblad: config error: config.toml: feeds.max_item: unknown key (did you mean 'max_items'?)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_cli_config_flag_and_environment(tmp_path: Path) -> None:
    result = _flygblad("--config", str(tmp_path / "missing.toml"), "items", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.toml: config file not found" in result.stderr
    usage = _flygblad("items", "--limit", "0", cwd=tmp_path)
    assert usage.returncode == 2


LISTS = GOOD + textwrap.dedent(
    """
    [organisation]
    name = "Sajten"
    address = "Box 1, 111 11 Stad"

    [[lists]]
    name = "brev"
    title = "Sajtens brev"
    from = "Sajten <brev@sajten.example>"
    sources = ["ledare"]
    """
)


def test_lists_config(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, LISTS))
    [mailing_list] = settings.lists
    assert mailing_list.from_ == "Sajten <brev@sajten.example>"
    assert settings.list_language(mailing_list) == "sv" and settings.list_sources(mailing_list) == ("ledare",)
    assert settings.web_base_url == "https://sajten.example"


@pytest.mark.parametrize(
    ("old", "new", "key", "phrase"),
    [
        (
            'from = "Sajten <brev@sajten.example>"',
            'from = "Sajten <brev@sajten..example>"',
            "lists[1].from",
            "not a valid address",
        ),
        ('from = "Sajten <brev@sajten.example>"', 'from = "Sajten"', "lists[1].from", "must be an address"),
        ('sources = ["ledare"]', 'sources = ["ledarna"]', "lists[1].sources", "no source named 'ledarna'"),
        ('sources = ["ledare"]', 'subject = "{title}"', "lists[1].subject", "unknown placeholder {title}"),
        ("[organisation]", "[organization]", "organization", "unknown key (did you mean 'organisation'?)"),
        ('title = "Sajtens brev"', 'title = "Sajtens brev"\nfrom_ = "x"', "lists[1].from_", "unknown key"),
    ],
)
def test_bad_lists_config(tmp_path: Path, old: str, new: str, key: str, phrase: str) -> None:
    assert old in LISTS
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, LISTS.replace(old, new, 1)))
    assert str(caught.value).startswith(f"{tmp_path / 'config.toml'}: {key}: "), str(caught.value)
    assert phrase in str(caught.value)


def test_lists_need_an_organisation(tmp_path: Path) -> None:
    text = LISTS.replace('[organisation]\nname = "Sajten"\naddress = "Box 1, 111 11 Stad"\n', "")
    with pytest.raises(ConfigError, match=r"organisation: required when \[\[lists\]\] are configured"):
        load_settings(_write(tmp_path, text))

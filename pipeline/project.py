"""A new project on disk: ``flygblad init``.

:func:`init_project` writes what a communicator needs to start: a commented
``config.toml``, a ``templates/`` folder for their overrides, a ``.gitignore``
and a secret file (mode 0600). With a site's address it reads the home page
and proposes sources: the feeds the page announces (``<link rel=alternate>``)
and the sections whose names say they hold editorials or articles. Without one,
or when the site cannot be reached, the project runs offline on the bundled
sample site, copied in. No file that exists is ever overwritten.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urljoin, urlsplit

#: Section names that hold editorials (leaders) and articles, in Swedish and English.
LEADER_WORDS = re.compile(r"^(ledare|ledarsidan|ledarartiklar|editorials?|opinion|leaders?)$", re.I)
ARTICLE_WORDS = re.compile(r"^(nyheter|artiklar|aktuellt|blogg|news|articles|blog|press|pressmeddelanden)$", re.I)
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json")
GITIGNORE = "# flygblad: what runs make, and the secret\nvar/\noutbox/\nfeeds/\npreview/\n"


@dataclass
class ProposedSource:
    """A source found on the site (or the sample's)."""

    name: str
    title: str
    kind: str  # "feed" or "html"
    url: str
    category: str  # "leader" or "article"
    links: str | None = None


@dataclass
class InitReport:
    """What ``init`` wrote, kept, found and could not do."""

    folder: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    sources: list[ProposedSource] = field(default_factory=list)
    offline: bool = True
    note: str | None = None


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower().translate(str.maketrans("åäöéü", "aaoeu"))).strip("-")[:30]
    base = base if base and base[0].isalnum() else f"s-{base}".strip("-")
    name, n = base or "kalla", 2
    while name in taken or name == "all":
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def discover(html: str | bytes, page_url: str) -> list[ProposedSource]:
    """Sources a home page suggests: its announced feeds, then sections named like editorials or articles."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    taken: set[str] = set()
    found: list[ProposedSource] = []
    seen: set[str] = set()
    for link in soup.find_all("link", href=True):
        rel = {r.lower() for r in (link.get("rel") or [])}
        kind = str(link.get("type", "")).split(";")[0].strip().lower()
        if "alternate" in rel and kind in FEED_TYPES:
            url = urljoin(page_url, str(link["href"]))
            if urlsplit(url).scheme in ("http", "https") and url not in seen:
                seen.add(url)
                title = " ".join(str(link.get("title") or "").split()) or "Flöde"
                category = "leader" if LEADER_WORDS.search(title.split()[-1] if title.split() else "") else "article"
                found.append(ProposedSource(_slug(title, taken), title, "feed", url, category))
    own = urlsplit(page_url).netloc
    for anchor in soup.find_all("a", href=True):
        text = " ".join(anchor.get_text(" ").split())
        section = "leader" if LEADER_WORDS.match(text) else "article" if ARTICLE_WORDS.match(text) else None
        url = urljoin(page_url, str(anchor["href"])).split("#")[0]
        if section is None or urlsplit(url).netloc != own or url in seen:
            continue
        seen.add(url)
        found.append(ProposedSource(_slug(text, taken), text, "html", url, section))
    return found


def _sample_sources() -> list[ProposedSource]:
    return [
        ProposedSource("ledare", "Produktionslyftet: Ledare", "html", "sample-site/ledare/index.html", "leader"),
        ProposedSource(
            "artiklar",
            "Produktionslyftet: Artiklar",
            "html",
            "sample-site/artiklar/index.html",
            "article",
            links=".cards a.card-link",
        ),
        ProposedSource("nyheter", "Produktionslyftet: Nyheter", "feed", "sample-site/nyheter.xml", "article"),
    ]


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(
    *, site: str, name: str, language: str, sources: list[ProposedSource], offline: bool, timezone: str
) -> str:
    """The commented config.toml of a new project."""
    host = urlsplit(site).hostname or "example.org"
    domain = host.removeprefix("www.")
    sv = language == "sv"
    list_name = "nyhetsbrev" if sv else "newsletter"
    list_title = f"{name}s nyhetsbrev" if sv else f"{name} newsletter"
    lines = [
        f"# flygblad project for {name}, written by `flygblad init`.",
        "# Every key is documented in flygblad's docs/configuration.md; paths are relative to this file.",
        "# `flygblad check` says whether this project is ready to send, and what to do where it is not.",
        "",
        "[site]",
        f"title = {_toml(name)}",
        f"base_url = {_toml(site)}",
        f"language = {_toml(language)}",
        f"timezone = {_toml(timezone)}",
        "",
        "[storage]",
        '# SQLite next to this file; for several machines use PostgreSQL (pip install "flygblad[postgresql]"):',
        '# url = "postgresql+psycopg://flygblad@localhost/flygblad"',
        'url = "sqlite:///var/flygblad.db"',
        "",
    ]
    if offline:
        lines += [
            "# The bundled sample site, copied into sample-site/, so this project runs offline.",
            "# Replace these with your own site's feeds and pages (`flygblad init --site URL` finds them).",
        ]
    else:
        lines += [f"# Found on {site}: check each one with `flygblad collect` and keep what you want."]
    for source in sources:
        lines += [
            "",
            "[[sources]]",
            f"name = {_toml(source.name)}",
            f"title = {_toml(source.title)}",
            f"kind = {_toml(source.kind)}",
            f"url = {_toml(source.url)}",
            f"category = {_toml(source.category)}",
            "max_items = 20",
        ]
        if source.links:
            lines.append(f"links = {_toml(source.links)}")
        elif source.kind == "html":
            lines.append('# links = "main a.teaser"   # a CSS selector for the item links, if they are not found')
    lines += [
        "",
        "[organisation]",
        "# Shown in every email's footer: the law in most countries asks for a postal address.",
        f"name = {_toml(name)}",
        'address = "Gatan 1, 123 45 Staden"',
        "",
        "[[lists]]",
        f"name = {_toml(list_name)}",
        f"title = {_toml(list_title)}",
        f"from = {_toml(f'{name} <nyhetsbrev@{domain}>')}",
        "max_items = 20",
        *(
            [
                "# The first issue takes what was published in these last days, not the back catalogue;",
                "# the sample's texts are from 2017-2018, so here it takes them all (the default is 14).",
                "first_issue_days = 36500",
            ]
            if offline
            else [
                "# The first issue takes what was published in these last days, not the back catalogue.",
                "first_issue_days = 14",
            ]
        ),
        'subject = "{first_title}"',
        "",
        "[render]",
        "# Your overrides of flygblad's templates, file by file (see templates/README.md).",
        'templates = "templates"',
        "",
        "[web]",
        "# Where `flygblad serve` answers in public (https); links in emails start with it.",
        f"# base_url = {_toml(f'https://nyhetsbrev.{domain}')}   # default: [site] base_url",
        'secret_env = "FLYGBLAD_SECRET"',
        'secret_file = "var/secret"',
        "",
        "[sender]",
        '# "file" writes one .eml per message into outbox/: nothing leaves the machine.',
        '# For real sending: kind = "smtp" (host, port, security, username, password_env), or a',
        '# provider\'s API: "postmark", "sendgrid" or "mailgun" with api_key_env.',
        'kind = "file"',
        'dir = "outbox"',
        "",
        "[feeds]",
        'dir = "feeds"',
        "max_items = 50",
        "",
    ]
    return "\n".join(lines)


def init_project(
    folder: Path,
    *,
    site: str | None = None,
    name: str | None = None,
    language: str = "sv",
    timezone: str = "Europe/Stockholm",
    fetch: bool = True,
) -> InitReport:
    """Write a new project into *folder* (made if missing); never overwrite a file that exists."""
    from pipeline.tokens import create_secret

    report = InitReport(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources: list[ProposedSource] = []
    if site and fetch:
        try:
            sources = _site_sources(site)
        except Exception as err:  # noqa: BLE001 - any failure to read the site: fall back to the sample
            report.note = f"could not read {site} ({err}); the project runs on the bundled sample instead"
        else:
            if not sources:
                report.note = f"found no feeds or article sections on {site}; the project runs on the bundled sample"
    report.offline = not sources
    if report.offline:
        sources = _sample_sources()
        site_url = "https://www.produktionslyftet.example"  # the sample's own address
        name = name or "Produktionslyftet"
    else:
        assert site is not None
        site_url = site.rstrip("/")
        name = name or (urlsplit(site).hostname or "Sajten").removeprefix("www.").split(".")[0].capitalize()
    report.sources = sources

    def write(path: Path, text: str) -> None:
        if path.exists():
            report.kept.append(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        report.written.append(path)

    write(
        folder / "config.toml",
        config_text(
            site=site_url, name=name, language=language, sources=sources, offline=report.offline, timezone=timezone
        ),
    )
    # The same README as flygblad's own templates/ folder (one file, package data).
    write(
        folder / "templates" / "README.md",
        (resources.files("pipeline") / "sample" / "templates-README.md").read_text("utf-8"),
    )
    write(folder / ".gitignore", GITIGNORE)
    secret = folder / "var" / "secret"
    if secret.exists():
        report.kept.append(secret)
    else:
        create_secret(secret)
        report.written.append(secret)
    if report.offline:
        sample = folder / "sample-site"
        if sample.exists():
            report.kept.append(sample)
        else:
            shutil.copytree(Path(str(resources.files("pipeline") / "sample" / "site")), sample)
            report.written.append(sample)
    return report


def _site_sources(site: str) -> list[ProposedSource]:
    """Fetch the home page (with flygblad's own fetcher: robots.txt, size and time caps) and discover."""
    from pipeline.config import HttpSettings
    from pipeline.sources.http import Fetcher

    if urlsplit(site).scheme not in ("http", "https"):
        raise ValueError("the site must be an http(s) address")
    with Fetcher(HttpSettings(retries=0, delay_seconds=0.0), site) as fetcher:
        page = fetcher.get(site)
    return discover(page.content, page.final_url)  # type: ignore[union-attr]

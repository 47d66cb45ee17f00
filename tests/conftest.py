"""Shared fixtures: sample sites over real HTTP, configs, and stores on SQLite and PostgreSQL.

PostgreSQL: store tests also run there when ``FLYGBLAD_TEST_DATABASE_URL`` is
set (CI sets it). Without it they skip with a reason; with
``FLYGBLAD_REQUIRE_POSTGRES=1`` (CI) an unreachable server fails instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

# Property-based tests (tests/test_properties.py): "ci" is the default; `python -m bench.fuzz` runs "fuzz".
hypothesis_settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
hypothesis_settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FLYGBLAD_FUZZ_EXAMPLES", "5000")), deadline=None, print_blob=True
)
hypothesis_settings.load_profile(os.environ.get("FLYGBLAD_HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
SITES = Path(__file__).resolve().parent / "sites"
EXAMPLE_SITE = ROOT / "examples" / "site"
LAST_MODIFIED = "Wed, 06 Mar 2024 12:00:00 GMT"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml",
    ".rdf": "application/rdf+xml",
    ".txt": "text/plain",
}


@dataclass
class Hit:
    """One request the sample site answered."""

    path: str
    status: int
    if_none_match: str | None
    if_modified_since: str | None
    user_agent: str | None


@dataclass
class SiteServer:
    """A folder served over real HTTP on 127.0.0.1, with ETag/Last-Modified and 304s.

    ``overrides`` maps a path to a ``(status, body)`` answer (robots.txt, errors);
    ``fail_first`` makes a path answer 503 that many times before it works.
    """

    server: HTTPServer
    root: Path
    hits: list[Hit] = field(default_factory=list)
    overrides: dict[str, tuple[int, str]] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)

    def url(self, path: str = "/") -> str:
        return self.server.url_for(path)

    def handle(self, request: Request) -> Response:
        path = request.path
        hit = Hit(
            path,
            200,
            request.headers.get("If-None-Match"),
            request.headers.get("If-Modified-Since"),
            request.headers.get("User-Agent"),
        )
        self.hits.append(hit)
        if self.fail_first.get(path, 0) > 0:
            self.fail_first[path] -= 1
            hit.status = 503
            return Response("busy", status=503)
        if path in self.overrides:
            status, body = self.overrides[path]
            hit.status = status
            return Response(body, status=status, content_type="text/plain; charset=utf-8")
        file = (self.root / path.lstrip("/")).resolve()
        if file.is_dir():
            file = file / "index.html"
        if not file.is_file() or self.root.resolve() not in file.parents:
            hit.status = 404
            return Response("not found", status=404)
        body = file.read_bytes()
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
        if hit.if_none_match == etag:
            hit.status = 304
            return Response(status=304, headers=headers)
        return Response(
            body, status=200, headers=headers, content_type=TYPES.get(file.suffix, "application/octet-stream")
        )

    def pages(self) -> list[Hit]:
        """The hits other than robots.txt."""
        return [h for h in self.hits if h.path != "/robots.txt"]


@pytest.fixture
def site_server(httpserver: HTTPServer) -> Callable[[Path], SiteServer]:
    """Serve a folder: ``site = site_server(SITES / "wordpress")``."""

    def serve(root: Path) -> SiteServer:
        site = SiteServer(httpserver, root)
        httpserver.expect_request(re.compile(r"/.*")).respond_with_handler(site.handle)
        return site

    return serve


def source_toml(name: str, url: str, *, kind: str = "html", category: str = "leader", **extra: str) -> str:
    """One ``[[sources]]`` table; extra keys are strings (``links``), a dict is a sub-table."""
    lines = ["[[sources]]", f'name = "{name}"', f'kind = "{kind}"', f'url = "{url}"', f'category = "{category}"']
    tables = []
    for key, value in extra.items():
        if isinstance(value, dict):
            tables += [f"[sources.{key}]", *(f'{k} = "{v}"' for k, v in value.items())]
        else:
            lines.append(f'{key} = "{value}"')
    return "\n" + "\n".join(lines + tables) + "\n"


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config.toml into tmp_path from a TOML body (sources etc.) with a [site] table added."""

    def write(body: str = "", *, site: str | None = None, name: str = "config.toml") -> Path:
        site = site or textwrap.dedent(
            """
            [site]
            title = "Testsajten"
            base_url = "https://test.example"
            """
        )
        http = "" if "[http]" in body else "\n[http]\ndelay_seconds = 0\nretries = 1\nbackoff_seconds = 0\n"
        path = tmp_path / name
        path.write_text(textwrap.dedent(site) + textwrap.dedent(body) + http, encoding="utf-8")
        return path

    return write


# ---------------------------------------------------------------- stores


def _postgres_url() -> str | None:
    return os.environ.get("FLYGBLAD_TEST_DATABASE_URL") or None


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL server, as a database URL; skip (or fail in CI) without one."""
    url = _postgres_url()
    if url is None:
        if os.environ.get("FLYGBLAD_REQUIRE_POSTGRES") == "1":
            pytest.fail("FLYGBLAD_REQUIRE_POSTGRES=1 but FLYGBLAD_TEST_DATABASE_URL is not set")
        pytest.skip(
            "PostgreSQL tests need FLYGBLAD_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as err:
        if os.environ.get("FLYGBLAD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL at {url} is required (FLYGBLAD_REQUIRE_POSTGRES=1) but unreachable: {err}")
        pytest.skip(f"PostgreSQL at {url} is unreachable: {err.orig}")
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with postgres_schema() as url:
        yield url


# ---------------------------------------------------------------- the bundled default


@pytest.fixture
def example_settings(tmp_path: Path):
    """The bundled default config and sample site copied to tmp_path, collected once."""
    import shutil

    from pipeline.collect import collect
    from pipeline.config import load_settings
    from pipeline.store import Store

    shutil.copytree(EXAMPLE_SITE, tmp_path / "examples" / "site")
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    settings = load_settings(tmp_path / "config.toml")
    with Store.open(settings.storage_url) as store:
        report = collect(settings, store)
        assert report.ok, report.problems()
        keep_sample_images(settings, store)
    return settings


def keep_sample_images(settings, store) -> None:
    """The sample's images live on a reserved domain that nothing answers (www.produktionslyftet.example), so
    collect cannot fetch them: keep a generated picture for each, through the same code a fetched one takes
    (tests/test_images.py fetches real ones over HTTP)."""
    import io

    from PIL import Image

    from pipeline.sources.images import keep_image

    for n, url in enumerate(sorted({s.item.image for s in store.items() if s.item.image})):
        image = Image.new("RGB", (1600, 900), (40 + 50 * n, 90, 140))
        data = io.BytesIO()
        image.save(data, format="JPEG", quality=85)
        digest, ext, width, height = keep_image(data.getvalue(), settings.media_dir)
        store.save_media(url, digest=digest, ext=ext, width=width, height=height)


def require(tool: str, variable: str, reason: str) -> None:
    """Skip when *tool* is missing, unless CI's *variable* says it must be there (then fail)."""
    if shutil_which(tool):
        return
    if os.environ.get(variable) == "1":
        pytest.fail(f"{tool} is required ({variable}=1) but not installed: {reason}")
    pytest.skip(f"{tool} is not installed: {reason}")


def shutil_which(tool: str) -> str | None:
    import shutil

    return shutil.which(tool) if not tool.startswith("/") else (tool if Path(tool).exists() else None)


# ---------------------------------------------------------------- headless Chromium


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium under Playwright, once per test process (skip without it, fail in CI)."""
    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    require(CHROMIUM, "FLYGBLAD_REQUIRE_BROWSER", "the browser tests need Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()

"""Fetching pages: one ``requests.Session`` for the network, the disk for local paths.

What every fetch does, so that sources need not care:

* a User-Agent that names flygblad, its version and the site it works for;
* connect and read timeouts, and retries with exponential backoff on 5xx answers
  and connection errors (urllib3's ``Retry``, which also honours Retry-After);
* conditional GET: the caller passes the ETag/Last-Modified it stored for the
  URL, and an unchanged page comes back as :class:`NotModified` without a body;
* robots.txt (RFC 9309) respected, its Crawl-delay included, and a per-host
  delay between requests;
* ``file://`` URLs read from disk, with the file's mtime and size standing in
  for an ETag, so that the offline default behaves like a web site.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.robotparser
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
from requests import Response
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline import __version__
from pipeline.config import HttpSettings
from pipeline.errors import SourceError, StoreError
from pipeline.types import Validators

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

ROBOTS_AGENT = "flygblad"


@dataclass(frozen=True)
class Page:
    """A fetched page: its bytes and what is needed to ask for it conditionally next time."""

    url: str
    final_url: str
    content: bytes
    content_type: str
    charset: str | None
    validators: Validators

    @property
    def text(self) -> str:
        """The body decoded with the declared charset, else UTF-8 (replacing bad bytes)."""
        return self.content.decode(self.charset or "utf-8", errors="replace")


@dataclass(frozen=True)
class NotModified:
    """The server (or the disk) says the page has not changed since the validators."""

    url: str


def user_agent(settings: HttpSettings, site_url: str | None = None) -> str:
    """The User-Agent header: the configured one, or flygblad's own."""
    if settings.user_agent:
        return settings.user_agent
    contact = f"; +{site_url}" if site_url else ""
    return f"flygblad/{__version__} (newsletter and feed syndication{contact})"


#: How long a fetched robots.txt is used before it is asked for again (RFC 9309 2.4: at most 24 hours).
ROBOTS_MAX_AGE = timedelta(hours=24)


class RobotsCache(Protocol):
    """Where robots.txt answers are kept between collects (the store)."""

    def robots(self, origins: Sequence[str], max_age: timedelta) -> dict[str, tuple[str, str | None]]: ...

    def save_robots(self, answers: Sequence[tuple[str, str, str | None]]) -> None: ...


class Fetcher:
    """Fetches pages for the sources. Use as a context manager: it closes its session."""

    def __init__(
        self, settings: HttpSettings, site_url: str | None = None, robots_cache: RobotsCache | None = None
    ) -> None:
        self.settings = settings
        self.robots_cache = robots_cache
        self.user_agent = user_agent(settings, site_url)
        # Shared by the collect's worker threads: what is per request lives in a thread-local, what is
        # per host (robots.txt, the last request, the turn) is touched only while holding that host's turn.
        self._local = threading.local()  # .started: when this thread's current request began (total_timeout)
        self._lock = threading.Lock()
        self._host_turns: dict[str, threading.RLock] = {}
        self._slots = threading.BoundedSemaphore(settings.concurrency)  # requests in flight at once
        self.session = requests.Session()
        self.session.headers["User-Agent"] = self.user_agent
        # requests reads the proxy variables, CA bundle and ~/.netrc from the environment
        # on every request (a walk over os.environ each time: a fifth of a conditional
        # GET's cost, bench/collect.py); they are read once per origin instead (_environment).
        self.session.trust_env = False
        self._environment: dict[str, dict[str, Any]] = {}
        retry = Retry(
            total=settings.retries,
            connect=settings.retries,
            read=settings.retries,
            status=settings.retries,
            backoff_factor=settings.backoff_seconds,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "HEAD"}),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        # One kept-alive connection per host is all a host ever gets (one request at a time), and the pools
        # of as many hosts as the workers can be busy with stay open between their requests.
        adapter = HTTPAdapter(
            max_retries=retry, pool_connections=max(16, 4 * settings.concurrency), pool_maxsize=2, pool_block=False
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        # The cache's answers for the origins the caller said it would ask (expect): read in one query. Each
        # fetching thread's own query and write (a connection opened for each) were most of what 100 hosts'
        # first requests waited for (bench.hosts). What is fetched is written once, on close.
        self._robots_kept: dict[str, tuple[str, str | None] | None] = {}
        self._robots_fetched: list[tuple[str, str, str | None]] = []
        self._last_request: dict[str, float] = {}
        self._requests = 0
        self._not_modified = 0

    @property
    def requests(self) -> int:
        """Requests made (robots.txt included)."""
        return self._requests

    @property
    def not_modified(self) -> int:
        """Pages that had not changed (304, or a file with the same stamp)."""
        return self._not_modified

    def _count(self, not_modified: bool = False) -> None:
        with self._lock:
            if not_modified:
                self._not_modified += 1
            else:
                self._requests += 1

    def host_turn(self, url: str) -> threading.RLock:
        """The lock one host's requests take turns on: never two requests at once to a host."""
        host = urlsplit(url).netloc.lower()
        with self._lock:
            turn = self._host_turns.get(host)
            if turn is None:
                turn = self._host_turns[host] = threading.RLock()
        return turn

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Keep the robots.txt answers fetched for the next collects; close the HTTP session and its connections."""
        try:
            with self._lock:
                fetched, self._robots_fetched = self._robots_fetched, []
            if fetched and self.robots_cache is not None:
                self.robots_cache.save_robots(fetched)
        except StoreError as err:  # the next collect asks again: nothing is lost but a request per host
            log.warning("could not keep %d robots.txt answers: %s", len(fetched), err)
        finally:
            self.session.close()

    def expect(self, urls: Sequence[str]) -> None:
        """Say which URLs will be asked for: the cached robots.txt answers of their web origins are read now, at once."""
        if self.robots_cache is None:
            return
        origins = []
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https"):
                origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
        self._keep_robots(list(dict.fromkeys(origins)))

    def _keep_robots(self, origins: list[str]) -> None:
        """The cache's answers for *origins* (None where it has none under a day old), read in one query."""
        assert self.robots_cache is not None
        kept = self.robots_cache.robots(origins, ROBOTS_MAX_AGE)
        with self._lock:
            self._robots_kept.update({origin: kept.get(origin) for origin in origins})

    # ------------------------------------------------------------ public

    def prepare(self, url: str) -> None:
        """Learn what *url*'s host's robots.txt says now, if it is not known yet: asked for, in the host's turn,
        before a source's code is even loaded, a collect's first requests need not wait for that."""
        if self.settings.respect_robots and urlsplit(url).scheme in ("http", "https"):
            with self.host_turn(url):
                self._allowed(url)

    def get(self, url: str, validators: Validators | None = None) -> Page | NotModified:
        """Fetch *url*; with *validators*, an unchanged page is :class:`NotModified`.

        Raises :class:`SourceError` naming the URL for a missing page, an HTTP
        error, a network failure or a robots.txt refusal.
        """
        scheme = urlsplit(url).scheme
        if scheme == "file":
            return self._get_file(url, validators)
        if scheme not in ("http", "https"):
            raise SourceError(f"cannot fetch {scheme or 'a relative'} URL", url=url)
        with self.host_turn(url):  # robots.txt, the polite delay, the request and its body: one host at a time
            return self._get_http(url, validators)

    # ------------------------------------------------------------ disk

    def _get_file(self, url: str, validators: Validators | None) -> Page | NotModified:
        path = Path(url2pathname(urlsplit(url).path))
        try:
            stat = path.stat()
            if path.exists() and not path.is_file() and not path.is_dir():
                raise SourceError("not a regular file (a device or a pipe is never a page)", url=url)
            current = Validators(etag=f'"file-{stat.st_mtime_ns}-{stat.st_size}"')
            if validators and validators.etag == current.etag:
                self._count(not_modified=True)
                return NotModified(url)
            with path.open("rb") as handle:
                content = handle.read(self.settings.max_bytes + 1)
            if len(content) > self.settings.max_bytes:
                raise SourceError(f"larger than [http] max_bytes ({self.settings.max_bytes:,} bytes)", url=url)
        except FileNotFoundError:
            raise SourceError("no such file", url=url) from None
        except IsADirectoryError:
            raise SourceError("is a folder, not a page or feed", url=url) from None
        except OSError as err:
            raise SourceError(f"cannot read: {err.strerror}", url=url) from err
        kind = "application/xml" if path.suffix in (".xml", ".rss", ".atom") else "text/html"
        current = Validators(etag=current.etag, last_modified=formatdate(stat.st_mtime, usegmt=True))
        return Page(url, url, content, kind, None, current)

    # ------------------------------------------------------------ network

    def _get_http(self, url: str, validators: Validators | None) -> Page | NotModified:
        if self.settings.respect_robots and not self._allowed(url):
            raise SourceError("robots.txt does not allow flygblad to fetch this page", url=url)
        headers = {}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        with self._exchange(url, headers) as response:
            if response.status_code == 304:
                self._count(not_modified=True)
                return NotModified(url)
            if response.status_code >= 400:
                reason = response.reason or ""
                raise SourceError(f"HTTP {response.status_code} {reason}".rstrip(), url=url)
            content_type = response.headers.get("Content-Type", "")
            mime = content_type.split(";")[0].strip().lower()
            charset = requests.utils.get_encoding_from_headers(response.headers) if "charset" in content_type else None
            got = Validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
            return Page(url, response.url, self._body(url, response), mime, charset, got)

    def _body(self, url: str, response: Response) -> bytes:
        """The body, read streamed: at most ``max_bytes`` after decompression, within ``total_timeout``."""
        limit, deadline = self.settings.max_bytes, self._local.started + self.settings.total_timeout
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise SourceError(f"larger than [http] max_bytes ({limit:,} bytes once decompressed)", url=url)
                if time.monotonic() > deadline:
                    raise SourceError(
                        f"took longer than [http] total_timeout ({self.settings.total_timeout:g} s)", url=url
                    )
                parts.append(chunk)
        except requests.exceptions.RequestException as err:
            raise SourceError(f"the answer broke off ({_root_cause(err)})", url=url) from err
        finally:
            response.close()
        return b"".join(parts)

    @contextmanager
    def _exchange(self, url: str, headers: dict[str, str]) -> Iterator[Response]:
        """One request and its answer, read inside: after the host's delay, holding one of the ``concurrency`` slots.

        The polite wait is spent outside the slots, so hosts that must wait do not keep others waiting.
        """
        self._wait_for_host(url)
        with self._slots:
            response = self._request(url, headers)
            try:
                yield response
            finally:
                response.close()

    def _request(self, url: str, headers: dict[str, str]) -> Response:
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        self._local.started = time.monotonic()
        # The host's delay runs from this request's start to the next one's (Crawl-delay's "seconds between
        # requests", as Scrapy's DOWNLOAD_DELAY): counted from the answer, every request of a host's chain
        # paid its latency on top (7 requests at 0.5 s and 100 ms: 4.2 s where 3.1 s was asked for).
        self._last_request[urlsplit(url).netloc.lower()] = self._local.started
        try:
            self._count()
            return self.session.get(url, headers=headers, timeout=timeout, stream=True, **self._environment_for(url))
        except requests.exceptions.RetryError as err:
            raise SourceError(f"server kept failing after {self.settings.retries} retries ({err})", url=url) from err
        except requests.exceptions.ConnectionError as err:
            raise SourceError(f"cannot connect ({_root_cause(err)})", url=url) from err
        except requests.exceptions.Timeout as err:
            raise SourceError(f"timed out ({_root_cause(err)})", url=url) from err
        except requests.exceptions.RequestException as err:
            raise SourceError(f"request failed ({_root_cause(err)})", url=url) from err

    def _environment_for(self, url: str) -> dict[str, Any]:
        """Proxies (honouring NO_PROXY), CA bundle and .netrc login for *url*'s origin, as requests finds them."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}/"
        found = self._environment.get(origin)
        if found is None:
            with requests.Session() as reader:  # trust_env: what requests would take from the environment
                merged = reader.merge_environment_settings(origin, {}, None, None, None)
            found = {
                "proxies": merged["proxies"],
                "verify": merged["verify"],
                "cert": merged["cert"],
                "auth": requests.utils.get_netrc_auth(origin),
            }
            self._environment[origin] = found
        return found

    def _wait_for_host(self, url: str) -> None:
        host = urlsplit(url).netloc.lower()
        delay = self.settings.delay_seconds
        robots = self._robots.get(host)
        if robots is not None:
            crawl_delay = robots.crawl_delay(ROBOTS_AGENT)
            if crawl_delay:
                delay = max(delay, float(crawl_delay))
        last = self._last_request.get(host)
        if last is not None and delay > 0:
            remaining = delay - (time.monotonic() - last)
            if remaining > 0:
                time.sleep(remaining)

    def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        host = parts.netloc.lower()
        if host not in self._robots:
            self._robots[host] = self._robots_for(f"{parts.scheme}://{host}")
        robots = self._robots[host]
        return robots is None or robots.can_fetch(ROBOTS_AGENT, url)

    def _robots_for(self, origin: str) -> urllib.robotparser.RobotFileParser | None:
        """The origin's robots.txt rules: the cached copy while it is under a day old (RFC 9309 2.4), else fetched."""
        if origin not in self._robots_kept and self.robots_cache is not None:
            self._keep_robots([origin])  # an origin the caller did not expect (an article on another site)
        with self._lock:
            cached = self._robots_kept.get(origin)
        if cached is not None:
            kind, body = cached
        else:
            kind, body = self._fetch_robots(f"{origin}/robots.txt")
            if kind != "unreachable":
                with self._lock:
                    self._robots_fetched.append((origin, kind, body))
        if kind == "rules":
            parser = urllib.robotparser.RobotFileParser(f"{origin}/robots.txt")
            parser.parse((body or "").splitlines())
            return parser
        if kind == "disallow":
            parser = urllib.robotparser.RobotFileParser(f"{origin}/robots.txt")
            parser.parse(["User-agent: *", "Disallow: /"])
            return parser
        return None

    def _fetch_robots(self, robots_url: str) -> tuple[str, str | None]:
        """What robots.txt says: ("rules", its text), ("none", None), ("disallow", None) or ("unreachable", None).

        RFC 9309 2.3.1: a 4xx means no rules; a 5xx means "assume complete
        disallow". An unreachable host gets no rules here: the page fetch that
        follows fails with its own, clearer, error.
        """
        try:
            with self._exchange(robots_url, {}) as response:
                if 400 <= response.status_code < 500:
                    return "none", None
                if response.status_code >= 500:
                    return "disallow", None
                body = self._body(robots_url, response)
                encoding = response.encoding or "utf-8"
        except SourceError as err:
            log.debug("robots.txt unreachable or unreadable: %s", err)
            return "unreachable", None
        return "rules", body.decode(encoding, "replace")


#: Hosts worked on at once. Each host's thread mostly waits (its delay, its answers); the requests in flight
#: are bounded by ``[http] concurrency``, not by this.
MAX_HOST_THREADS = 128


@contextmanager
def in_parallel() -> Iterator[ThreadPoolExecutor]:
    """Threads for up to :data:`MAX_HOST_THREADS` hosts, made as work arrives; on the way out (Ctrl-C too) what
    has not started is dropped."""
    pool = ThreadPoolExecutor(max_workers=MAX_HOST_THREADS, thread_name_prefix="flygblad-fetch")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def fetch_by_host(pool: ThreadPoolExecutor, work: Sequence[tuple[str, T]], fetch: Callable[[T], R]) -> list[Future[R]]:
    """``fetch(x)`` for each (url, x) of *work*, one task per host doing that host's share in order.

    Returns a future per entry of *work*, in its order. A host's entries run one after another
    (politeness is per host), different hosts in parallel; an exception becomes its future's.
    """
    by_host: dict[str, list[int]] = {}
    for index, (url, _x) in enumerate(work):
        parts = urlsplit(url)
        host = parts.netloc.lower() if parts.scheme in ("http", "https") else f"{index}:{url}"  # files: each alone
        by_host.setdefault(host, []).append(index)
    futures: list[Future[R]] = [Future() for _ in work]
    # Every host's task waits until all are handed to the pool. A thread that started working at once held
    # the interpreter's lock against the thread starting the next (Thread.start waits for each new thread):
    # 100 hosts took 0.5-0.8 s to hand out, and the last host's first request went that much later.
    go = threading.Event()

    def run(indexes: list[int]) -> None:
        go.wait()
        for index in indexes:
            if not futures[index].set_running_or_notify_cancel():
                continue
            try:
                futures[index].set_result(fetch(work[index][1]))
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits for it
                futures[index].set_exception(err)

    try:
        for indexes in by_host.values():
            pool.submit(run, indexes)
    finally:
        go.set()
    return futures


def _root_cause(err: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, short enough for one line."""
    cause: BaseException = err
    while True:
        inner = cause.__cause__ or cause.__context__
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException):
            inner = reason
        if inner is None or inner is cause:
            break
        cause = inner
    text = str(cause)
    if "Connection refused" in text:
        return "connection refused"
    return text.split(": ", 1)[-1][:200] if ">:" in text else text[:200]

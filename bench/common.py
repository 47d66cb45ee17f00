"""What every benchmark shares: the sample project, where results go, the machine they were measured on, ports."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The signing secret every benchmark's project uses (FLYGBLAD_SECRET).
SECRET = "bench-secret-0123456789abcdef-0123456789"


def sample_project(
    work: Path, *, smtp_port: int | None = None, connections: int = 2, replace: Mapping[str, str] | None = None
) -> Path:
    """The bundled default (``config.toml`` and ``examples/site``) copied into *work*; the config's path.

    With *smtp_port*, the file sender becomes SMTP to 127.0.0.1 over *connections*;
    *replace* edits the config text further (each key must be there).
    """
    shutil.copytree(ROOT / "examples" / "site", work / "examples" / "site")
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    edits = dict(replace or {})
    if smtp_port is not None:
        edits['kind = "file"\ndir = "outbox"'] = (
            f'kind = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\nconnections = {connections}'
        )
    for old, new in edits.items():
        if old not in text:
            raise SystemExit(f"config.toml no longer contains {old!r}: update the benchmark")
        text = text.replace(old, new, 1)
    (work / "config.toml").write_text(text, encoding="utf-8")
    return work / "config.toml"


def subscribers_csv(path: Path, count: int, unsubscribe_url: Callable[[int], str] | None = None) -> None:
    """A subscriber CSV (``email,name``, and each one's unsubscribe link for mailmerge), written as it goes."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", *(["unsubscribe_url"] if unsubscribe_url else [])])
        for n in range(count):
            link = [unsubscribe_url(n)] if unsubscribe_url else []
            writer.writerow([f"reader{n}@example.org", f"Läsare {n}", *link])


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def results_dir() -> Path:
    """``bench/results/``, or where ``python -m bench --quick`` points (``FLYGBLAD_BENCH_RESULTS``)."""
    return Path(os.environ.get("FLYGBLAD_BENCH_RESULTS", ROOT / "bench" / "results"))


def machine() -> dict[str, Any]:
    """The facts that make a timing comparable: CPU, Python, the libraries on the hot paths, the tools compared with."""
    packages = (
        "SQLAlchemy",
        "mjml-python",
        "css-inline",
        "Jinja2",
        "psycopg",
        "feedgen",
        "requests",
        "Flask",
        "waitress",
        "mailmerge",
    )
    found = {name: package_version(name) for name in packages if package_version(name)}
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    node = shutil.which("node")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip() if node else None
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "node": node_version,
        "packages": found,
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``<name>.json`` with the machine facts added."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def timed_threads(threads: list[Any]) -> float:
    """Start *threads*, wait for them all; the seconds it took."""
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, seconds: float = 30.0) -> None:
    """Wait until *url* answers 2xx (a server this benchmark started)."""
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def subscribers_with_links(settings: Any, count: int, base: str) -> list[str]:
    """*count* active subscribers on the list "nyhetsbrev" of *settings*; each one's unsubscribe URL under *base*."""
    from pipeline.store import Store
    from pipeline.subscribers import ImportReport, batches, candidate
    from pipeline.tokens import Tokens

    with Store.open(settings.storage_url) as store:
        for batch in batches((candidate(f"u{n}@example.org") for n in range(count)), 1000):
            store.upsert_subscribers("nyhetsbrev", batch, report=ImportReport())
        ids = [s.id for s in store.iter_subscribers("nyhetsbrev")]
    tokens = Tokens(SECRET)
    return [f"{base}/unsubscribe/{tokens.unsubscribe(i, 'nyhetsbrev')}" for i in ids]


def start_serve(work: Path, port: int) -> subprocess.Popen[bytes]:
    """``flygblad serve`` for the project in *work*, in its own process as in production, once it answers."""
    import sys

    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--port", str(port)],
        cwd=work,
        env={**os.environ, "FLYGBLAD_SECRET": SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_http(f"http://127.0.0.1:{port}/healthz")
    return server

"""What every benchmark shares: where results go, the machine they were measured on, ports."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


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
    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except Exception:  # noqa: BLE001 - a package that is not installed is simply not listed
            continue
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

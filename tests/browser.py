"""Helpers for the tests that look at pages and emails in headless Chromium: axe-core and screenshots.

Chromium is Debian's (/usr/bin/chromium) driven by Playwright, which never
downloads a browser here. axe-core comes from the npm registry into
``tests/axe/node_modules`` (``npm ci`` there, run on first use when missing).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
AXE_DIR = Path(__file__).parent / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: axe-core's impacts that fail a page; "moderate" and "minor" are reported, not failed.
FAILING_IMPACTS = ("serious", "critical")


def axe_script() -> Path:
    """axe.min.js, installed with ``npm ci`` in tests/axe the first time (skip or fail without npm)."""
    if AXE_JS.is_file():
        return AXE_JS
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("FLYGBLAD_REQUIRE_BROWSER") == "1":
            pytest.fail("npm is required (FLYGBLAD_REQUIRE_BROWSER=1) to install axe-core in tests/axe")
        pytest.skip("npm is not installed: the accessibility checks need axe-core from the npm registry")
    lock = AXE_DIR / ".install.lock"
    import fcntl

    with open(lock, "w") as handle:  # pytest-xdist workers: one installs, the others wait for it
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not AXE_JS.is_file():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=AXE_DIR, check=True, capture_output=True)
    return AXE_JS


def axe_violations(page: Any) -> list[str]:
    """The serious and critical axe-core violations on *page*, one line each (rule, impact, first target).

    The page's context must bypass its CSP (``bypass_csp=True``): axe is a script,
    which flygblad's pages rightly refuse.
    """
    page.add_script_tag(path=str(axe_script()))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes'][0]['target']} ({len(v['nodes'])} nodes)"
        for v in result["violations"]
        if v.get("impact") in FAILING_IMPACTS
    ]


def screenshot(page: Any, name: str) -> bytes:
    """A full-page PNG, also kept as tests/artifacts/<name>.png for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    data: bytes = page.screenshot(full_page=True)
    (ARTIFACTS / f"{name}.png").write_bytes(data)
    return data


def pixel_difference(first: bytes, second: bytes) -> float:
    """The share of pixels that differ between two screenshots (1.0 when their sizes differ)."""
    from PIL import Image, ImageChops

    a = Image.open(io.BytesIO(first)).convert("RGB")
    b = Image.open(io.BytesIO(second)).convert("RGB")
    if a.size != b.size:
        return 1.0
    diff = ImageChops.difference(a, b).convert("L").point(lambda value: 255 if value > 16 else 0)
    histogram = diff.histogram()
    return histogram[255] / (a.size[0] * a.size[1])

"""Lead images: fetched once at collect time, resized, kept by content hash, served by flygblad.

Emails used to hot-link the source's images at full size and without a height:
nothing was reserved while they loaded, a source that moved or blocked
hot-linking broke every sent issue, and a 3 MB photo went to every phone. A
site served over real HTTP gives three articles: one with a large photo, one
whose "image" is an HTML page, one whose image is gone (404).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.conftest import ROOT, source_toml
from tests.smtp_sink import free_port
from tests.test_web import SECRET, Server

ARTICLE = """<!DOCTYPE html><html lang="sv"><head><meta charset="utf-8"><title>{title}</title>
<meta property="og:title" content="{title}">{image}
<meta property="article:published_time" content="{date}"></head>
<body><main><article><h1>{title}</h1><p class="byline">Av Karin Ek</p>
<p>{text}</p><p>{text}</p></article></main></body></html>"""
TEXT = "Företagen i programmet berättar om hur de arbetar med ständiga förbättringar i produktionen. " * 3


def _photo(width: int, height: int) -> bytes:
    """A JPEG photo-like image (gradients, so it does not compress to nothing)."""
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    return _photo(3000, 2000)


@pytest.fixture
def project(site_server, write_config, tmp_path: Path, photo: bytes):
    root = tmp_path / "site"
    (root / "bilder").mkdir(parents=True)
    (root / "bilder" / "stor.jpg").write_bytes(photo)
    (root / "bilder" / "sida.jpg").write_text("<html><body>inte en bild</body></html>", encoding="utf-8")
    pages = {
        "stor.html": ("Ett stort foto", '<meta property="og:image" content="/bilder/stor.jpg">'),
        "sida.html": ("En bild som är en sida", '<meta property="og:image" content="/bilder/sida.jpg">'),
        "borta.html": ("En bild som är borta", '<meta property="og:image" content="/bilder/borta.jpg">'),
    }
    links = ""
    for day, (name, (title, image)) in enumerate(pages.items(), start=1):
        (root / name).write_text(
            ARTICLE.format(title=title, image=image, date=f"2026-12-0{day}T08:00:00+01:00", text=TEXT), encoding="utf-8"
        )
        links += f'<article><h2><a href="{name}">{title}</a></h2></article>'
    (root / "index.html").write_text(f"<html><body><main>{links}</main></body></html>", encoding="utf-8")
    site = site_server(root)
    port = free_port()
    config = write_config(
        source_toml("artiklar", site.url("/index.html"), category="article")
        + '\n[organisation]\nname = "Föreningen"\naddress = "Box 1, 111 11 Stad"\n'
        + '\n[[lists]]\nname = "brev"\ntitle = "Brevet"\nfrom = "Föreningen <brev@test.example>"\n'
        + "first_issue_days = 36500\n"
        + f'\n[web]\nbase_url = "http://127.0.0.1:{port}"\n'
    )
    return config, site, port


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYGBLAD_")}
    env.update(FLYGBLAD_SECRET=SECRET, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(config), *args],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_images_are_kept_resized_and_never_hot_linked(project, monkeypatch) -> None:
    config, site, port = project
    collected = _run(config, "collect")
    assert collected.returncode == 0, collected.stderr
    assert "1 images kept; 2 images not kept" in collected.stdout, collected.stdout
    assert re.search(r"warning: image http://\S+/bilder/sida\.jpg: not a readable image", collected.stderr)
    assert re.search(r"warning: image .*/bilder/borta\.jpg.*404", collected.stderr), collected.stderr
    media = config.parent / "feeds" / "media"
    files = sorted(media.iterdir())
    assert [re.sub(r"^[0-9a-f]{32}", "H", f.name) for f in files] == ["H-1200.jpg", "H-640.jpg"]
    for path, width in zip(files, (1200, 640), strict=True):
        with Image.open(path) as kept:
            assert kept.size == (width, round(width * 2 / 3))
    assert sum(f.stat().st_size for f in files) < 400_000, "a phone downloads kilobytes, not the 3000 px original"

    again = _run(config, "collect")
    assert "images" not in again.stdout, "kept images are not fetched again, given-up ones not retried at once"
    assert [h.path for h in site.pages()].count("/bilder/stor.jpg") == 1

    assert _run(config, "preview").returncode == 0
    html = (config.parent / "preview" / "issue.html").read_text(encoding="utf-8")
    images = re.findall(r"<img\b[^>]*>", html)
    assert len(images) == 1, "the two articles whose image could not be kept have none: no broken frame"
    [img] = images
    assert f'src="http://127.0.0.1:{port}/media/' in img and "-640.jpg" in img
    assert 'width="200"' in img and 'height="133"' in img, img
    assert str(site.url("/bilder/")) not in html, "never hot-linked from the source"

    assert _run(config, "feeds").returncode == 0
    rss = (config.parent / "feeds" / "all.rss").read_text(encoding="utf-8")
    [enclosure] = re.findall(r"<enclosure [^>]*/>", rss)
    big = next(f for f in files if f.name.endswith("-1200.jpg"))
    assert f'url="http://127.0.0.1:{port}/media/{big.name}"' in enclosure
    assert f'length="{big.stat().st_size}"' in enclosure
    assert 'width="1200" height="800"' in rss.replace('height="800" width="1200"', 'width="1200" height="800"')
    assert "/bilder/" not in rss and "/bilder/" not in (config.parent / "feeds" / "all.json").read_text("utf-8")
    listed = json.loads((config.parent / "feeds" / "all.json").read_text("utf-8"))["items"]
    assert [entry.get("image", "").rpartition("/")[2] for entry in listed] == ["", "", big.name]

    monkeypatch.setenv("FLYGBLAD_SECRET", SECRET)
    from pipeline.config import load_settings

    with Server(load_settings(config), port) as server:
        answer = requests.get(f"{server.url}/media/{big.name}")
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert answer.content == big.read_bytes()
        assert requests.get(f"{server.url}/media/../config.toml").status_code == 404
        assert requests.get(f"{server.url}/media/{big.name[:-4]}.gif").status_code == 404


def test_hostile_images_are_refused_before_they_are_decoded(tmp_path: Path) -> None:
    from pipeline.sources.images import NotAnImage, keep_image

    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")  # 50 KB on the wire, 400 megapixels decoded
    with pytest.raises(NotAnImage, match="more than 40,000,000"):
        keep_image(bomb.getvalue(), tmp_path)
    with pytest.raises(NotAnImage, match="not a readable image"):
        keep_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, tmp_path)
    tiff = io.BytesIO()
    Image.new("RGB", (10, 10)).save(tiff, format="TIFF")
    with pytest.raises(NotAnImage, match="TIFF"):
        keep_image(tiff.getvalue(), tmp_path)
    assert not any(tmp_path.iterdir()), "nothing written for a refused image"
    small = io.BytesIO()
    Image.new("RGBA", (100, 50), (10, 20, 30, 128)).save(small, format="PNG")
    digest, ext, width, height = keep_image(small.getvalue(), tmp_path)
    assert (ext, width, height) == ("png", 100, 50), "transparency kept; never enlarged"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{digest}-100.png"]

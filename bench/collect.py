"""Collecting a 200-page local site twice: the second run (all 304s) against the first.

Run: ``.venv/bin/python -m bench.collect [--pages N] [--repeats R]``. The site is served on
127.0.0.1 by the standard library's HTTP server with ETags; flygblad's per-host
delay is set to 0 for the measurement. The goal (issue 7) is second run <= 0.1
of the first; each repeat is a fresh project (first run, then second), medians
over repeats. Results go to ``bench/results/collect.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.common import free_port, wait_for_http, write_result
from pipeline.collect import collect
from pipeline.config import load_settings
from pipeline.store import Store

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "site" / "ledare" / "utmanande-larorikt-och-inspirerande.html"


class ETagHandler(SimpleHTTPRequestHandler):
    """Static files with a content ETag and 304 for If-None-Match, over keep-alive connections like a real site."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in separate writes must not wait for a delayed ACK

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        path = Path(self.translate_path(self.path))
        if path.is_file():
            etag = '"' + hashlib.sha1(path.read_bytes()).hexdigest() + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return None
            self._etag = etag
        return super().send_head()

    def end_headers(self) -> None:
        etag = getattr(self, "_etag", None)
        if etag:
            self.send_header("ETag", etag)
            self._etag = None
        super().end_headers()


def make_site(root: Path, pages: int) -> None:
    seed = SEED.read_text(encoding="utf-8")
    links = []
    for n in range(pages):
        page = seed.replace("utmanande-larorikt-och-inspirerande", f"ledare-{n}").replace(
            "Utmanande, lärorikt och inspirerande", f"Ledare nummer {n}"
        )
        (root / f"ledare-{n}.html").write_text(page, encoding="utf-8")
        links.append(f'<article><h2><a href="ledare-{n}.html">Ledare nummer {n}</a></h2></article>')
    (root / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>", encoding="utf-8")


def serve(site: Path, port: int) -> None:
    """The sample site on 127.0.0.1:*port* (``--serve``, in its own process)."""
    handler = lambda *a, **k: ETagHandler(*a, directory=str(site), **k)  # noqa: E731
    ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", nargs=2, metavar=("FOLDER", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]))
        return
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        site = work / "site"
        site.mkdir()
        make_site(site, args.pages)
        # The site runs in its own process, as a real site runs on its own machine:
        # its CPU time is not flygblad's.
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "bench.collect", "--serve", str(site), str(port)], cwd=ROOT)
        wait_for_http(f"http://127.0.0.1:{port}/index.html")
        firsts, seconds = [], []
        for run in range(args.repeats):  # each repeat a fresh project: first run, then second run
            project = work / f"run{run}"
            project.mkdir()
            (project / "config.toml").write_text(
                '[site]\ntitle = "Bench"\nbase_url = "https://bench.example"\n\n'
                f'[[sources]]\nname = "ledare"\nkind = "html"\nurl = "http://127.0.0.1:{port}/index.html"\n'
                f'category = "leader"\nmax_items = {args.pages}\n\n[http]\ndelay_seconds = 0\n',
                encoding="utf-8",
            )
            settings = load_settings(project / "config.toml")
            with Store.open(settings.storage_url) as store:
                began = time.perf_counter()
                first = collect(settings, store)
                firsts.append(time.perf_counter() - began)
                began = time.perf_counter()
                second = collect(settings, store)
                seconds.append(time.perf_counter() - began)
            assert first.total("new") == args.pages and second.total("unchanged") == args.pages, (
                first.summary(),
                second.summary(),
            )
        server.terminate()
        server.wait(timeout=10)
    first_s, second_s = statistics.median(firsts), statistics.median(seconds)
    result = {
        "what": f"collect a {args.pages}-page local site twice over HTTP (second run: conditional GETs)",
        "first_s": round(first_s, 2),
        "second_s": round(second_s, 3),
        "ratio": round(second_s / first_s, 3),
        "goal_ratio": 0.1,
        "repeats": {"first_s": [round(x, 3) for x in firsts], "second_s": [round(x, 3) for x in seconds]},
        "second_run": {"requests": second.requests, "not_modified": second.not_modified},
    }
    write_result("collect", result)
    print(
        f"collect {args.pages} pages: first {result['first_s']} s, second {result['second_s']} s "
        f"({second.not_modified} x 304), ratio {result['ratio']} (goal <= 0.1)"
    )


if __name__ == "__main__":
    main()

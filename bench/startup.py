"""Start-up: how long ``flygblad --help`` and ``flygblad items`` take, beside the interpreter's own start.

Run: ``.venv/bin/python -m bench.startup [--repeats N]``.

Each command runs N times (default 5) as a new process, interleaved with a bare
``python -c pass`` (the floor no Python command can go under) and ``python -c
"import click"`` (what a click CLI pays at least); medians reported. Goal:
``--help`` ≤ 0.4 s (issue 14: it took 2.2 s when the CLI imported trafilatura,
dkim and the web framework up front). Results go to ``bench/results/startup.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SECRET, sample_project, write_result


def _seconds(command: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    script = shutil.which("flygblad", path=str(Path(sys.executable).parent)) or "flygblad"
    os.environ["FLYGBLAD_SECRET"] = SECRET
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        sample_project(work)
        subprocess.run([script, "collect"], cwd=work, check=True, capture_output=True)
        commands = {  # name -> what runs
            "bare_python": [sys.executable, "-c", "pass"],
            "import_click": [sys.executable, "-c", "import click"],
            "help": [script, "--help"],
            "items": [script, "items"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # interleaved: the machine's moods touch every command alike
            for name, command in commands.items():
                times[name].append(_seconds(command, work))
    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
    result = {
        "what": f"wall time of a new process, median of {args.repeats}, interleaved",
        "median_s": medians,
        "help_s": medians["help"],
        "goal": "flygblad --help <= 0.4 s",
    }
    write_result("startup", result)
    print(
        f"startup: --help {medians['help']} s, items {medians['items']} s "
        f"(python -c pass {medians['bare_python']} s, python -c 'import click' {medians['import_click']} s)"
    )


if __name__ == "__main__":
    main()

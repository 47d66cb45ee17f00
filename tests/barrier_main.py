"""Run ``flygblad`` after a barrier: ``python -m tests.barrier_main DIR N ARGS…``.

Each process marks itself in DIR and waits until N have arrived, so the
commands start their work at the same moment (a barrier, not a sleep) and
any race between them shows.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    folder, count, *args = sys.argv[1:]
    here = Path(folder)
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while sum(1 for _ in here.iterdir()) < int(count):
        if time.monotonic() > deadline:
            sys.exit("barrier: the other processes never arrived")
        time.sleep(0.0005)
    from pipeline.cli import cli

    cli.main(args=args, prog_name="flygblad")


if __name__ == "__main__":
    main()

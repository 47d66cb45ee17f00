"""The 1,000,000-subscriber row on PostgreSQL: ``python -m bench.scale_postgresql`` runs ``bench.scale`` with
``--database`` (``FLYGBLAD_TEST_DATABASE_URL``, or postgres@127.0.0.1:5432/test) and writes
``results/scale_postgresql.json``."""

from __future__ import annotations

import os
import sys

from bench import scale

if __name__ == "__main__":
    if "--database" not in sys.argv:
        sys.argv[1:1] = ["--database", os.environ.get("FLYGBLAD_TEST_DATABASE_URL", scale.DEFAULT_DATABASE)]
    scale.main()

"""``python -m pipeline`` is the same as the ``flygblad`` command."""

from pipeline.cli import main

main()

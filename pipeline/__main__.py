"""``python -m pipeline`` is the same as the ``flygblad`` command."""

from pipeline.cli import main

if __name__ == "__main__":  # not again in the processes a collect of many feeds parses them in
    main()

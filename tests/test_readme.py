"""The README's promises that CI depends on."""

from __future__ import annotations

import re

from tests.conftest import ROOT

INSTALL_AND_RUN = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/flygblad run"
INSTALL_AND_TEST = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"


def test_readme_and_ci_run_the_same_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    assert blocks[:2] == [INSTALL_AND_RUN, INSTALL_AND_TEST]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert INSTALL_AND_TEST in ci.splitlines()
    assert "set -euo pipefail" in ci


def test_every_config_key_is_documented() -> None:
    from pipeline.config import (
        FeedSettings,
        HttpSettings,
        SelectSettings,
        SiteSettings,
        SourceSettings,
        StorageSettings,
    )

    docs = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for model in (SiteSettings, StorageSettings, SourceSettings, SelectSettings, FeedSettings, HttpSettings):
        for key in model.model_fields:
            assert f"| `{key}` |" in docs, f"{model.__name__}.{key} is not in docs/configuration.md"

"""An installable product: optional extras named when missing, a CLI that starts without its heavy parts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: Runs flygblad's CLI with some modules made impossible to import, as on an install without that extra.
WITHOUT = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Missing(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {missing!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}")
            return None

    sys.meta_path.insert(0, Missing())
    sys.argv = ["flygblad", *{args!r}]
    from pipeline.cli import main
    main()
    """
)


def _without(missing: set[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = WITHOUT.format(missing=missing, args=list(args))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("missing", "edit", "key", "extra"),
    [
        (
            {"psycopg"},
            ('url = "sqlite:///var/flygblad.db"', 'url = "postgresql+psycopg://flygblad@127.0.0.1/flygblad"'),
            "storage.url",
            "flygblad[postgresql]",
        ),
        (
            {"cryptography"},
            ("[web]\n", '[web]\nsendgrid_webhook_key_env = "SG_KEY"\n'),
            "web.sendgrid_webhook_key_env",
            "flygblad[webhooks]",
        ),
    ],
    ids=["postgresql", "webhooks"],
)
def test_a_config_that_needs_a_missing_extra_names_it(
    example_settings, missing: set[str], edit: tuple[str, str], key: str, extra: str
) -> None:
    config = example_settings.path
    config.write_text(config.read_text(encoding="utf-8").replace(*edit, 1), encoding="utf-8")
    done = _without(missing, "items", cwd=config.parent)
    assert done.returncode == 2, done.stderr
    assert key in done.stderr and f"pip install '{extra}'" in done.stderr, done.stderr


def test_the_default_config_runs_without_either_extra(example_settings) -> None:
    done = _without({"psycopg", "cryptography"}, "items", "--json", cwd=example_settings.base_dir)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 8


#: What `--help` and `items` must not import: the extractor, DKIM and DNS, the web framework, the renderer.
HEAVY = {"trafilatura", "dkim", "dns", "flask", "waitress", "mjml", "css_inline", "feedgen", "jinja2"}


@pytest.mark.parametrize(
    ("args", "heavy"),
    [
        (["--help"], HEAVY | {"lxml", "bs4", "sqlalchemy", "pydantic"}),  # no config is read for --help
        (["items", "--json"], HEAVY),  # the config's CSS selectors are checked with soupsieve (bs4)
    ],
    ids=["help", "items"],
)
def test_the_cli_starts_without_its_heavy_parts(example_settings, args: list[str], heavy: set[str]) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.argv = ["flygblad", *{args!r}]
        from pipeline.cli import main
        try:
            main()
        except SystemExit:
            pass
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})), file=sys.stderr)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=example_settings.base_dir, capture_output=True, text=True, timeout=120
    )
    loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert not loaded & heavy, f"imported for {args}: {sorted(loaded & heavy)}"


def test_a_projects_strings_override_the_built_in_ones_key_by_key(tmp_path: Path) -> None:
    """A project writes only the strings it changes; everything else, in every language, stays flygblad's."""
    from pipeline.render.templates import BUILTIN_TEMPLATES, strings

    (tmp_path / "strings.toml").write_text('[sv]\ngreeting = "Tjena!"\n[en]\narchive_title = "Old issues"\n')
    built_in_sv, built_in_en = strings(BUILTIN_TEMPLATES, "sv"), strings(BUILTIN_TEMPLATES, "en")
    swedish, english = strings(tmp_path, "sv"), strings(tmp_path, "en-GB")
    assert swedish["greeting"] == "Tjena!" and english["greeting"] == built_in_en["greeting"]
    assert english["archive_title"] == "Old issues"
    assert swedish["archive_title"] == built_in_sv["archive_title"], "an English override never covers Swedish"
    assert set(swedish) == set(built_in_sv)

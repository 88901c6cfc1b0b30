"""Docs stay true: the config reference is generated from the code and current; every key of every
registered component and of [run] is in it; the README shows the two commands."""

from pathlib import Path

from mxplain import configdoc, plugins
from mxplain.config import RUN_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]


def test_config_reference_is_current():
    text = (ROOT / "docs" / "config.md").read_text()
    assert text == configdoc.render(), \
        "docs/config.md is stale: run `python -m mxplain.configdoc > docs/config.md`"


def test_every_key_is_documented():
    text = (ROOT / "docs" / "config.md").read_text()
    for key in RUN_DEFAULTS:
        assert f"| `{key}` |" in text
    for kind, entries in plugins.registry().items():
        for name, entry in entries.items():
            section = text.split(f" {name}\n", 1)
            assert len(section) == 2, f"{kind} {name} has no section"
            for key in entry.cls.param_defaults():
                assert f"| `{key}` |" in section[1], f"{kind} {name}: key {key} undocumented"


def test_readme_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text

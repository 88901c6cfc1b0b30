"""mxplain.configdoc: docs/config.md is generated from the registered components' constructors and
kept current (moved from test_docs.py), so a new key cannot go undocumented; what render writes for
a component registered at run time."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from mxplain import configdoc, hookimpl, plugins
from mxplain.config import RUN_DEFAULTS
from mxplain.interfaces import Explainer

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


@pytest.mark.parametrize("value,text", [
    ("auto", '`"auto"`'), (None, "*(unset)*"), (True, "`true`"), (False, "`false`"),
    (3, "`3`"), (0.25, "`0.25`"), ((1, 2), "`(1, 2)`"), ({"a": "x|y"}, "`{'a': 'x\\|y'}`"),
])
def test_defaults_are_written_as_a_markdown_table_cell(value, text):
    assert configdoc._fmt(value) == text


class Tally(Explainer):
    """Counts the tiles of each
    lot.

    Nothing else: this paragraph is not the summary."""

    name = "tally-doc"

    def __init__(self, scale: float = 1.5, label: str | None = None):
        self.scale = scale
        self.label = label

    def variables(self, ctx):
        return {}

    def explain_lot(self, lot, ctx):
        return {}


class Bare(Tally):
    """No parameters here."""

    name = "bare-doc"

    def __init__(self):
        pass


@pytest.fixture
def registered():
    plugins.reset()
    plugins.register(types.SimpleNamespace(mxplain_explainers=hookimpl(lambda: [Tally, Bare])),
                     name="docplugin", distribution="doc-dist")
    yield
    plugins.reset()


def test_a_registered_component_gets_its_section(registered):
    text = configdoc.render()
    section = text.split("## [explain.<name>] tally-doc\n", 1)[1].split("\n## ", 1)[0]
    assert section.strip().splitlines() == [
        "Counts the tiles of each lot. (table `[explain.tally-doc]`; plugin `docplugin`, "
        "distribution `doc-dist`)", "",
        "| key | default |", "| --- | --- |", "| `scale` | `1.5` |", "| `label` | *(unset)* |"]
    bare = text.split("## [explain.<name>] bare-doc\n", 1)[1].split("\n## ", 1)[0]
    assert bare.strip().endswith("No parameters.")
    assert text.index("## [run]") < text.index("## [trust]") < text.index("## [data] store")
    assert text.endswith("\n") and not text.endswith("\n\n")

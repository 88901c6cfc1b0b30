"""Issue 19 item 7: the custom-predictor tutorial tells one story (one example package, class and
name: mxplain-tinycnn / mxplain_tinycnn / TinyCNN / tinycnn), documents every field of ``ctx``,
``mxplain.load_checkpoint`` and the conformance command, and the example package says the same."""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import mxplain
from mxplain.interfaces import ExplainContext, RunContext

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_predictor"
TUTORIAL_FILES = [ROOT / "docs" / "custom-predictor.md", ROOT / "docs" / "hooks.md",
                  EXAMPLE / "README.md", EXAMPLE / "pyproject.toml", EXAMPLE / "config.toml",
                  *sorted((EXAMPLE / "mxplain_tinycnn").glob("*.py"))]


def test_one_example_everywhere():
    for path in TUTORIAL_FILES:
        text = path.read_text()
        assert "meangrey" not in text.lower(), path
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "mxplain-tinycnn"
    assert meta["project"]["entry-points"]["mxplain"] == {"tinycnn": "mxplain_tinycnn"}
    spec = importlib.util.spec_from_file_location(
        "mxplain_tinycnn", EXAMPLE / "mxplain_tinycnn" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TinyCNN.name == "tinycnn"
    assert module.TinyCNN.capabilities({}) == {"gradients", "torch_module"}
    tutorial = (ROOT / "docs" / "custom-predictor.md").read_text()
    for word in ("mxplain-tinycnn", "mxplain_tinycnn", "TinyCNN", 'name = "tinycnn"'):
        assert word in tutorial, word


def test_every_ctx_field_is_documented():
    tutorial = (ROOT / "docs" / "custom-predictor.md").read_text()
    fields = {f.name for f in dataclasses.fields(ExplainContext)}
    assert {f.name for f in dataclasses.fields(RunContext)} <= fields
    for name in fields | {"figures_dir", "models_dir"}:
        assert f"`{name}`" in tutorial, name


def test_load_checkpoint_and_the_conformance_command_are_documented():
    tutorial = (ROOT / "docs" / "custom-predictor.md").read_text()
    assert "mxplain.load_checkpoint(" in tutorial and callable(mxplain.load_checkpoint)
    assert "load_checkpoint" in mxplain.__all__
    assert "python -m mxplain.conformance tinycnn" in tutorial
    assert "pytest tests/test_conformance.py" not in tutorial  # no source checkout needed

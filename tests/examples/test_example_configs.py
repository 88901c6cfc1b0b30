"""Every example config resolves against the registered plugins (no unknown keys or names)."""

from pathlib import Path

import pytest

from mxplain import config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "examples").rglob("*.toml"))
# the custom predictor's config needs its package installed (tests/examples/test_examples.py)
CONFIGS = [p for p in CONFIGS if p.name != "pyproject.toml" and "custom_predictor" not in p.parts]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_resolves(path):
    cfg = config.load(path)
    assert cfg["data"]["name"]

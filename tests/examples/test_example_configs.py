"""Every example config resolves against the registered plugins (no unknown keys or names)."""

from pathlib import Path

import pytest

from mxplain import config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "examples").rglob("*.toml"))
# the custom predictor's config needs its package installed (tests/examples/test_examples.py),
# the new user's its tile store made and ingested first (tests/examples/test_new_user.py)
CONFIGS = [p for p in CONFIGS if p.name != "pyproject.toml" and "custom_predictor" not in p.parts
           and "new_user" not in p.parts]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_resolves(path):
    cfg = config.load(path)
    assert cfg["data"]["name"]


def test_flipped_quickstart_is_the_quickstart_with_every_law_sign_reversed():
    import numpy as np
    import tomllib

    from mxplain_synthetic.dataset import SyntheticLots

    quick = tomllib.loads((ROOT / "core/mxplain/data/quickstart.toml").read_text())
    flipped = tomllib.loads((ROOT / "examples/quickstart-flipped.toml").read_text())
    assert flipped["data"]["law"] == {k: -v for k, v in quick["data"]["law"].items()}
    flipped["data"]["law"] = quick["data"]["law"]
    assert flipped == quick
    # the law labels the lots only: the same tiles and attributes, the opposite property trend
    law = quick["data"]["law"]
    a = SyntheticLots(n_lots=3, tiles_per_lot=2, tile_size=32, seed=0, law=law)
    b = SyntheticLots(n_lots=3, tiles_per_lot=2, tile_size=32, seed=0,
                      law={k: -v for k, v in law.items()})
    assert np.array_equal(a.lot_attributes(), b.lot_attributes())
    assert np.array_equal(a.lot_tiles(1), b.lot_tiles(1))
    assert not np.allclose(a.lot_properties(), b.lot_properties())


def test_128_px_gpu_check_is_the_quickstart_and_its_recipe_scaled():
    import tomllib

    def read(rel):
        return tomllib.loads((ROOT / rel).read_text())

    quick, q128 = read("core/mxplain/data/quickstart.toml"), read("examples/quickstart-128.toml")
    assert q128["data"]["tile_size"] == 128 and q128["editor"]["checkpoint"].endswith(".pt")
    q128["data"]["tile_size"], q128["editor"]["checkpoint"] = 64, quick["editor"]["checkpoint"]
    assert q128 == quick
    train, t128 = read("examples/quickstart-train.toml"), read("examples/quickstart-train-128.toml")
    scaled = {"enc_dim": 32, "dec_dim": 32, "dis_dim": 64, "dis_fc_dim": 256, "n_layers": 5,
              "shortcut_layers": 3}
    assert {k: t128["editor"][k] for k in scaled} == scaled and t128["data"]["tile_size"] == 128
    t128["editor"].update({k: train["editor"][k] for k in scaled})
    t128["data"]["tile_size"] = 64
    assert t128 == train
    assert t128["data"] == quick["data"]  # step 1 trains on the store step 2 explains

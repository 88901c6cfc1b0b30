import pytest

from mxplain import config
from mxplain.errors import UserError


def _load(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(p)


def test_quickstart_resolves_with_defaults():
    cfg = config.load(None)
    assert cfg["data"]["name"] == "synthetic"
    assert {"predictor", "editor", "explain", "run"} <= set(cfg)
    assert cfg["run"]["seed"] == 0 and "device" in cfg["run"]
    text = config.to_toml(cfg)
    assert "[data]" in text and "[explain.forward]" in text


@pytest.mark.parametrize("text,match", [
    ('[dta]\nname="synthetic"\n', r"unknown table \[dta\]; did you mean 'data'"),
    ('[data]\nname="synthetic"\nn_lot=3\n', r"unknown key 'n_lot' in \[data\].*did you mean 'n_lots'"),
    ('[data]\nname="synthetic"\n[run]\nsed=1\n', r"unknown key 'sed' in \[run\].*'seed'"),
    ('[data]\nname="nope"\n', r"unknown dataset 'nope'.*available datasets:"),
    ('[data]\nname="synthetic"\n[predictor]\nname="wideresnet"\ndepht=10\n',
     r"unknown key 'depht' in \[predictor\].*'depth'"),
    ('[data]\nname="synthetic"\n[predictor]\nname="wideresnet"\n[explain.forward]\n',
     r"\[explain.forward\] needs an \[editor\]"),
    ('[data]\nname="synthetic"\n[explain.bogus]\n', r"unknown explainer 'bogus'"),
    ('[predictor]\nname="wideresnet"\n', r"\[data\] is required"),
    ('[data\nname=1', r"not valid TOML"),
    ('[data]\nname="synthetic"\n[predictor]\nname="wideresnet"\ncheckpoint=3\n',
     r"checkpoint must be a path"),
])
def test_bad_configs(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        _load(tmp_path, text)


def test_checkpoint_path_is_relative_to_config(tmp_path):
    cfg = _load(tmp_path, '[data]\nname="synthetic"\n[predictor]\nname="wideresnet"\n'
                          'checkpoint="m/p.pt"\n')
    assert cfg["predictor"]["checkpoint"] == str(tmp_path / "m" / "p.pt")

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


def test_only_inference_params_sit_next_to_a_checkpoint(tmp_path):
    """Beside a checkpoint the trained model's parameters are its own: a training key there is an
    error (it used to be ignored), an inference parameter is kept, and nothing else is filled in."""
    head = '[data]\nname="synthetic"\n[editor]\nname="attgan"\ncheckpoint="e.pt"\n'
    cfg = _load(tmp_path, head + 'edit_mode="difference"\n')
    assert cfg["editor"] == {"name": "attgan", "checkpoint": str(tmp_path / "e.pt"),
                             "edit_mode": "difference"}
    with pytest.raises(UserError, match=r"\[editor\] epochs: fixed by the checkpoint.*edit_mode"):
        _load(tmp_path, head + "epochs=3\n")
    with pytest.raises(UserError, match="edit_mode must be one of"):
        _load(tmp_path, head + 'edit_mode="blend"\n')
    with pytest.raises(UserError, match=r"\[predictor\] lr: fixed by the checkpoint.*none"):
        _load(tmp_path, '[data]\nname="synthetic"\n[predictor]\nname="wideresnet"\n'
                        'checkpoint="p.pt"\nlr=0.1\n')


@pytest.fixture
def third_party_dataset():
    """A registered third-party dataset with its own checks and a key that may be NaN."""
    import types

    from mxplain import hookimpl, plugins
    from mxplain.interfaces import Dataset

    class Lots(Dataset):
        name = "lots3p"
        nonfinite_params = frozenset({"missing"})

        def __init__(self, size: int = 4, missing: float = 0.0, ratio: float = 0.5):
            self.size, self.missing, self.ratio = size, missing, ratio

        @classmethod
        def check_params(cls, params):
            if not 0 < params["ratio"] < 1:
                raise UserError("[data] ratio must be in (0, 1)")
            if params["size"] == 13:
                raise ValueError("unlucky")  # a plugin's check tripping over a value

        def build(self, path, ctx, resume=False):
            raise NotImplementedError

    plugins.reset()
    mod = types.SimpleNamespace(mxplain_datasets=hookimpl(lambda: [Lots]))
    plugins.register(mod, name="lots3p")
    yield
    plugins.reset()


@pytest.mark.parametrize("table,match", [
    ({"ratio": 1.5}, r"^c\.toml: \[data\] ratio must be in \(0, 1\)$"),
    ({"ratio": float("nan")}, r"\[data\] ratio = nan: NaN and Inf are not allowed"),
    ({"size": 4.0}, r"\[data\] size = 4\.0: needs an integer"),
    ({"size": True}, r"\[data\] size = true: needs an integer"),
    ({"size": 13}, r"\[data\] \('lots3p'\) parameters refused: ValueError: unlucky"),
])
def test_third_party_types_ranges_and_nonfinite(third_party_dataset, table, match):
    with pytest.raises(UserError, match=match):
        config.resolve({"data": {"name": "lots3p", **table}}, where="c.toml")


def test_third_party_key_that_allows_nan(third_party_dataset):
    cfg = config.resolve({"data": {"name": "lots3p", "missing": float("nan"), "size": 5}})
    assert cfg["data"]["size"] == 5 and cfg["data"]["ratio"] == 0.5

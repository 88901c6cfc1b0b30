"""Issue 19 item 5: a checkpoint's state is checked when it is saved (a scikit-learn estimator in
``state_dict`` is refused then, naming the key, with how to store it as plain arrays), the load
error is never cut mid-sentence, and ``mxplain.load_checkpoint(path)`` rebuilds any registered
component from its file."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

import mxplain
from mxplain import hookimpl, plugins
from mxplain.checkpoint import FORMAT, check_plain, read_checkpoint, whole_sentences
from mxplain.cli import main
from mxplain.errors import UserError
from mxplain.interfaces import Predictor


def grey(tiles) -> np.ndarray:
    return tiles.detach().cpu().numpy().reshape(len(tiles), -1).mean(1, keepdims=True)


class RidgeObject(Predictor):
    """A ridge regression of the mean grey level, its state the fitted estimator itself (wrong)."""

    name = "ck-ridge-object"
    differentiable = False

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha
        self.model = None

    def fit(self, store, ctx):
        tiles, lot = store.all_tiles()
        x = tiles.reshape(len(tiles), -1).mean(1, keepdims=True) / 255
        self.model = Ridge(alpha=self.alpha).fit(x, store.properties[lot])
        return {}

    def forward(self, tiles):
        return torch.as_tensor(self.model.predict(grey(tiles)), dtype=torch.float32)

    def state_dict(self):
        return {"model": self.model}

    def load_state_dict(self, state):
        self.model = state["model"]


class RidgeArrays(RidgeObject):
    """The same model stored the documented way: coefficients as tensors."""

    name = "ck-ridge-arrays"

    def state_dict(self):
        return {"coef": torch.as_tensor(self.model.coef_), "intercept": float(self.model.intercept_)}

    def load_state_dict(self, state):
        self.model = Ridge(alpha=self.alpha)
        self.model.coef_ = state["coef"].numpy()
        self.model.intercept_ = state["intercept"]
        self.model.n_features_in_ = len(self.model.coef_)


@pytest.fixture(autouse=True)
def fakes():
    plugins.reset()
    mod = types.SimpleNamespace(mxplain_predictors=hookimpl(lambda: [RidgeObject, RidgeArrays]))
    plugins.register(mod, name="ck-fakes")
    yield
    plugins.reset()


def fitted(cls, small_store):
    p = cls()
    p.fit(small_store, None)
    return p


def test_an_estimator_in_the_state_is_refused_when_saved(small_store, tmp_path):
    p = fitted(RidgeObject, small_store)
    with pytest.raises(UserError) as exc:
        p.save(tmp_path / "models" / "p.pt")
    msg = str(exc.value)
    assert msg.startswith("cannot save the predictor 'ck-ridge-object': its state['model'] is a "
                          "sklearn.linear_model._ridge.Ridge, not plain data")
    assert "coef_ and intercept_ as tensors" in msg and "texture_rf" in msg
    assert "ForestArrays" in msg and "\n" not in msg
    assert not (tmp_path / "models").exists()  # nothing written, not even the folder


def test_numpy_arrays_get_their_own_hint(small_store, tmp_path):
    p = fitted(RidgeArrays, small_store)
    p.state_dict = lambda: {"coef": np.zeros(3), "nested": [1, {"ok": torch.zeros(2)}]}
    with pytest.raises(UserError, match=r"its state\['coef'\] is a numpy.ndarray, not plain data "
                                        r"\(torch.from_numpy\(array\) stores it as a tensor\)"):
        p.save(tmp_path / "p.pt")


def test_check_plain_names_the_nested_key():
    assert check_plain({"a": [1, 2.0, "x", None, torch.zeros(1)], "b": {"c": (True, b"z")}}) is None
    assert check_plain({"a": [1, {"deep": slice(1)}]}) == ("state['a'][1]['deep']", "slice")
    assert check_plain({(1, 2): 3}) == ("state key (1, 2)", "tuple")


def test_plain_arrays_save_and_load_checkpoint_rebuilds_it(small_store, tmp_path):
    p = fitted(RidgeArrays, small_store)
    p.save(tmp_path / "p.pt")
    q = mxplain.load_checkpoint(tmp_path / "p.pt")
    assert type(q) is RidgeArrays and q.alpha == p.alpha
    x = small_store.lot(0).tiles
    assert np.array_equal(q.predict(x), p.predict(x))


def test_load_checkpoint_of_a_component_that_is_not_installed(tmp_path):
    torch.save({"format": FORMAT, "kind": "predictor", "name": "nowhere", "params": {},
                "state": {}}, tmp_path / "p.pt")
    with pytest.raises(UserError, match="unknown predictor 'nowhere'"):
        mxplain.load_checkpoint(tmp_path / "p.pt")


def test_a_pickled_estimator_is_refused_on_load_in_whole_sentences(tmp_path):
    """What the old save wrote: the refusal names the object and ends with a full sentence."""
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT, "kind": "predictor", "name": "ck-ridge-object",
                "params": {}, "state": {"model": Ridge().fit([[0.0], [1.0]], [0.0, 1.0])}}, path)
    with pytest.raises(UserError) as exc:
        read_checkpoint(path)
    msg = str(exc.value)
    assert "holds a sklearn.linear_model._ridge.Ridge object that loading would have to " \
           "execute" in msg
    assert msg.endswith("whose state is plain data") and "\x1b" not in msg and "\n" not in msg


def test_a_state_that_does_not_fit_is_told_whole(small_store, tmp_path):
    p = fitted(RidgeArrays, small_store)
    p.save(tmp_path / "p.pt")
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    payload["state"].pop("coef")
    torch.save(payload, tmp_path / "p.pt")
    with pytest.raises(UserError, match=r"does not fit 'ck-ridge-arrays': KeyError: 'coef'$"):
        mxplain.load_checkpoint(tmp_path / "p.pt")


def test_whole_sentences_never_cuts_one():
    first = "Error(s) in loading state_dict for Net: Missing key(s) in state_dict: " + \
        ", ".join(f'"layer{i}.weight"' for i in range(60)) + "."
    text = first + "\n\tUnexpected key(s) in state_dict: \"x\". " + "More words. " * 40
    out = whole_sentences(text, limit=120)
    assert out.startswith("Error(s) in loading state_dict for Net:") and "\n" not in out
    assert out.split(" (")[0].endswith(":")  # cut after a whole clause, the rest counted
    assert out.endswith("more characters)")
    long_one = "x" * 500 + " and more"
    assert whole_sentences(long_one, limit=100) == long_one  # one sentence: kept whole
    assert whole_sentences("\x1b[1mbold\x1b[0m text.") == "bold text."


def test_the_pipeline_refuses_at_save_time_with_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nn_lots = 3\ntiles_per_lot = 3\ntile_size = 32\n'
                   '[predictor]\nname = "ck-ridge-object"\n[run]\nreport = false\n')
    code = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "cannot save the predictor 'ck-ridge-object': its state['model']" in lines[0]
    assert not (tmp_path / "run" / "models" / "predictor.pt").exists()

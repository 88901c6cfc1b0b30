"""mxplain.interfaces: what every component inherits. scikit-learn's constructor rule
(``param_defaults``), ``get_params`` and ``repr``; a trainable model's device, save and load; the
predictor's batched ``predict``; the capabilities each kind declares from its class (never found by
``getattr``); the defaults of an editor, an explainer and a dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxplain.errors import PluginError, UserError
from mxplain.interfaces import (
    KINDS,
    NEEDS,
    Dataset,
    Editor,
    ExplainContext,
    Explainer,
    NoLearnedState,
    Predictor,
    latent_take,
)


class Scale(Predictor):
    """``gain`` times each tile's mean grey level; its state: the gain it learned."""

    name = "iface-scale"

    def __init__(self, gain: float = 2.0, label: str = "x"):
        self.gain = gain
        self.label = label

    def fit(self, store, ctx):
        self.learned_ = torch.tensor(self.gain)
        return {}

    def state_dict(self):
        return {"learned": self.learned_}

    def load_state_dict(self, state):
        self.learned_ = state["learned"]

    def forward(self, tiles):
        self.calls_ = getattr(self, "calls_", []) + [len(tiles)]
        return self.gain * tiles.mean(dim=(1, 2, 3))


class Forest(NoLearnedState, Predictor):
    name = "iface-forest"
    differentiable = False

    def forward(self, tiles):
        return tiles.mean(dim=(1, 2, 3)).detach()


class Net(Forest):
    name = "iface-net"
    differentiable = True

    def torch_module(self):
        return torch.nn.Identity()


class Half(NoLearnedState, Editor):
    name = "iface-half"

    def encode(self, tiles):
        return tiles * 0.5

    def decode(self, latent, attributes):
        return latent + attributes[:, :1].view(-1, 1, 1, 1)


class Generates(Half):
    name = "iface-generates"
    differentiable = False

    def generate(self, latent, size=None):
        return latent


def test_param_defaults_are_the_constructors_keywords():
    assert Scale.param_defaults() == {"gain": 2.0, "label": "x"}
    assert Forest.param_defaults() == {}
    s = Scale(gain=3.0)
    assert s.get_params() == {"gain": 3.0, "label": "x"}
    assert repr(s) == "Scale(gain=3.0, label='x')"


@pytest.mark.parametrize("init,needle", [
    (lambda self, *layers: None,
     "Bad.__init__ takes *layers: a component's constructor names each parameter"),
    (lambda self, depth=1, **extra: None, "Bad.__init__ takes **extra"),
    (lambda self, depth: None,
     "Bad.__init__ parameter 'depth' has no default: every constructor parameter needs one"),
])
def test_param_defaults_refuses_what_is_not_a_config_key(init, needle):
    bad = type("Bad", (Forest,), {"__init__": init})
    with pytest.raises(PluginError) as info:
        bad.param_defaults()
    assert str(info.value) == needle or str(info.value).startswith(needle)


def test_the_device_is_the_cpu_until_moved_and_no_constructor_sets_it():
    s = Scale()
    assert s.device == torch.device("cpu") and "device" not in vars(s)
    assert s.to("meta") is s and s.device == torch.device("meta")
    s.device = "cpu"
    assert s.device == torch.device("cpu") and Scale().device == torch.device("cpu")


def test_save_and_load_round_trip_parameters_and_state(tmp_path):
    s = Scale(gain=1.5, label="hv")
    s.fit(None, None)
    s.save(tmp_path / "m" / "scale.pt")
    back = Scale.load(tmp_path / "m" / "scale.pt")
    assert back.get_params() == {"gain": 1.5, "label": "hv"} and float(back.learned_) == 1.5
    with pytest.raises(UserError, match="holds a predictor 'iface-scale', not a predictor "
                                        "'iface-forest'"):
        Forest.load(tmp_path / "m" / "scale.pt")


def test_predict_is_batched_and_takes_arrays():
    s = Scale(gain=4.0)
    tiles = np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2) * 10
    out = s.predict(tiles, batch_size=2)
    assert s.calls_ == [2, 2, 1] and out.dtype == np.float32
    np.testing.assert_allclose(out, 4.0 * tiles.reshape(5, -1).mean(1) / 255, rtol=1e-6)
    empty = s.predict(np.zeros((0, 2, 2), np.uint8))
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_capabilities_come_from_the_classes():
    assert Scale.capabilities({}) == {"gradients"}
    assert Forest.capabilities({}) == frozenset()
    assert Net.capabilities({}) == {"gradients", "torch_module"}
    assert Half.capabilities({}) == {"editor_gradients"}
    assert Generates.capabilities({}) == {"generate"}
    assert Scale().compile() == [] and Half().compile() == [] and Half().health({}) == []
    assert Scale().torch_module() is None
    assert set(NEEDS) >= {"predictor", "editor", "gradients", "torch_module", "editor_gradients",
                          "attributes", "generate"}


def test_edit_is_decode_of_encode_and_generate_is_not_offered_by_default():
    x = torch.full((2, 1, 2, 2), 0.6)
    y = Half().edit(x, torch.tensor([[0.1, 0.9], [0.2, 0.0]]))
    assert torch.allclose(y[:, 0, 0, 0], torch.tensor([0.4, 0.5]))
    with pytest.raises(NotImplementedError, match="the editor 'iface-half' decodes only with "
                                                  "attributes"):
        Half().generate(x)
    assert torch.equal(Generates().generate(x), x)


def test_latent_take_keeps_the_latents_structure():
    z = torch.arange(6).reshape(3, 2)
    assert torch.equal(latent_take(z, slice(1, 3)), z[1:])
    pair = latent_take((z, [z * 10, z * 100]), torch.tensor([2, 0]))
    assert isinstance(pair, tuple) and isinstance(pair[1], list)
    assert pair[0].tolist() == [[4, 5], [0, 1]] and pair[1][1].tolist() == [[400, 500], [0, 100]]


class Counts(Explainer):
    name = "iface-counts"

    def variables(self, ctx):
        return {}

    def explain_lot(self, lot, ctx):
        return {}


def test_explainer_requirements_follow_its_flags_and_uses_defaults_to_them():
    assert Counts.requirements({}) == {"predictor"} == Counts.uses({})
    edits = type("Edits", (Counts,), {"requires_editor": True, "requires_gradients": True})
    assert edits.requirements({}) == {"predictor", "editor", "gradients"} == edits.uses({})
    c = Counts()
    assert c.extra_dims() == {} and c.extra_coords() == {}
    assert c.summarize(None, ExplainContext()) == {}
    assert Counts.reads == () and Counts.reads_optional == ()


class Plain(Dataset):
    name = "iface-plain"

    def build(self, path, ctx, resume=False):
        raise NotImplementedError


class Measured(Plain):
    name = "iface-measured"
    structures = {"pores": "porosity"}

    def measure(self, tiles):
        return tiles.reshape(len(tiles), -1).mean(1, keepdims=True)

    def segment(self, tiles):
        return {"pores": tiles < 128}


def test_a_dataset_provides_what_it_overrides_and_knows_nothing_by_default():
    assert Plain.provides() == frozenset() and Measured.provides() == {"measure", "segment"}
    p = Plain()
    tiles = np.zeros((2, 4, 4), np.uint8)
    assert p.measure(tiles) is None and p.segment(tiles) is None
    assert p.true_sensitivity() is None and p.simulator() is None
    assert p.reference_editor(None) is None and p.edit_fidelity_ceiling(None, None) is None
    assert Plain.data_shape({}) is None and Plain.structures == {}
    assert Measured().segment(tiles)["pores"].all()


def test_kinds_name_the_four_interfaces():
    assert {k: c.kind for k, c in KINDS.items()} == {
        "predictor": "predictor", "editor": "editor", "explainer": "explainer",
        "dataset": "dataset"}

"""mxplain.gradients: a model's claimed gradients are checked on two tiles (:func:`probe`), and an
explainer's ``torch.autograd.grad`` without a gradient is one clear :class:`UserError`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxplain.errors import UserError
from mxplain.gradients import grad, probe
from mxplain.interfaces import Editor, NoLearnedState, Predictor

TILES = torch.linspace(0, 1, 3 * 16).reshape(3, 1, 4, 4)


class Mean(NoLearnedState, Predictor):
    """The mean grey level times 3, computed as ``how`` says."""

    name = "mean"

    def __init__(self, how: str = "torch"):
        self.how = how

    def forward(self, tiles):
        if self.how == "numpy":
            return 3 * tiles.detach().numpy().mean((1, 2, 3))
        if self.how == "detach":
            return 3 * tiles.mean((1, 2, 3)).detach()
        if self.how == "constant":
            return torch.ones(len(tiles), requires_grad=True) * 3
        return 3 * tiles.mean((1, 2, 3))


class Blend(NoLearnedState, Editor):
    """Decodes the latent plus ``0.1 * attributes.sum()``, or ignores the attributes."""

    name = "blend"
    attributes = ("a", "b")

    def __init__(self, use_attributes: bool = True):
        self.use_attributes = use_attributes

    def encode(self, tiles):
        return tiles * 1.0

    def decode(self, latent, attributes):
        self.seen_ = attributes.detach().clone()
        if not self.use_attributes:
            return latent.clone().requires_grad_(True)
        return latent + 0.1 * attributes.sum(1).view(-1, 1, 1, 1)


def test_a_model_that_gives_its_gradients_passes():
    assert probe(Mean(), TILES) is None
    editor = Blend()
    assert probe(editor, TILES, kind="editor", attributes=[np.nan, 2.0]) is None
    assert editor.seen_.tolist() == [[0.5, 1.0], [0.5, 1.0]]  # NaN read as 0.5, clipped to [0, 1]


@pytest.mark.parametrize("how,got", [
    ("numpy", "it returned a ndarray, not a tensor"),
    ("detach", "the output tensor does not require grad"),
    ("constant", "the output does not depend on them through autograd"),
])
def test_a_predictor_that_claims_gradients_it_does_not_give_is_one_line(how, got):
    reason = probe(Mean(how), TILES)
    assert reason == (f"the predictor 'mean' declares differentiable = True but its output has no "
                      f"gradient with respect to the tiles ({got}); set differentiable = False on "
                      f"its class (explainers then use gradient-free methods) or compute its "
                      f"output with torch operations on the input")


def test_an_editor_whose_decode_ignores_the_attributes_is_found():
    reason = probe(Blend(use_attributes=False), TILES, kind="editor", attributes=[0.2, 0.3])
    assert "the editor 'blend'" in reason and "with respect to the attributes" in reason
    assert "does not depend on them through autograd" in reason


def test_a_model_that_does_not_claim_gradients_is_not_probed():
    class Forest(Mean):
        differentiable = False

    assert probe(Forest("numpy"), TILES) is None


def test_grad_is_autograd_where_the_gradient_exists():
    x = TILES.clone().requires_grad_(True)
    (g,) = grad(Mean().forward(x).sum(), (x,), "forward")
    assert torch.allclose(g, torch.full_like(x, 3 / 16))


def test_grad_without_a_gradient_names_the_explainer_and_the_models():
    x = TILES.clone().requires_grad_(True)
    with pytest.raises(UserError) as info:
        grad(Mean("detach").forward(x).sum(), (x,), "backward", models=(Mean("detach"), Blend()))
    assert str(info.value).startswith("backward: no gradient came back: the predictor 'mean' or "
                                      "the editor 'blend' declares differentiable = True")
    y = torch.ones(2, requires_grad=True)
    with pytest.raises(UserError, match="^forward: no gradient came back: a model declares"):
        grad(Mean("constant").forward(x).sum(), (x, y), "forward")

"""mxplain.editing: batched encode and decode through an editor, without gradients, on the
editor's device; a latent may be a tensor or a tuple of tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxplain.editing import edit_batched, editor_device, encode_batched
from mxplain.interfaces import Editor, NoLearnedState


class ShiftEditor(NoLearnedState, Editor):
    """Latent: the tile itself (and its mean, when ``pair``); decode adds ``0.5 * a0 - 0.25 * a1``
    to every pixel. Counts its calls and batch sizes."""

    name = "shift"
    attributes = ("a0", "a1")

    def __init__(self, pair: bool = False):
        self.pair = pair

    def encode(self, tiles):
        self.calls_.append(("encode", len(tiles), torch.is_grad_enabled()))
        mean = tiles.mean(dim=(1, 2, 3))
        return (tiles.clone(), mean) if self.pair else tiles.clone()

    def decode(self, latent, attributes):
        self.calls_.append(("decode", len(attributes), torch.is_grad_enabled()))
        tiles = latent[0] if self.pair else latent
        shift = 0.5 * attributes[:, 0] - 0.25 * attributes[:, 1]
        return (tiles + shift.view(-1, 1, 1, 1)).clamp(0, 1)


def editor(pair=False) -> ShiftEditor:
    e = ShiftEditor(pair)
    e.calls_ = []
    return e


def tiles(n=5) -> torch.Tensor:
    return torch.linspace(0, 0.5, n * 16).reshape(n, 1, 4, 4).requires_grad_(True)


@pytest.mark.parametrize("pair", [False, True])
def test_encode_batched_concatenates_the_batches(pair):
    e, x = editor(pair), tiles()
    latent = encode_batched(e, x, batch=2)
    assert [c[:2] for c in e.calls_] == [("encode", 2), ("encode", 2), ("encode", 1)]
    assert not any(grad for *_, grad in e.calls_)
    if pair:
        assert isinstance(latent, tuple) and len(latent) == 2
        assert torch.equal(latent[0], x.detach()) and torch.allclose(latent[1], x.mean((1, 2, 3)))
    else:
        assert torch.equal(latent, x.detach()) and not latent.requires_grad


@pytest.mark.parametrize("pair", [False, True])
def test_edit_batched_decodes_each_row_with_its_attributes_to_uint8(pair):
    e, x = editor(pair), tiles()
    latent = encode_batched(e, x, batch=3)
    attrs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.2, 0.4], [1.0, 1.0]])
    out = edit_batched(e, latent, attrs, batch=2)
    assert out.dtype == np.uint8 and out.shape == (5, 4, 4)
    assert [c[:2] for c in e.calls_[2:]] == [("decode", 2), ("decode", 2), ("decode", 1)]
    base = x.detach().numpy()[:, 0]
    shift = np.array([0.0, 0.5, -0.25, 0.0, 0.25])[:, None, None]
    expected = np.rint(np.clip(base + shift, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(out, expected)
    assert out[1].min() == round(255 * (base[1].min() + 0.5))


def test_the_editors_device_is_the_declared_one():
    e = editor()
    assert editor_device(e) == torch.device("cpu")
    e.to("meta")
    assert editor_device(e) == torch.device("meta")

"""Gradients that a predictor or an editor claims (``differentiable = True``): checked, not trusted.

A model that declares gradients but computes its output outside torch (numpy, a random forest) or
detaches it gives torch's ``RuntimeError: element 0 of tensors does not require grad`` deep inside
an explainer. :func:`probe` finds that on one or two tiles as soon as the model exists (the
pipeline runs it before the explain stage, the conformance suite on every differentiable model);
:func:`grad` is ``torch.autograd.grad`` for explainers, with the same one-line refusal instead of
torch's error.
"""

from __future__ import annotations

import numpy as np
import torch

from mxplain.errors import UserError

FIX = ("set differentiable = False on its class (explainers then use gradient-free methods) or "
       "compute its output with torch operations on the input")


def _why(model, kind: str, wrt: str, got: str) -> str:
    name = getattr(model, "name", type(model).__name__)
    return (f"the {kind} {name!r} declares differentiable = True but its output has no gradient "
            f"with respect to the {wrt} ({got}); {FIX}")


def _check_output(out, model, kind: str, wrt: str, inputs: torch.Tensor) -> str | None:
    if not isinstance(out, torch.Tensor):
        return _why(model, kind, wrt, f"it returned a {type(out).__name__}, not a tensor")
    if not out.requires_grad:
        return _why(model, kind, wrt, "the output tensor does not require grad")
    (g,) = torch.autograd.grad(out.float().sum(), inputs, allow_unused=True)
    if g is None:
        return _why(model, kind, wrt, "the output does not depend on them through autograd")
    return None


def probe(model, tiles: torch.Tensor, kind: str = "predictor", attributes=None) -> str | None:
    """``None`` when ``model`` (a predictor, or an editor with ``kind="editor"``) gives gradients
    as it claims: the predictor's ``forward`` with respect to ``tiles``, the editor's ``decode``
    with respect to the attribute vector ``attributes`` (``(K,)`` in [0, 1], NaN read as 0.5).
    Otherwise the reason, in one line. Models that do not claim gradients pass."""
    if not getattr(model, "differentiable", False):
        return None
    device = getattr(model, "device", torch.device("cpu"))
    x = tiles[:2].to(device).float()
    with torch.enable_grad():
        if kind == "predictor":
            x = x.clone().requires_grad_(True)
            return _check_output(model.forward(x), model, kind, "tiles", x)
        a = np.nan_to_num(np.asarray(attributes, np.float32).reshape(1, -1), nan=0.5)
        a = torch.as_tensor(np.clip(a, 0, 1)).expand(len(x), -1).to(device).clone()
        a.requires_grad_(True)
        with torch.no_grad():
            latent = model.encode(x)
        return _check_output(model.decode(latent, a), model, kind, "attributes", a)


def grad(output: torch.Tensor, inputs, who: str, models=()) -> tuple[torch.Tensor, ...]:
    """``torch.autograd.grad(output, inputs)`` for explainer ``who``; where the output carries no
    gradient (a model among ``models`` claimed one it does not give) a :class:`UserError` naming
    them instead of torch's ``RuntimeError``."""
    names = " or ".join(f"the {m.kind} {m.name!r}" for m in models) or "a model"
    refusal = (f"{who}: no gradient came back: {names} declares differentiable = True but "
               f"returned an output without one; {FIX}")
    if not output.requires_grad:
        raise UserError(refusal)
    try:
        return torch.autograd.grad(output, inputs)
    except RuntimeError as exc:
        if "not have been used in the graph" in str(exc):
            raise UserError(refusal) from None
        raise

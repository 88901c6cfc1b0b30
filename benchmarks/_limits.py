"""Counting proxies on the models and the model-only limit arithmetic of ``explain_limits.py``.

:func:`instrument` wraps an editor's ``encode``/``decode`` and a predictor's ``forward`` on the
instance (the explainers are not touched; ``predict`` and ``edit`` reach the wrappers through
``self``), and a :class:`Counter` records, per phase of an explainer, operation and grad mode, the
calls, the rows and the seconds spent inside them. The phase is read from the call stack: the
innermost-priority function name of :data:`PHASES` found there (e.g. ``perturbation_curves`` of
compare, ``_probe`` of backward).

:func:`limits` turns the counts and the model-only per-row times (measured batched, in the same
run) into two model-only times per explainer:

* ``issue``: the limit as issue 20 defines it (forward: decoded rows x decode+predict; backward:
  rows x decode+predict+backward over every gradient iteration actually run, restarts included;
  compare: predictor rows of its deletion/insertion curves x predict; latent_design: latent-path
  rows x decode+predict+backward plus pixel-path rows x predict+backward, the gradient steps of
  both trajectories its ``design_prediction`` holds; gradcam: GradCAM and Integrated Gradients
  rows x predict forward+backward, both maps being its output);
* ``full``: every model call the explainer made, each at its batched per-row time (the probe, the
  accept tests, the encodes, Integrated Gradients, the pixel path, compare's attribute sweep).

The ratio ``limit / achieved`` is the share of the explainer's wall time the models would need if
they ran at their batched speed; ``1 - full / achieved`` is time spent outside the models.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import torch

#: function names that mark a phase, highest priority first (the first one on the stack wins)
PHASES = ("_restart_spread", "_probe", "_step", "optimize", "perturbation_curves",
          "_attribute_part", "default_layer", "gradcam", "ig", "latent_path", "pixel_path",
          "sweep", "_regenerate")

#: per-row time keys: (operation, grad) -> the model-only measurement that prices it
#: dp = decode + predict, dpb = decode + predict + backward, p = predict, pb = predict + backward
PRICE = {("encode", False): "enc", ("encode", True): "enc",
         ("decode", False): "dp-p", ("decode", True): "dpb-pb",
         ("forward", False): "p", ("forward", True): "pb"}

#: the issue's limit per explainer: (phase or None for every phase, operation, grad, price key)
ISSUE_LIMIT = {
    "forward": [("sweep", "decode", False, "dp")],
    "backward": [(None, "decode", True, "dpb")],
    "compare": [("perturbation_curves", "forward", False, "p")],
    "latent_design": [("latent_path", "decode", True, "dpb"), ("pixel_path", "forward", True, "pb")],
    "gradcam": [("gradcam", "forward", True, "pb"), ("ig", "forward", True, "pb")],
}


class Counter:
    """Calls, rows and seconds per ``(phase, op, grad)``; :meth:`reset` between explainers."""

    def __init__(self):
        self.active = False
        self.reset()

    def reset(self) -> None:
        self.calls: dict[tuple, int] = defaultdict(int)
        self.rows: dict[tuple, int] = defaultdict(int)
        self.seconds: dict[tuple, float] = defaultdict(float)
        self._depth = 0

    def add(self, phase: str, op: str, grad: bool, rows: int, sec: float) -> None:
        key = (phase, op, bool(grad))
        self.calls[key] += 1
        self.rows[key] += int(rows)
        self.seconds[key] += float(sec)

    def model_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def phase_of(frame) -> str:
    names = set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return next((p for p in PHASES if p in names), "other")


def _rows(op: str, args) -> int:
    """Rows of a call: the tiles of encode/forward, the attribute rows of decode."""
    if op == "decode":
        a = args[1]
        if a.ndim == 2:
            return int(a.shape[0])
        lat = args[0]
        return int((lat[0] if isinstance(lat, (tuple, list)) else lat).shape[0])
    return int(args[0].shape[0])


def instrument(editor, predictor, counter: Counter, sync=lambda: None,
               clock=time.perf_counter) -> None:
    """Wrap ``editor.encode``/``decode`` and ``predictor.forward`` on the instances; a call made
    inside another counted call (e.g. an editor calling its own encode) counts once. ``clock``:
    the seconds counted (``time.process_time`` on a shared CPU: this process's CPU time)."""
    targets = [(predictor, "forward")]
    if editor is not None:
        targets += [(editor, "encode"), (editor, "decode")]
    for obj, op in targets:
        orig = getattr(obj, op)

        def wrapped(*args, _orig=orig, _op=op, **kw):
            if counter._depth or not counter.active:
                return _orig(*args, **kw)
            counter._depth += 1
            t0 = clock()
            try:
                out = _orig(*args, **kw)
                sync()
            finally:
                counter._depth -= 1
            counter.add(phase_of(sys._getframe(1)), _op, torch.is_grad_enabled(),
                        _rows(_op, args), clock() - t0)
            return out

        setattr(obj, op, wrapped)


def needed(name: str, rows: dict[tuple, int]) -> set[str]:
    """The model-only measurements :func:`limits` needs for these counts."""
    keys = {price for *_, price in ISSUE_LIMIT[name]}
    keys |= {PRICE[(op, grad)] for (_, op, grad) in rows}
    return {part for k in keys for part in k.split("-")}


def per_row(price: str, rates: dict[str, float]) -> float:
    """Seconds per row of a price key; ``"a-b"`` is the difference of two measurements (the
    decoder's share of decode + predict), never below 0."""
    if "-" in price:
        a, b = price.split("-")
        return max(rates[a] - rates[b], 0.0)
    return rates[price]


def limits(name: str, rows: dict[tuple, int], rates: dict[str, float]) -> dict[str, float]:
    """Model-only seconds of explainer ``name``: ``issue`` (the issue's definition) and ``full``
    (every counted call). ``rows``: ``(phase, op, grad) -> rows``; ``rates``: seconds per row of
    ``enc``, ``dp``, ``dpb``, ``p``, ``pb``."""
    issue = 0.0
    for phase, op, grad, price in ISSUE_LIMIT[name]:
        n = sum(r for (ph, o, g), r in rows.items()
                if (phase is None or ph == phase) and o == op and g == grad)
        issue += n * per_row(price, rates)
    full = sum(r * per_row(PRICE[(op, grad)], rates) for (_, op, grad), r in rows.items())
    return {"issue": issue, "full": full}


def ratios(lim: dict[str, float], achieved: float) -> dict[str, float]:
    """``limit / achieved`` for each limit (1 = the explainer runs at the models' batched speed)."""
    return {k: (v / achieved if achieved > 0 else float("nan")) for k, v in lim.items()}

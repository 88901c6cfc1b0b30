"""Backward (counterfactual) explanations: seed 000, §4.3, eq. 2, Figures 6 and 7.

For each tile ``I`` with the lot's attributes ``A`` and a target property ``p``::

    min over A' in [0, 1]^K   lam * (p - R(G(I; A')))^2 + ||A - A'||_1          (eq. 2)

solved by proximal gradient (ISTA): a gradient step on the smooth term, the proximal step of the
L1 term (soft-thresholding of ``A' - A`` toward 0 by the step size) and projection onto [0, 1]
(for this separable problem, clipping the soft-thresholded point is the exact proximal operator of
``L1 + box``). The step size of every tile is chosen by backtracking (Beck & Teboulle's
sufficient-decrease test; halved on failure, grown 1.5x on success, starting at ``lr``), so the
objective never increases. The test is fused into the next gradient pass: one decode + predict +
backward at the candidate point gives the test its value and, when the step is accepted, the next
iteration its gradient. The main rows (from ``A``) and the restart rows of a chunk of
``batch_size / 2`` tiles run as one active set of at most ``batch_size`` rows, refilled as rows
stop, each tile encoded once. An attribute without effect on the prediction has zero gradient and
is never moved off ``A`` by the soft-threshold: the explanation is sparse.

Gradient-free path (``optimizer = "spsa"``, or ``"auto"`` with a predictor or editor that is not
differentiable): the gradient of ``R(G(I; A'))`` is estimated by SPSA with deterministic
Hadamard perturbations (at least ``spsa_samples`` simultaneous +-1 perturbations of size ``spsa_c``,
central differences, batched; see ``_spsa_grad``), and the same proximal step is taken, accepted
only when the full objective decreases.

Targets (``targets``: one number per direction, ``increase`` then ``decrease``), by
``target_mode``:

* ``"relative"`` (default): ``p = p0 + t * |p0|``, where ``p0 = R(G(I; A))`` is the prediction on
  the editor's *reconstruction* of the tile (so the counterfactual change is measured against what
  the editor+predictor pair predicts for the unedited attributes, not the raw tile);
* ``"absolute"``: ``p = t`` in property units;
* ``"reachable"`` (data-driven): ``p = p0 + |t| * (p_ext - p0)``, a share ``|t|`` in (0, 1] of the
  tile's *reachable range* in that direction: ``p_ext`` is the highest (increase) or lowest
  (decrease) prediction of the reachability probe below. Targets then never ask for more than the
  editor's attribute box [0, 1] allows for that tile.

Reachability probe (every mode, cheap): each tile is decoded and predicted at its own attributes
``A`` and at every one-attribute endpoint (attribute ``k`` at 0 and at 1, the others at ``A``: the
ends of the forward sweep), then at the two points where the model without interactions (``p0``
plus the sum of the one-attribute changes) is highest and lowest: each attribute at whichever of
``A_k``, 0 and 1 moved the prediction most up (down); an attribute that moves nothing stays at
``A_k``: ``1 + 2K + 2`` points a tile, for any ``K`` (``probe = "additive"``, the default since
issue 20). ``probe = "corners"`` takes the ``2^K`` corners of the box instead of the last two
(``K <= 6``; above, the additive points): the probe before issue 20, 25 points a tile at ``K = 4``.
On the quickstart's 16 lots the additive probe finds a lower top of the range than the corners on
about half of the tiles (the model has interactions) and so lower ``"reachable"`` targets;
docs/performance.md records by how much. Where the run already made them (``reads_optional``),
``p0`` is the pipeline's ``reconstruction_prediction`` and the endpoints are the forward sweep's
first and last steps (``forward_prediction`` at values 0 and 1), not predicted again: on a CPU the
same numbers, on CUDA forward's bf16-autocast predictions. The lowest and highest of these
predictions estimate the tile's reachable range (the additive probe's is exact for a model without
interactions); a target is *reachable* (``backward_reachable``) when it lies inside that range
widened by the tolerance ``tol * |p|`` (for ``"reachable"`` targets, also only when the target
lies farther than the tolerance from the start ``p0``: a share ``|t|`` of a range the attributes
barely move would be met by ``A' = A``; such a direction is unreachable, not trivially reached).
``summarize`` reports the reached share over reachable tile-directions only and counts the
unreachable ones (and any of them reached anyway: the probe's range is an estimate) separately.

A tile has *converged* when ``|R(G(I; A')) - p| <= tol * |p|``; it stops then, or when its step
vanishes (a stationary point), or after ``max_iter`` iterations.

Default ``lam`` (``None``): ``lam = 1 / (tol * |p|)^2`` per tile, i.e. the squared error is
measured in units of the tolerance. Missing the target by exactly the tolerance costs as much as
moving one attribute across its whole range, and at the optimum the remaining error is
``(tol |p|)^2 / (2 |dR/dA_k|)``, inside the tolerance whenever moving attribute ``k`` over its range
changes the prediction by more than ``tol/2`` of ``|p|``.

Continuation (``lam_steps``, default 3; 0 = eq. 2 with one ``lam``, verbatim): a tile that stops
short of its target before ``max_iter`` (at a stationary point of eq. 2 with its ``lam``, where the
attributes that could still move have slopes below that bound, or at a vanishing step size) goes on
from where it stopped with ``lam`` x 4, at most ``lam_steps`` times: the L1 price of each further
move falls against the miss. A tile that reached its target never enters it, so the continuation
changes no counterfactual that eq. 2 with the first ``lam`` found; it only turns missed targets
into reached ones (on the packaged quickstart, lot009's decrease targets that had ended 1-1.7 %
above their targets with 200 iterations).

Start from the probe (``probe_start``, default true): eq. 2 is not convex, and a search from ``A``
can end in a local minimum short of a target the probe showed reachable (on the quickstart: a
box corner whose neighbours all predict less, while the probe's additive extreme, elsewhere in
the box, predicts more than the target). Such a tile is solved again from the probe's point
past its target (the point where the probe met the prediction that made the target reachable);
where that search reaches the target, its ``A'`` is the answer (it comes from the far side, so
it need not be the smallest change that reaches the target, only one that does), and the
iterations count both searches. Rows that reached their target from ``A`` are never solved
again.

Reproducibility (``threads``, default 1): the whole lot (probe, optimisation, restarts) runs with a
fixed number of torch intra-op CPU threads, restored afterwards. torch's CPU kernels split some
float reductions by thread count (the backward pass of the decoder's transposed convolutions and of
the predictor's convolutions, for some batch sizes: 3 or 5 still-active rows, not 8 or 16), so a
tile's gradient changed in its last bits between ``mxplain run`` (two threads on a two-core machine)
and a Dask worker (one thread); the backtracking test and the stopping rule turned those bits into
different iterates (differences of up to 0.7 in A' on the quickstart). A lot's batches are the same
in both places, so with the same thread count every operation sees the same operands and the same
kernel: ``mxplain run --workers N`` writes the one-process cube bit for bit. (Kernels may still
depend on the batch size, e.g. a single-row convolution, so a tile's bits may change with
``batch_size``; its explanation does not beyond float noise.) SPSA perturbations are drawn per
iteration from ``(seed, lot, iteration)``, not from one stream consumed chunk after chunk.

Stability (``restarts``, ``restart_tiles``, ``restart_radius``): eq. 2 is not convex and its
solution need not be unique (two attributes with the same effect can trade places). For the first
``restart_tiles`` tiles of a lot the problem is solved again from ``restarts`` seeded perturbed
starts ``clip(A + U(-r, r)^K, 0, 1)``; ``backward_restart_spread`` is, per lot, direction and
attribute, the mean over those tiles of the range (max - min) of A' over all starts, and
``backward_tile_spread`` the standard deviation of A' over the lot's tiles. A spread comparable to
the change ``A' - A`` itself says the counterfactual is ill-posed for that lot; ``summarize``
reports both and the share of (lot, direction) pairs whose largest restart spread exceeds
``UNSTABLE_SPREAD``.

Uncertainty (``n_boot``, default 1000; 0 turns it off): per lot and direction, the mean change
``A' - A`` over the lot's *reachable, converged* tiles only (``backward_mean_change``; a tile that
missed its target is no counterfactual and enters no average, here or in ``summarize``, and nor
does one whose target lay within the tolerance of its start, met by ``A' = A``), its percentile 95 %
bootstrap interval over those tiles (``backward_change_ci``, resampled with replacement; numpy,
no model call; drawn from (run seed, lot index) alone) and the share of the lot's reachable tiles
that reached their target (``backward_reached_share``). The cube holds finite values only: a
direction where no tile of the lot converged is stored as 0 with a reached share of 0, and skipped.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable

from ._common import (
    BOUNDS,
    DIRECTIONS,
    boot_rng,
    check_n_boot,
    example_edits,
    fixed_threads,
    lot_attribute_vector,
    model_device,
    require_models,
)
from .backward_figures import draw_figures
from .backward_scores import (
    CI_LEVEL,
    UNSTABLE_SPREAD,
    change_bootstrap,
    change_uncertainty,
    reached_scores,
    restart_spread,
    score_backward,
    score_stability,
)
from .backward_solve import (
    PROBE_CORNERS_MAX_K,
    ProximalSolver,
    _iteration_seed,
    known_probe,
    probe_points,
)

OPTIMIZERS = ("auto", "gradient", "spsa")
TARGET_MODES = ("relative", "absolute", "reachable")
PROBES = ("additive", "corners")


class BackwardCounterfactual(ProximalSolver, Explainer):
    """Counterfactual attributes ``A'`` per tile and direction (eq. 2 of seed 000).

    Keys: ``targets``/``target_mode`` (``relative``, ``absolute`` or the data-driven
    ``reachable``), ``lam``, ``lam_steps``, ``lr``, ``max_iter``, ``tol``, ``batch_size``,
    ``optimizer``, ``spsa_c``, ``spsa_samples``, ``threads`` (torch CPU threads of the search,
    1: bit-identical on Dask workers), ``restarts``, ``restart_tiles`` and ``restart_radius``
    (the stability check), ``probe`` (``additive`` or the ``corners`` of the box),
    ``probe_start``; see the module docstring."""

    name: ClassVar[str] = "backward"
    test_params: ClassVar[dict] = {"max_iter": 10}
    requires_editor: ClassVar[bool] = True
    #: the probe's start and one-attribute endpoints where the run already predicted them
    reads_optional: ClassVar[tuple[str, ...]] = ("reconstruction_prediction", "forward_prediction")

    @classmethod
    def requirements(cls, params: dict) -> frozenset[str]:
        """A predictor and an editor of the data's named attributes; ``optimizer = "gradient"``
        also needs both differentiable (``"auto"`` falls back to SPSA where they are not)."""
        needs = {"predictor", "editor", "attributes"}
        if params.get("optimizer") == "gradient":
            needs |= {"gradients", "editor_gradients"}
        return frozenset(needs)

    @classmethod
    def uses(cls, params: dict) -> frozenset[str]:
        """``"auto"`` uses the gradients of both models where they declare them."""
        extra = {"gradients", "editor_gradients"} if params.get("optimizer") != "spsa" else set()
        return cls.requirements(params) | extra

    def __init__(self, targets: tuple = (0.10, -0.10), target_mode: str = "relative",
                 lam: float | None = None, lr: float = 0.05, max_iter: int = 200,
                 tol: float = 0.01, batch_size: int = 128, optimizer: str = "auto",
                 spsa_c: float = 0.05, spsa_samples: int = 4, threads: int = 1,
                 restarts: int = 2, restart_tiles: int = 2, restart_radius: float = 0.25,
                 n_boot: int = 1000, probe: str = "additive", lam_steps: int = 3,
                 probe_start: bool = True):
        self.targets = targets
        self.target_mode = target_mode
        self.lam = lam
        self.lr = lr
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.spsa_c = spsa_c
        self.spsa_samples = spsa_samples
        self.threads = threads
        self.restarts = restarts
        self.restart_tiles = restart_tiles
        self.restart_radius = restart_radius
        self.n_boot = n_boot
        self.probe = probe
        self.lam_steps = lam_steps
        self.probe_start = probe_start
        self._check()

    # -- configuration ------------------------------------------------------------------------
    def _check(self) -> None:
        where = "[explain.backward]"
        t = self.targets
        if not isinstance(t, (list, tuple)) or len(t) != len(DIRECTIONS) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                for v in t):
            raise UserError(f"{where} targets = {t!r}; needs two finite numbers "
                            "(increase, decrease)")
        if self.target_mode not in TARGET_MODES:
            raise UserError(f"{where} target_mode = {self.target_mode!r}; use one of "
                            f"{', '.join(TARGET_MODES)}")
        if self.target_mode == "reachable" and not (0 < t[0] <= 1 and -1 <= t[1] < 0):
            raise UserError(f"{where} targets = {list(t)!r} with target_mode = 'reachable'; "
                            "needs shares of the reachable range: increase in (0, 1], decrease "
                            "in [-1, 0) (e.g. [0.5, -0.5])")
        if self.probe not in PROBES:
            raise UserError(f"{where} probe = {self.probe!r}; use one of {', '.join(PROBES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"{where} optimizer = {self.optimizer!r}; use one of "
                            f"{', '.join(OPTIMIZERS)}")
        for key in ("lr", "tol", "spsa_c", "restart_radius"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or \
                    not np.isfinite(v):
                raise UserError(f"{where} {key} = {v!r}; needs a positive number")
        if self.spsa_c >= 0.5:
            raise UserError(f"{where} spsa_c = {self.spsa_c!r}; needs a number below 0.5")
        if self.restart_radius > 1:
            raise UserError(f"{where} restart_radius = {self.restart_radius!r}; needs a number "
                            "in (0, 1]")
        lam = self.lam
        if lam is not None and (isinstance(lam, bool) or not isinstance(lam, (int, float))
                                or not lam > 0 or not np.isfinite(lam)):
            raise UserError(f"{where} lam = {lam!r}; needs a positive number or none")
        for key, low in (("max_iter", 1), ("batch_size", 1), ("spsa_samples", 1),
                         ("threads", 1), ("restarts", 0), ("restart_tiles", 0),
                         ("lam_steps", 0)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UserError(f"{where} {key} = {v!r}; needs an integer >= {low}")
        if not isinstance(self.probe_start, bool):
            raise UserError(f"{where} probe_start = {self.probe_start!r}; needs true or false")
        check_n_boot(self.n_boot, self.name)

    def resolve_method(self, ctx: ExplainContext) -> str:
        """"gradient" or "spsa" for this context's predictor and editor."""
        self._check()
        predictor, editor = require_models(ctx, self.name)
        diff = bool(predictor.differentiable) and bool(editor.differentiable)
        if self.optimizer == "auto":
            return "gradient" if diff else "spsa"
        if self.optimizer == "gradient" and not diff:
            raise UserError("[explain.backward] optimizer = 'gradient' but the predictor or the "
                            "editor is not differentiable; use 'spsa' or 'auto'")
        return self.optimizer

    @classmethod
    def check_params(cls, params: dict) -> None:
        cls(**params)  # the constructor checks (before anything trains)

    def _restarting(self) -> bool:
        return self.restarts > 0 and self.restart_tiles > 0

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        self._check()
        p = ctx.property_units
        dirs, attrs = ("lot", "tile", "direction"), ("lot", "direction", "attribute")
        out = {
            "backward_attributes": Variable(dirs + ("attribute",), "float32", units="1",
                                            description="counterfactual attributes A'"),
            "backward_prediction": Variable(dirs, "float32", units=p,
                                            description="predictor on G(I; A')"),
            "backward_target": Variable(dirs, "float32", units=p,
                                        description="the target property"),
            "backward_converged": Variable(dirs, "bool", False,
                                           description="target reached within tolerance"),
            "backward_iterations": Variable(dirs, "int32", 0, units="1"),
            "backward_reachable": Variable(dirs, "bool", False,
                                           description="target in the tile's reachable range"),
            "backward_reachable_prediction": Variable(dirs, "float32", units=p),
            "backward_tile_spread": Variable(attrs, "float32", units="1",
                                             description="std of A' over the lot's tiles"),
        }
        if self._restarting():
            out["backward_restart_spread"] = Variable(attrs, "float32", units="1")
        out["backward_reached_share"] = Variable(
            ("lot", "direction"), "float32", units="1",
            description="share of the lot's reachable tiles whose counterfactual reached its "
                        "target")
        out["backward_mean_change"] = Variable(
            attrs, "float32", units="1",
            description="mean A' - A over the lot's reachable tiles that reached their target (0 "
                        "where none did)")
        if self.n_boot:
            out["backward_change_ci"] = Variable(
                attrs + ("bound",), "float32", units="1",
                description="percentile 95 % bootstrap interval of backward_mean_change")
        out["backward_example_edit"] = Variable(
            ("lot", "direction", "y", "x"), "uint8", 0,
            description="the lot's example_tile (its first tile) decoded at that tile's "
                        "counterfactual attributes A' (uint8 grey levels; figure 6)")
        return out

    def extra_dims(self) -> dict[str, Any]:
        return {"bound": list(BOUNDS)} if self.n_boot else {}

    # -- one lot -------------------------------------------------------------------------------
    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        method = self.resolve_method(ctx)
        self.method_ = method
        predictor, editor = require_models(ctx, self.name)
        dev = model_device(editor, ctx.device)
        k = len(ctx.attributes) if ctx.attributes else len(np.atleast_1d(lot.attributes))
        a_np = lot_attribute_vector(lot, k, self.name)
        a = torch.as_tensor(a_np, dtype=torch.float32, device=dev)
        n, nd = len(lot.tiles), len(DIRECTIONS)
        out = {"backward_attributes": np.zeros((n, nd, k), np.float32),
               "backward_prediction": np.zeros((n, nd), np.float32),
               "backward_target": np.zeros((n, nd), np.float32),
               "backward_converged": np.zeros((n, nd), bool),
               "backward_iterations": np.zeros((n, nd), np.int32),
               "backward_reachable": np.zeros((n, nd), bool),
               "backward_reachable_prediction": np.zeros((n, nd), np.float32)}
        seed = int(ctx.seed) * 1_000_003 + int(lot.index)
        chunk = max(1, int(self.batch_size) // nd)
        starts = self._restart_starts(a, seed, n)
        known = torch.as_tensor(known_probe(lot, a_np, ctx), device=dev)
        restarts = []
        with fixed_threads(self.threads):
            for t0 in tqdm(range(0, n, chunk), desc=f"backward lot {lot.lot_id}",
                           disable=not ctx.progress, leave=False):
                restarts.append(self._solve_chunk(
                    editor, predictor, lot.tiles[t0 : t0 + chunk].to(dev), a, method, seed,
                    slice(t0, t0 + chunk), out, starts, known[t0 : t0 + chunk]))
            x = out["backward_attributes"]
            out["backward_tile_spread"] = (x.std(axis=0) if n else np.zeros((nd, k))).astype(
                np.float32)
            if self._restarting():
                out["backward_restart_spread"] = restart_spread(
                    x, np.concatenate(restarts), nd, k).astype(np.float32)
            out["backward_example_edit"] = (
                example_edits(editor, lot.tiles[0], out["backward_attributes"][0], dev, None)
                if n else np.zeros((nd, *lot.tiles.shape[-2:]), np.uint8))
        lot_stats = change_bootstrap(out["backward_attributes"] - a_np[None, None],
                                     out["backward_converged"], int(self.n_boot),
                                     boot_rng(ctx.seed, lot.index, 1), out["backward_reachable"])
        # the cube holds finite values only: a direction where no tile converged is stored as 0
        # and marked by backward_reached_share = 0 (summarize and the figures skip it)
        out.update({key: np.nan_to_num(v) for key, v in lot_stats.items()})
        return out

    def _restart_starts(self, a: torch.Tensor, seed: int, n: int) -> torch.Tensor:
        """The perturbed starts ``clip(A + U(-r, r)^K, 0, 1)`` of the first ``restart_tiles``
        tiles, ``(tiles, restarts, D, K)`` (one draw per lot of a fixed shape; none without
        restarts)."""
        nt, r, nd, k = min(n, int(self.restart_tiles)), int(self.restarts), len(DIRECTIONS), len(a)
        if not self._restarting():
            return a.new_zeros((0, r, nd, k))
        rng = np.random.default_rng([int(seed) % 2**63, 1])
        u = rng.uniform(-1.0, 1.0, (int(self.restart_tiles), r, nd, k))[:nt]
        return torch.as_tensor(np.clip(a.cpu().numpy() + self.restart_radius * u, 0, 1),
                               dtype=torch.float32, device=a.device)

    # -- after all lots ------------------------------------------------------------------------
    def report_section(self, run):
        """Titled after Liu et al. 2020's eq. 2 through the run's editor: the summary's headline
        numbers and the ``backward_*`` figures."""
        from mxplain.report_sections import default_section

        return default_section(run, f"Backward counterfactuals{run.via_editor} (after Liu et al. "
                                    f"2020, eq. 2)", ("backward_",))

    def summarize(self, cube, ctx: ExplainContext) -> dict:
        attrs = [str(a) for a in (cube["attribute"].values if "attribute" in cube.coords
                                  else ctx.attributes)]
        try:
            method = self.resolve_method(ctx)
        except UserError:
            method = "unknown"
        metrics: dict[str, Any] = {"method": method, "target_mode": self.target_mode,
                                   "targets": [float(v) for v in self.targets],
                                   "threads": int(self.threads)}
        metrics.update(score_backward(cube, attrs, self.targets, self.target_mode))
        if metrics.get("tiles", 0):
            try:
                metrics["figures"] = draw_figures(cube, ctx, attrs)
            except Exception as exc:  # a figure must not lose the run's numbers
                warnings.warn(f"backward figures failed: {type(exc).__name__}: {exc}",
                              stacklevel=2)
        return metrics

__all__ = ["BackwardCounterfactual", "CI_LEVEL", "PROBE_CORNERS_MAX_K", "UNSTABLE_SPREAD",
           "_iteration_seed", "change_bootstrap", "change_uncertainty", "probe_points",
           "reached_scores", "score_backward", "score_stability"]

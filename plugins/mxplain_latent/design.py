"""``latent_design``: gradient-based design in the generative model's latent space versus in pixel
space (seed 001 §4, Cang et al.), and the interpretability score of §4.1.

For each of the first ``max_tiles`` tiles of a lot, two trajectories of ``steps`` gradient-ascent
steps raise the predicted property:

* ``latent``: ``z_0 = editor.encode(tile)`` (a tensor, or a tuple of tensors for AttGAN's encoder
  features); each step moves the latent along the normalised gradient of ``predictor(decode(z))``:
  ``z <- z + lr_latent * ||z_0|| * g / ||g||`` (norms per tile over all latent tensors; the batch
  mean of ``||z_0||``), and the image of a step is ``decode(z)``. ``decode`` is
  ``editor.generate(z)`` where the editor declares it (``"generate"`` in
  :meth:`mxplain.interfaces.Editor.capabilities`; TextureVAE: the latent as it is, without the
  attribute probe's shift), else ``editor.decode(z, lot attributes)``.
* ``pixel``: gradient ascent on the tile's pixels, clipped to [0, 1].

Matching the two paths (``lr_pixel``): with ``lr_pixel = None`` (default) each pixel step is a step
along the normalised pixel gradient whose first-order gain ``eta * ||grad||`` equals
``1 / steps`` of that tile's total rise along the latent path (``eta = rise / steps / ||grad||``;
a tile whose latent path did not rise uses the median positive rise of the batch), so both paths
are asked for the same rise of the prediction; the achieved rises are stored and reported. A
number is a fixed RMS per-pixel change per step instead (``eta = lr_pixel * sqrt(H * W)``).

Each step's image is measured by the dataset's independent measurement (``ctx.measure``,
:meth:`mxplain.interfaces.Dataset.measure`; synthetic lots: image analysis alone, without the
generator's parameters), in a background thread while the next steps are computed
(:class:`mxplain_latent.design_measure.StepMeasurer`: the same values as one call at the end). A
dataset without one, or without true effects, gets no interpretability scores; ``skipped`` in the
metrics says why. Interpretability (§4.1: the similarity between a
model's trait and the physics' trait): the trait here is ``d(measured attribute) / d(property)``
along the path. Measurements are put on the attribute scale by a linear calibration against the
lot labels: the classical calibration line ``measurement = alpha * attribute + beta`` fitted on
the original tiles, inverted (``delta a = delta m / alpha``; :func:`calibration_slopes`; an
attribute whose measurement is not demonstrably related to its label, t < 2, is left out of the
scores). The ground truth
``ctx.true_sensitivity`` ``s`` (property per unit attribute) says that the steepest way to raise
the property moves the attributes along ``s``, i.e. ``da/dp = s / ||s||^2``. Scores per path:

* ``interpretability``: the similarity, in sign *and* size, of the mean trait vector ``t`` to the
  law's trait ``t* = s / ||s||^2``: ``direction_cosine * min(r, 1 / r)`` with ``direction_cosine``
  = cos(t, s) and ``magnitude_ratio`` r = ``||t|| / ||t*||``. 1 = the path changes the attributes
  exactly as the law does per unit of property; -1 = the law's change reversed; near 0 for a path
  whose attribute changes are unrelated to the law *or* far too small for the predicted rise (for
  r <= 1 the score is ``s . t``, the share of the rise the measured changes account for under the
  law) - the adversarial case of seed 001, a rise bought with changes the physics does not pay for.
  The direction-only cosine cannot see that case; it is reported as ``direction_cosine``;
* ``sign_agreement``: fraction of (tile, attribute) traits with the sign of ``s`` (weights ``|s|``;
  attributes of negligible true effect left out, :mod:`mxplain.truth`);
* ``explained_fraction``: median over tiles of ``sum_a s_a * delta a_a / delta prediction``: how
  much of the predicted rise the measured attribute changes account for under the true law
  (1 = all of it, 0 = none, as for an adversarial perturbation).

Design judged by physics (issue 21 item 3): where the run's dataset has a simulator
(``ctx.simulator``, :meth:`mxplain.interfaces.Dataset.simulator`; synthetic lots: the pore space's
effective diffusivity), every step's image of both paths is simulated (``design_simulated``, the
image quantised to ``uint8`` as a stored tile), and :func:`simulated_rise` reports per path the
true property's mean rise over tiles with a 95 % percentile bootstrap interval, the share of tiles
whose true property rose and the true-to-predicted rise ratio, plus the paired latent-minus-pixel
difference (metrics ``simulated``; figure ``latent_design_simulated.png``). So "the latent path
raises the real property, the pixel path only the prediction" is measured, not argued.
``simulate = false`` switches it off (about 20 ms per 64 px image: 0.45 s per tile at 10 steps).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.figures import save_figure
from mxplain.gradients import grad
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable
from mxplain_latent.design_measure import StepMeasurer, step_values, u8
from mxplain_latent.design_scores import (  # noqa: F401 (re-exported: the scores' API)
    PATHS,
    calibration_slopes,
    interpretability_scores,
    simulated_figure,
    simulated_rise,
    trait_figure,
)


def _device(model, fallback) -> torch.device:
    dev = getattr(model, "device", None)
    return torch.device(dev) if dev is not None else torch.device(fallback)


def _as_list(latent) -> tuple[list[torch.Tensor], bool]:
    if isinstance(latent, (tuple, list)):
        return list(latent), True
    return [latent], False


def _per_tile_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum(t.detach().flatten(1).pow(2).sum(1) for t in tensors))


class LatentDesign(Explainer):
    """Gradient ascent of the prediction in the editor's latent space vs. in pixel space."""

    name: ClassVar[str] = "latent_design"
    requires_editor: ClassVar[bool] = True
    requires_gradients: ClassVar[bool] = True

    @classmethod
    def requirements(cls, params: dict) -> frozenset[str]:
        """Gradient ascent through the editor's latent space and on the pixels: a differentiable
        predictor and a differentiable editor of the data's named attributes."""
        return frozenset({"predictor", "editor", "gradients", "editor_gradients", "attributes"})
    test_params: ClassVar[dict] = {"steps": 3, "max_tiles": 2, "figure_lots": 0}

    def __init__(self, steps: int = 10, lr_latent: float = 0.05, lr_pixel: float | None = None,
                 max_tiles: int = 8, measure: bool = True, figure_lots: int = 2,
                 simulate: bool = True):
        self.steps = steps
        self.lr_latent = lr_latent
        self.lr_pixel = lr_pixel
        self.max_tiles = max_tiles
        self.measure = measure
        self.figure_lots = figure_lots
        self.simulate = simulate
        self._check()

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Every ``[explain.latent_design]`` value, when the config is resolved."""
        cls(**{**cls.param_defaults(), **params})  # the constructor checks (_check)

    def _check(self) -> None:
        def bad(key, why):
            raise UserError(f"[explain.latent_design] {key} = {getattr(self, key)!r}: {why}")

        for key in ("steps", "max_tiles"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(key, "must be a positive integer")
        if not isinstance(self.figure_lots, int) or self.figure_lots < 0:
            bad("figure_lots", "must be an integer >= 0")
        if not isinstance(self.simulate, bool):
            bad("simulate", "must be true or false")
        if not isinstance(self.lr_latent, (int, float)) or not self.lr_latent > 0:
            bad("lr_latent", "must be a number > 0")
        if self.lr_pixel is not None and (not isinstance(self.lr_pixel, (int, float))
                                          or not self.lr_pixel > 0):
            bad("lr_pixel", "must be a number > 0 or omitted (matched to the latent path)")

    # ---- cube layout --------------------------------------------------------------------------
    def extra_dims(self) -> dict[str, Any]:
        return {"design_step": np.arange(self.steps + 1), "path": np.array(PATHS)}

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        return {
            "design_done": Variable(("lot", "tile"), "bool", False),
            "design_prediction": Variable(("lot", "tile", "path", "design_step")),
            "design_pixel_change": Variable(("lot", "tile", "path", "design_step")),
            "design_latent_distance": Variable(("lot", "tile", "design_step")),
            "design_measured": Variable(("lot", "tile", "path", "design_step", "attribute")),
            "design_measured_valid": Variable(("lot", "tile", "path", "design_step", "attribute"),
                                              "bool", False),
            **({"design_simulated": Variable(("lot", "tile", "path", "design_step"))}
               if self._simulator(ctx) is not None else {}),
        }

    # ---- one lot ------------------------------------------------------------------------------
    def _simulator(self, ctx: ExplainContext):
        """The dataset's simulator when ``simulate`` is on (``None``: none, or switched off)."""
        return ctx.simulator if self.simulate else None

    def _decode_fn(self, editor, attrs: torch.Tensor):
        if "generate" in type(editor).capabilities(editor.get_params()):
            return editor.generate
        return lambda lat: editor.decode(lat, attrs)

    def latent_path(self, editor, predictor, x: torch.Tensor, attrs: torch.Tensor, sink=None):
        """Latent trajectory: predictions ``(n, S+1)``, images ``[(n,1,H,W)] * (S+1)``, relative
        latent distances ``(n, S+1)``; ``sink(images)`` gets each step's images as they are
        made."""
        dev = _device(editor, x.device)
        pdev = _device(predictor, dev)
        decode = self._decode_fn(editor, attrs.to(dev))
        with torch.no_grad():
            z0, is_tuple = _as_list(editor.encode(x.to(dev)))
        z0 = [t.detach().float() for t in z0]
        scale = float(_per_tile_norm(z0).mean()) or 1.0
        z = [t.clone() for t in z0]
        preds, imgs, dist = [], [], []
        for s in range(self.steps + 1):
            zg = [t.clone().requires_grad_(True) for t in z]
            img = decode(tuple(zg) if is_tuple else zg[0])
            p = predictor.forward(img.to(pdev)).float()
            preds.append(p.detach().cpu())
            imgs.append(img.detach().float().cpu())
            if sink is not None:
                sink(imgs[-1])
            dist.append((_per_tile_norm([a - b for a, b in zip(z, z0)])
                         / _per_tile_norm(z0).clamp_min(1e-12)).cpu())
            if s == self.steps:
                break
            # parts of a latent that decode ignores (e.g. AttGAN encoder features without a
            # shortcut) get a zero gradient
            grads = torch.autograd.grad(p.sum(), zg, allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(zg, grads)]
            gn = _per_tile_norm(list(grads)).clamp_min(1e-12)
            z = [t + self.lr_latent * scale * g / gn.view(-1, *[1] * (g.ndim - 1))
                 for t, g in zip(z, grads)]
        return torch.stack(preds, 1), imgs, torch.stack(dist, 1)

    def pixel_path(self, predictor, x: torch.Tensor, rise: torch.Tensor | None, sink=None):
        """Pixel trajectory: predictions ``(n, S+1)`` and images; ``rise`` (n,) = the latent path's
        total rise per tile (used when ``lr_pixel`` is None); ``sink`` as in :meth:`latent_path`."""
        dev = _device(predictor, x.device)
        xs = x.to(dev).float().clone()
        n, hw = len(xs), xs.shape[-1] * xs.shape[-2]
        if self.lr_pixel is None:
            r = rise.clone().float()
            pos = r[r > 0]
            fallback = float(pos.median()) if len(pos) else 0.0
            r = torch.where(r > 0, r, torch.full_like(r, fallback))
            per_step = (r / self.steps).to(dev)
        preds, imgs = [], []
        for s in range(self.steps + 1):
            xg = xs.clone().requires_grad_(True)
            p = predictor.forward(xg).float()
            preds.append(p.detach().cpu())
            imgs.append(xs.detach().cpu())
            if sink is not None:
                sink(imgs[-1])
            if s == self.steps:
                break
            (g,) = grad(p.sum(), xg, "[explain.latent_design]", (predictor,))
            gn = g.flatten(1).norm(dim=1).clamp_min(1e-12)
            if self.lr_pixel is None:
                eta = per_step / gn
            else:
                eta = torch.full((n,), float(self.lr_pixel) * math.sqrt(hw), device=dev)
            xs = (xs + eta.view(-1, 1, 1, 1) * g / gn.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
        return torch.stack(preds, 1), imgs

    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        editor, predictor = ctx.editor, ctx.predictor
        if editor is None or predictor is None:
            raise UserError("[explain.latent_design] needs an [editor] and a differentiable "
                            "[predictor]")
        n_all = len(lot.tiles)
        n = min(n_all, self.max_tiles)
        S = self.steps + 1
        attrs_names = tuple(ctx.attributes) or tuple(editor.attributes)
        K = len(attrs_names)
        out = {
            "design_done": np.zeros(n_all, bool),
            "design_prediction": np.zeros((n_all, 2, S), np.float32),
            "design_pixel_change": np.zeros((n_all, 2, S), np.float32),
            "design_latent_distance": np.zeros((n_all, S), np.float32),
            "design_measured": np.zeros((n_all, 2, S, K), np.float32),
            "design_measured_valid": np.zeros((n_all, 2, S, K), bool),
        }
        simulator = self._simulator(ctx)
        if simulator is not None:
            out["design_simulated"] = np.zeros((n_all, 2, S), np.float32)
        if n == 0:
            return out
        x = lot.tiles[:n].float()
        a = torch.as_tensor(np.repeat(np.asarray(lot.attributes, np.float32)[None], n, 0))
        measure = ctx.measure if self.measure and K else None  # columns: ctx.attributes' order
        # the step images are measured in a background thread while the paths are computed
        with warnings.catch_warnings(), StepMeasurer(measure) as meter:
            warnings.simplefilter("ignore", RuntimeWarning)
            with torch.enable_grad():
                lp, limgs, ldist = self.latent_path(editor, predictor, x, a, sink=meter.add)
                pp, pimgs = self.pixel_path(predictor, x, lp[:, -1] - lp[:, 0], sink=meter.add)
            m = meter.result()
        out["design_done"][:n] = True
        out["design_prediction"][:n, 0] = lp.numpy()
        out["design_prediction"][:n, 1] = pp.numpy()
        out["design_latent_distance"][:n] = ldist.numpy()
        for j, imgs in enumerate((limgs, pimgs)):
            base = imgs[0]
            for s, im in enumerate(imgs):
                out["design_pixel_change"][:n, j, s] = \
                    (im - base).pow(2).flatten(1).mean(1).sqrt().numpy()
        if simulator is not None:  # the true property of every designed tile, by physics
            sim = simulator.simulate(u8(torch.cat([torch.cat(limgs), torch.cat(pimgs)])))
            out["design_simulated"][:n] = np.transpose(
                np.asarray(sim, np.float64).reshape(2, S, n), (2, 0, 1))
        if m is not None:
            out["design_measured"][:n], out["design_measured_valid"][:n] = step_values(m, n, S, K)
        if ctx.figures_dir is not None and lot.index < self.figure_lots:
            try:
                self._figure(ctx, lot, limgs, pimgs, lp, pp)
            except Exception as exc:  # a figure must not lose the numbers
                warnings.warn(f"latent_design figure failed: {type(exc).__name__}: {exc}",
                              stacklevel=2)
        return out

    def _figure(self, ctx, lot, limgs, pimgs, lp, pp) -> str:
        """Seed 001 Figure 5: latent path (morphing) vs. pixel path (perturbation) for tile 0."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = sorted(set(np.linspace(0, self.steps, min(6, self.steps + 1)).round().astype(int)))
        lim = max(float((pimgs[-1] - pimgs[0])[0].abs().max()), 1e-3)
        fig, axes = plt.subplots(3, len(cols), figsize=(1.5 * len(cols) + 0.6, 5.0), squeeze=False)
        for j, s in enumerate(cols):
            rows = [(limgs[s][0, 0].numpy(), f"{lp[0, s]:.4g}", "gray", (0, 1)),
                    (pimgs[s][0, 0].numpy(), f"{pp[0, s]:.4g}", "gray", (0, 1)),
                    ((pimgs[s] - pimgs[0])[0, 0].numpy(), "", "RdBu_r", (-lim, lim))]
            for i, (img, title, cmap, (lo, hi)) in enumerate(rows):
                ax = axes[i, j]
                ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"step {s}: {title}" if title else f"step {s}", fontsize=7)
        axes[0, 0].set_ylabel("latent path", fontsize=8)
        axes[1, 0].set_ylabel("pixel path", fontsize=8)
        axes[2, 0].set_ylabel(f"pixel change (+-{lim:.3f})", fontsize=8)
        fig.suptitle(f"Gradient ascent of {ctx.property_name} ({lot.lot_id}, tile 0)",
                     fontsize=9)
        return str(save_figure(fig, ctx.figures_dir / f"latent_design_{lot.lot_id}.png", dpi=110))

    # ---- summary ------------------------------------------------------------------------------
    def report_section(self, run):
        """Titled by the editor whose latent space it walks (TextureVAE: after Sardeshmukh et al.
        2021 too): the summary's headline numbers, the ``latent_*`` and ``texturevae_*``
        figures."""
        from mxplain.report_sections import default_section

        editor = run.components.get("editor") or ""
        title = ("TextureVAE and latent design (after Sardeshmukh et al. 2021, Cang et al. 2018)"
                 if editor == "texturevae" else f"Latent design in the {editor or 'editor'} "
                 f"latent space (after Cang et al. 2018)")
        return default_section(run, title, ("texturevae_", "latent_"))

    def summarize(self, cube, ctx: ExplainContext) -> dict:
        done = np.asarray(cube["design_done"].values, bool)
        if "tile_mask" in cube:
            done &= np.asarray(cube["tile_mask"].values, bool)
        pred = np.asarray(cube["design_prediction"].values, np.float64)[done]  # (T, 2, S)
        pix = np.asarray(cube["design_pixel_change"].values, np.float64)[done]
        attrs = [str(a) for a in cube["attribute"].values]
        out: dict[str, Any] = {"tiles": int(done.sum()), "steps": int(self.steps)}
        for j, path in enumerate(PATHS):
            rise = pred[:, j, -1] - pred[:, j, 0]
            out[path] = {"prediction_rise_mean": float(np.mean(rise)) if len(rise) else None,
                         "pixel_change_rms_mean": float(np.mean(pix[:, j, -1])) if len(rise)
                         else None}
        if "design_latent_distance" in cube and done.any():
            d = np.asarray(cube["design_latent_distance"].values, np.float64)[done]
            out["latent"]["latent_distance_mean"] = float(d[:, -1].mean())
        figures = []
        if "design_simulated" in cube and done.any():
            sim = np.asarray(cube["design_simulated"].values, np.float64)[done]  # (T, 2, S)
            # the prediction is of the simulated property only where the data's labels are it
            same = (ctx.simulator is not None
                    and ctx.property_name == ctx.simulator.property_name)
            out["simulated"] = simulated_rise(sim, pred, seed=int(ctx.seed),
                                              compare_prediction=same)
            out["simulated"]["property"] = _simulated_name(ctx)
            if ctx.figures_dir is not None:
                try:
                    figures.append(simulated_figure(sim, out["simulated"], ctx.figures_dir))
                except Exception as exc:  # a figure must not lose the numbers
                    warnings.warn(f"latent_design simulated figure failed: {exc}", stacklevel=2)
            if figures:
                out["figures"] = list(figures)
        truth = ctx.true_sensitivity
        if truth is None and "true_sensitivity" in cube:
            ts = np.asarray(cube["true_sensitivity"].values, np.float64)
            truth = {a: float(ts[0, k]) for k, a in enumerate(attrs)} if len(ts) else None
        ok = (np.asarray(cube["design_measured_valid"].values, bool)[done]
              if "design_measured_valid" in cube else np.zeros(0, bool))
        out["skipped"] = _skipped(done, truth, ok, self.measure)
        if out["skipped"]:
            return out
        lot_of = np.nonzero(done)[0]
        labels = np.asarray(cube["lot_attributes"].values, np.float64)[lot_of]  # (T, K)
        meas = np.asarray(cube["design_measured"].values, np.float64)[done]  # (T, 2, S, K)
        s = np.array([float(truth.get(a, np.nan)) for a in attrs])
        scores = interpretability_scores(pred, meas, ok, labels, s)
        for path in PATHS:
            out[path].update(scores[path])
        out["calibration"] = scores["calibration"]
        # the law's direction over the attributes the scores use (None: left out, see calibration)
        used = np.asarray(scores["calibration"]["scored"], bool)
        su = np.where(used, s, np.nan)
        norm = max(float(np.linalg.norm(np.nan_to_num(su))), 1e-12)
        out["true_trait_direction"] = {a: (float(v) if np.isfinite(v) else None)
                                       for a, v in zip(attrs, su / norm)}
        out["true_trait"] = {a: (float(v) if np.isfinite(v) else None)
                             for a, v in zip(attrs, su / norm**2)}
        li, pi = out["latent"].get("interpretability"), out["pixel"].get("interpretability")
        if li is not None and pi is not None:
            out["latent_beats_pixel"] = bool(li > pi)
        if ctx.figures_dir is not None:
            try:
                out["figures"] = [*figures, trait_figure(out, attrs, ctx.figures_dir)]
            except Exception as exc:
                warnings.warn(f"latent_design summary figure failed: {exc}", stacklevel=2)
        return out


def _skipped(done: np.ndarray, truth, ok: np.ndarray, measure: bool) -> list[str]:
    """Why the interpretability scores cannot be computed (empty: they can)."""
    why = []
    if not done.any():
        why.append("interpretability: no tile was designed")
    if truth is None:
        why.append("interpretability: the dataset knows no true effects (true_sensitivity)")
    if not ok.any():
        why.append("interpretability: no measurement of the designed images ("
                   + ("[explain.latent_design] measure = false" if not measure else
                      "the dataset has no attribute measurement, Dataset.measure") + ")")
    return why


def _simulated_name(ctx) -> str:
    sim = ctx.simulator
    if sim is None:
        return "simulated property"
    units = sim.property_units
    return f"{sim.property_name} ({units})" if units else str(sim.property_name)

"""Editor realism by a classifier two-sample test (C2ST; Lopez-Paz & Oquab, ICLR 2017).

Can a small CNN (the *critic*) tell the editor's tiles from real ones? It needs no ground truth, so
it is the first check of an editor on a user's own data. :func:`realism_test` runs two tests:

* ``reconstruction``: real tiles vs ``editor.edit(tiles, own lot attributes)``;
* ``edits``: real tiles vs single-attribute edits by ``delta`` (default 0.35, as
  :func:`mxplain.editor_eval.edit_fidelity`): each edited tile gets one attribute (seeded draw)
  moved by ``+delta`` or ``-delta`` (seeded draw; where that would leave [0, 1] the other sign,
  which has room for ``delta`` <= 0.5, so no edit is shortened by a clip).

Protocol (seeded by ``seed``; deterministic on the CPU for a fixed thread count):

1. up to ``2 * n_per_class`` tiles are sampled evenly over the lots; within each lot a seeded half
   is the *real* side and the other half the *edited* side (the tiles the editor is given). The two
   samples are **disjoint**: a real tile's own edit is never in the data, so the two samples are
   independent draws (the C2ST's assumption, which the bootstrap interval relies on) and the critic
   cannot compare a tile with its own edit; what it can learn is only what tells the editor's
   output apart as a population. Both sides have the same count per lot, so lot identity says
   nothing about the class.
2. the lots are split (seeded) into two halves; a critic trained on one half's tiles is scored on
   the other half's tiles, and the other way round (two folds; the AUC is their mean, every tile is
   scored once, by a critic that saw none of its lot). Tiles of a lot share labels and look alike:
   a tile split would let the critic score tiles of lots it has memorised;
3. both sides go through ``uint8`` (the real tiles are stored so), so the critic cannot use
   off-grid grey levels;
4. the critic (:func:`critic_network`: three 3x3 convolutions with stride 2, batch norm, global
   mean pooling, a linear head; about 24 k weights) is trained for ``epochs`` epochs (Adam, binary
   cross-entropy, batch 16); the ROC AUC (:func:`sklearn.metrics.roc_auc_score`) of its scores on
   the held-out half comes with a 95 % percentile bootstrap interval (test tiles resampled per
   class, ``n_boot`` times, the two folds' AUCs averaged per resample). The interval covers the
   sampling of test tiles only, not the critic's training noise: with the identity editor (an
   exact null) on the quickstart's lots, nine seeds gave AUCs of 0.47-0.55 (sd 0.023, against the
   interval's implied 0.018).

AUC 0.5: the critic cannot tell the two apart; 1.0: it tells every tile apart. ``train_auc`` (the
critic on its own training tiles) says whether the critic learned anything at all: a test AUC near
0.5 with a train AUC near 0.5 is a critic that found nothing, which on a few tiles is weaker
evidence than one that fit its training tiles and failed to generalise.

On synthetic lots the same test with the data's own generator as the editor
(:meth:`mxplain.interfaces.Dataset.reference_editor`) is the **realism ceiling**: its edits are in
distribution by construction, so its AUC (about 0.5) is what the protocol gives a perfect editor.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.interfaces import Editor

DEFAULT_DELTA = 0.35
DEFAULT_EPOCHS = 6


def check_tiles(value, where: str = "[run] editor_realism_tiles") -> int:
    """``value`` as tiles per class (an integer >= 0; 0: no realism test), else a UserError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UserError(f"{where} = {value!r}; needs an integer >= 0 (tiles per class, 0: off)")
    return int(value)


def _check_options(n_per_class, delta, epochs, n_boot) -> int:
    n = check_tiles(n_per_class, "realism: n_per_class")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta <= 0.5:
        raise UserError(f"realism: delta = {delta!r}; needs a number in (0, 0.5]")
    for name, v in (("epochs", epochs), ("n_boot", n_boot)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise UserError(f"realism: {name} = {v!r}; needs an integer >= 1")
    return n


@dataclass
class RealismSample:
    """The tiles of one test: ``tiles`` (N, H, W) uint8, their lot, side (edited or real) and
    lot group (0 or 1: the two halves of the lots, each the other's critic's training lots)."""

    tiles: np.ndarray
    lot_idx: np.ndarray
    edited: np.ndarray  # bool
    group: np.ndarray  # int, 0 or 1
    lots: tuple[list[str], list[str]]


def sample_sides(store, n_per_class: int, seed: int = 0) -> RealismSample | None:
    """Disjoint real / edited tiles, balanced per lot, and a seeded split of the lots into two
    halves (None where fewer than 2 lots have 2 tiles)."""
    lots = [i for i in range(store.n_lots) if store.counts[i] >= 2]
    if len(lots) < 2 or n_per_class < 1:
        return None
    per_lot = 2 * math.ceil(n_per_class / len(lots))
    tiles, lot_idx = store.all_tiles(lots, max_per_lot=per_lot, seed=seed)
    rng = np.random.default_rng([int(seed), 7351])
    side = np.full(len(tiles), -1)
    for i in lots:
        pos = rng.permutation(np.flatnonzero(lot_idx == i))
        half = len(pos) // 2
        side[pos[:half]], side[pos[half:2 * half]] = 0, 1
    keep = np.sort(np.flatnonzero(side >= 0))
    first = np.sort(rng.permutation(lots)[: len(lots) // 2])
    group = np.where(np.isin(lot_idx[keep], first), 0, 1)
    names = ([store.lot_ids[i] for i in lots if i in set(first)],
             [store.lot_ids[i] for i in lots if i not in set(first)])
    return RealismSample(tiles[keep], lot_idx[keep], side[keep] == 1, group, names)


def edit_targets(a0: np.ndarray, delta: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Single-attribute targets for lot attributes ``a0`` (N, K): one seeded attribute per row moved
    by a seeded +/-``delta``, the sign flipped where the first would leave [0, 1]. Returns the new
    attributes and the edited attribute of each row."""
    rng = np.random.default_rng([int(seed), 9127])
    n, k = a0.shape
    j = rng.integers(0, k, n)
    sign = rng.choice([-1.0, 1.0], n)
    own = a0[np.arange(n), j]
    out = (own + sign * delta < 0) | (own + sign * delta > 1)
    sign[out] *= -1
    a = a0.astype(np.float32).copy()
    a[np.arange(n), j] = np.clip(own + sign * delta, 0.0, 1.0)
    return a, j


def _editor_tiles(editor: Editor, tiles_u8: np.ndarray, a0: np.ndarray, a_edit: np.ndarray,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The editor's reconstructions (at ``a0``) and edits (at ``a_edit``) of ``tiles_u8``, uint8."""
    from mxplain.editing import edit_batched, encode_batched
    from mxplain.store import to_tensor

    latent = encode_batched(editor, to_tensor(tiles_u8), batch_size)
    rec = edit_batched(editor, latent, torch.from_numpy(a0.astype(np.float32)), batch_size)
    edit = edit_batched(editor, latent, torch.from_numpy(a_edit.astype(np.float32)), batch_size)
    return rec, edit


def critic_network(width: int = 16) -> torch.nn.Module:
    """The critic: three 3x3 convolutions with stride 2 (a 3x3 window at every other pixel still
    sees pixel-level artefacts: checkerboards, blur), batch norm, leaky ReLU, global mean pooling
    and a linear head giving one logit (edited vs real)."""
    from torch import nn

    w = int(width)
    return nn.Sequential(
        nn.Conv2d(1, w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 1))


def _scores(net: torch.nn.Module, x: torch.Tensor, device, batch: int = 256) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(net(x[i:i + batch].to(device)).float().cpu().reshape(-1))
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def train_critic(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = DEFAULT_EPOCHS,
                 batch_size: int = 16, lr: float = 2e-3, device="cpu") -> torch.nn.Module:
    """Train :func:`critic_network` on tiles ``x`` (N, 1, H, W) in [0, 1] and labels ``y`` (1 =
    edited); seeded (initialisation and shuffling), the global generators left as they were."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = critic_network().to(device)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()
    for _ in range(int(epochs)):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - 1, batch_size):  # no batch of one (batch norm)
            idx = perm[i:i + batch_size]
            logits = net(x[idx].to(device)).reshape(-1)
            loss = loss_fn(logits, y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


def bootstrap_aucs(s_real: np.ndarray, s_fake: np.ndarray, n_boot: int = 1000,
                   seed: int = 0) -> np.ndarray:
    """``n_boot`` AUCs (P(fake score above real) + ties / 2) of resamples of each class's test
    scores (stratified by class)."""
    if len(s_real) == 0 or len(s_fake) == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng([int(seed), 4242])
    wins = (s_fake[:, None] > s_real[None, :]) + 0.5 * (s_fake[:, None] == s_real[None, :])
    n1, n0 = len(s_fake), len(s_real)
    w1 = np.stack([np.bincount(rng.integers(0, n1, n1), minlength=n1) for _ in range(n_boot)])
    w0 = np.stack([np.bincount(rng.integers(0, n0, n0), minlength=n0) for _ in range(n_boot)])
    return ((w1 @ wins) * w0).sum(axis=1) / (n1 * n0)


def _auc(s_real: np.ndarray, s_fake: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(s_real) == 0 or len(s_fake) == 0:
        return float("nan")
    y = np.r_[np.zeros(len(s_real)), np.ones(len(s_fake))]
    return float(roc_auc_score(y, np.r_[s_real, s_fake]))


def two_sample_test(real_u8: np.ndarray, fake_u8: np.ndarray, real_group: np.ndarray,
                    fake_group: np.ndarray, seed: int = 0, epochs: int = DEFAULT_EPOCHS,
                    n_boot: int = 1000, device="cpu", fake_kind: np.ndarray | None = None) -> dict:
    """C2ST of two disjoint uint8 samples whose tiles belong to lot group 0 or 1, two-fold: a critic
    trained on each group's tiles is scored on the other group's; the AUC is the mean of the two,
    its interval the percentiles of the mean of the folds' bootstrap AUCs (:func:`bootstrap_aucs`).
    ``fake_kind``: a label per fake tile (the edited attribute) for ``by_kind``, the AUC of each
    kind's fakes."""
    from mxplain.store import to_tensor

    xr, xf = to_tensor(real_u8), to_tensor(fake_u8)
    aucs, boots, train_aucs, by_kind = [], [], [], {}
    for fold in (0, 1):
        rt, ft = real_group != fold, fake_group != fold  # training: the other group's lots
        x = torch.cat([xr[torch.from_numpy(rt)], xf[torch.from_numpy(ft)]])
        y = torch.cat([torch.zeros(int(rt.sum())), torch.ones(int(ft.sum()))])
        net = train_critic(x, y, int(seed) + 1000 * fold, epochs=epochs, device=device)
        s_real = _scores(net, xr[torch.from_numpy(~rt)], device)
        s_fake = _scores(net, xf[torch.from_numpy(~ft)], device)
        s_train = _scores(net, x, device)
        aucs.append(_auc(s_real, s_fake))
        boots.append(bootstrap_aucs(s_real, s_fake, n_boot, int(seed) + fold))
        train_aucs.append(_auc(s_train[: int(rt.sum())], s_train[int(rt.sum()):]))
        if fake_kind is not None:
            kinds = fake_kind[~ft]
            for k in np.unique(fake_kind):
                by_kind.setdefault(int(k), []).append(_auc(s_real, s_fake[kinds == k]))
    lo, hi = np.nanquantile(np.mean(boots, axis=0), [0.025, 0.975])
    count = [min(int((real_group == g).sum()), int((fake_group == g).sum())) for g in (0, 1)]
    out = {"auc": float(np.mean(aucs)), "auc_ci": [float(lo), float(hi)],
           "auc_folds": [float(a) for a in aucs], "train_auc": float(np.mean(train_aucs)),
           "n_train": int(min(count)), "n_test": int(sum(count))}
    if fake_kind is not None:
        out["by_kind"] = {k: float(np.nanmean(v)) for k, v in by_kind.items()}
    return out


def realism_test(editor: Editor, store, n_per_class: int = 512, delta: float = DEFAULT_DELTA,
                 seed: int = 0, epochs: int = DEFAULT_EPOCHS, n_boot: int = 1000, device="cpu",
                 batch_size: int = 64) -> dict:
    """Real tiles vs ``editor``'s reconstructions and vs its +/-``delta`` single-attribute edits
    (the module's protocol). ``n_per_class``: tiles per class, both lot halves together. Returns
    ``{"reconstruction": {...}, "edits": {..., "by_attribute": {name: auc}}, "protocol": {...}}``
    with ``auc`` (mean of the two folds), ``auc_ci`` (95 %), ``auc_folds``, ``train_auc``,
    ``n_train`` (tiles per class each critic trains on) and ``n_test`` (tiles per class scored,
    both folds) in each test; ``{"skipped": why}`` where the store has too few lots."""
    n = _check_options(n_per_class, delta, epochs, n_boot)
    t0 = time.perf_counter()
    sample = sample_sides(store, n, seed)
    if sample is None:
        return {"skipped": "the realism test needs at least 2 lots with 2 tiles each"
                if n else "[run] editor_realism_tiles = 0"}
    real, fake = ~sample.edited, sample.edited
    a0 = store.lot_attributes[sample.lot_idx[fake]]
    a_edit, edited_attr = edit_targets(a0, float(delta), seed)
    rec_u8, edit_u8 = _editor_tiles(editor, sample.tiles[fake], a0, a_edit, batch_size)
    names = list(editor.attributes or store.attributes)
    out: dict = {}
    for key, fake_u8, kind in (("reconstruction", rec_u8, None), ("edits", edit_u8, edited_attr)):
        out[key] = two_sample_test(sample.tiles[real], fake_u8, sample.group[real],
                                   sample.group[fake], seed, epochs, n_boot, device, kind)
    by_kind = out["edits"].pop("by_kind")
    out["edits"]["by_attribute"] = {names[j]: by_kind.get(j, float("nan"))
                                    for j in range(len(names))}
    out["protocol"] = _protocol(sample, names, float(delta), seed, epochs, n_boot,
                                time.perf_counter() - t0)
    return out


def _protocol(sample: RealismSample, names, delta, seed, epochs, n_boot, seconds) -> dict:
    return {"critic": "3 conv 3x3 stride 2 (16-64 channels, batch norm), global mean pool, "
                      f"linear; Adam 2e-3, {epochs} epochs, batch 16",
            "split": "disjoint real / edited tiles (half of each lot each); lots in two seeded "
                     "halves, a critic trained on each half scores the other (AUC: the mean)",
            "edits": f"one seeded attribute per tile moved by +/-{delta:g} (the sign with room "
                     f"in [0, 1])",
            "auc_ci": f"95 % percentile bootstrap over the test tiles (per class), {n_boot} "
                      f"resamples, of the mean of the two folds' AUCs",
            "delta": delta, "seed": int(seed), "attributes": names,
            "lot_halves": [list(sample.lots[0]), list(sample.lots[1])],
            "seconds": float(seconds)}

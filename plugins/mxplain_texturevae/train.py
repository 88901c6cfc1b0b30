"""TextureVAE training on a tensor of tiles (unsupervised: no labels), shared by the editor's
``fit`` (which then fits its attribute probe) and by the ``latent_krr`` predictor (which trains
its encoder on its training tiles only)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from mxplain.interfaces import RunContext
from mxplain.training import TrainingCheckpoint
from mxplain_texturevae.model import (
    STYLE_LAYERS,
    encoder_features,
    gram,
    kl_divergence,
    layer_style_loss,
    sliding_patches,
    style_loss,
)


def batched(editor, fn, x: torch.Tensor, bs: int) -> torch.Tensor:
    """``fn`` over ``x`` in batches of ``bs`` on the editor's device, without gradients."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            out.append(fn(x[i:i + bs].to(editor.device)))
    return torch.cat(out)


def calibrate_scales(editor, patches: torch.Tensor, gen: torch.Generator, bs: int) -> None:
    """Per-layer style-loss scale: the mean loss between random pairs of training patches."""
    editor.layer_scales_ = {k: 1.0 for k in STYLE_LAYERS}
    if not editor.normalize_layers or len(patches) < 2:
        return
    n = min(len(patches), 64)
    idx = torch.randperm(len(patches), generator=gen)[:n]
    perm = torch.roll(torch.arange(n), 1)
    sums = {k: 0.0 for k in STYLE_LAYERS}
    with torch.no_grad():
        for i in range(0, n, bs):
            xa = patches[idx[i:i + bs]].to(editor.device)
            xb = patches[idx[perm[i:i + bs]]].to(editor.device)
            fa = editor.vgg_(xa, STYLE_LAYERS)
            fb = editor.vgg_(xb, STYLE_LAYERS)
            for k in STYLE_LAYERS:
                sums[k] += float(layer_style_loss(fa[k], gram(fb[k])).sum())
    for k in STYLE_LAYERS:
        s = sums[k] / n
        editor.layer_scales_[k] = s if s > 0 and math.isfinite(s) else 1.0


def evaluate_loss(editor, patches: torch.Tensor, feats: torch.Tensor | None = None,
                  weights: dict[str, float] | None = None) -> dict:
    """Deterministic loss on ``patches`` (``z = mu``, no sampling): ``style`` (weighted by
    ``weights`` / the calibrated layer scales), ``kl`` (nats per patch) and ``loss``."""
    if weights is None:
        weights = {k: w / editor.layer_scales_[k] for k, w in editor._weights().items() if w > 0}
    bs = int(editor.batch_size)
    st = kl = 0.0
    with torch.no_grad():
        for i in range(0, len(patches), bs):
            xb = patches[i:i + bs].to(editor.device)
            h = feats[i:i + bs].to(editor.device) if feats is not None else editor._features(xb)
            mu, logvar = editor.heads_(h)
            targets = {k: gram(v) for k, v in editor.vgg_(xb, tuple(weights)).items()}
            s, _ = style_loss(editor.vgg_(editor.decoder_(mu), tuple(weights)), targets, weights)
            st += float(s) * len(xb)
            kl += float(kl_divergence(mu, logvar).sum())
    n = max(len(patches), 1)
    return {"style": st / n, "kl": kl / n, "loss": (st + editor.kl_weight * kl) / n}


def _normalised_features(editor, patches: torch.Tensor, bs: int) -> torch.Tensor:
    """The frozen encoder trunk's features of every patch (computed once), standardised; sets the
    editor's ``feat_mean`` / ``feat_std``."""
    raw = batched(editor, lambda b: encoder_features(editor.vgg_, b, editor.patch_), patches, bs)
    editor.feat_mean_ = raw.mean(0)
    std = raw.std(0)
    editor.feat_std_ = std + 1e-3 * float(std.mean()) + 1e-8
    return (raw - editor.feat_mean_) / editor.feat_std_


def train_vae(editor, x: torch.Tensor, ctx: RunContext) -> dict:
    """Train ``editor``'s heads and decoder (already built, VGG loaded) on tiles ``x``
    ``(N, 1, H, W)`` in [0, 1] with the style loss; returns the training metrics. A per-epoch
    checkpoint (``ctx.training_state_path``) lets a killed training continue exactly."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(editor.seed))
    patches = sliding_patches(x, editor.patch_, editor.stride)
    bs = int(editor.batch_size)
    weights = editor._weights()
    calibrate_scales(editor, patches, gen, bs)
    feats = _normalised_features(editor, patches, bs)
    opt = torch.optim.Adam(list(editor.heads_.parameters()) + list(editor.decoder_.parameters()),
                           lr=editor.lr)
    editor.heads_.train()
    editor.decoder_.train()
    w_eff = {k: weights[k] / editor.layer_scales_[k] for k in STYLE_LAYERS if weights[k] > 0}
    editor.history_ = {"loss": [], "kl": [], "style": []}
    n = len(patches)
    probe_idx = torch.randperm(n, generator=gen)[:32]
    initial = evaluate_loss(editor, patches[probe_idx], feats[probe_idx], w_eff)
    steps = max(1, math.ceil(n / bs))
    ckpt = TrainingCheckpoint.for_run(ctx, editor.name, signature={
        **editor.get_params(), "patches": int(n), "tile_size": int(editor.tile_size_)})
    ckpt.bind(modules={"heads": editor.heads_, "decoder": editor.decoder_},
              optimizers={"adam": opt}, generators={"gen": gen})
    start = 0
    resumed = ckpt.restore()
    if resumed is not None:
        start = resumed.epoch
        editor.history_ = {k: [float(v) for v in resumed.extra["history"][k]]
                          for k in ("loss", "kl", "style")}
    hint = f"lower [editor] lr (now {editor.lr})"
    bar = tqdm(total=editor.epochs * steps, initial=start * steps, desc="texturevae",
               unit="step", disable=not ctx.progress)
    for epoch in range(start + 1, editor.epochs + 1):
        order = torch.randperm(n, generator=gen)
        sums = np.zeros(3)
        for s in range(steps):
            idx = order[s * bs:(s + 1) * bs]
            sums += _step(editor, patches[idx], feats[idx], w_eff, opt, gen,
                          lambda v, s=s, e=epoch: ckpt.check_loss(v, e, s + 1, hint)) * len(idx)
            bar.update(1)
        for k, v in zip(("loss", "kl", "style"), sums / n):
            editor.history_[k].append(float(v))
        bar.set_postfix(loss=f"{editor.history_['loss'][-1]:.4f}")
        ckpt.save(epoch, extra={"history": editor.history_})
    bar.close()
    editor._eval()
    final = evaluate_loss(editor, patches[probe_idx], feats[probe_idx], w_eff)
    return {"train_seconds": time.perf_counter() - t0, "patches": int(n),
            "patch_size": int(editor.patch_), "vgg": editor.vgg_source_,
            "final": {k: v[-1] for k, v in editor.history_.items() if v},
            "layer_scales": dict(editor.layer_scales_),
            "eval_loss_initial": initial, "eval_loss_final": final}


def _step(editor, xb: torch.Tensor, fb: torch.Tensor, w_eff: dict, opt, gen: torch.Generator,
          check) -> np.ndarray:
    """One Adam step on a batch; returns ``[loss, kl, style]``."""
    xb = xb.to(editor.device)
    with torch.no_grad():
        targets = {k: gram(v) for k, v in editor.vgg_(xb, tuple(w_eff)).items()}
    mu, logvar = editor.heads_(fb.to(editor.device))
    eps = torch.randn(mu.shape, generator=gen).to(editor.device)
    z = mu + torch.exp(0.5 * logvar) * eps
    st, _ = style_loss(editor.vgg_(editor.decoder_(z), tuple(w_eff)), targets, w_eff)
    kl = kl_divergence(mu, logvar).mean()
    loss = editor.kl_weight * kl + st
    loss_value = loss.item()
    check(loss_value)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return np.array([loss_value, kl.item(), float(st.detach())])

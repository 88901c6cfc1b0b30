"""The AttGAN's training (:class:`AttGANTraining`, mixed into
:class:`~mxplain_attgan.editor.AttGANEditor`): seed 000 §4.2 and supplement C.

Training (WGAN-GP, as the reference implementation of He et al. 2019)
    Every tile carries its lot's attribute vector ``a`` in [0, 1] (lot labels broadcast to tiles).
    Target attributes ``b`` for a batch (``target_sampling``):

    * ``"permute"`` (default, the reference): a random permutation of the batch's own attribute
      vectors; each row is replaced, with probability ``b_uniform``, by a uniform random vector in
      [0, 1]^K (attribute combinations between and beyond the few lot labels);
    * ``"single"``: ONE attribute per row (random column) changes, the others stay at the tile's
      own values - the edits the explainers make; the new value is uniform over the part of [0, 1]
      at least ``target_min_change`` away from the old one (:func:`single_attribute_targets`);
    * ``"uniform"``: independent uniform values in [0, 1]^K.

    The generator sees the codes ``(2a - 1) * thres_int`` (see :mod:`.model`).

    * a discriminator step on every iteration::

        L_D = -D_adv(x) + D_adv(G(x, b)) + lambda_gp * GP + lambda_datt * BCE(D_cls(x), a)

      GP is the WGAN-GP penalty ``(||grad D_adv(x_hat)|| - 1)^2`` on random interpolates of real and
      fake tiles (always computed in float32);
    * a generator step on every ``n_critic``-th iteration::

        L_G = -D_adv(G(x, b)) + lambda_gatt * BCE(D_cls(G(x, b)), b) + lambda_rec * L1(G(x, a), x)

      With ``rec_blur`` = s the L1 compares ``gaussian_blur(G(x, a), s)`` and
      ``gaussian_blur(x, s)``; with ``adv_rec`` the reconstructions ``G(x, a)`` are fakes as well:
      the critic's fake term and the generator's adversarial term are the means over edits and
      reconstructions.

    With ``edit_mode = "difference"`` every ``G(x, b)`` above (the critic's fakes, the generator's
    adversarial and attribute terms) is the composite ``x + G(x, b) - sg(G(x, a))``, clipped to
    [-1, 1]: the tile keeps its own detail and takes the generator's change only (the gradient of
    the anchor ``G(x, a)`` is stopped; it learns from the reconstruction L1 alone). Deviation from
    inference, where the anchor is ``G(x, c_hat)`` at the classifier's reading ``c_hat``: training
    uses the lot label, which the reconstruction already renders.

    Adam(lr, (beta1, beta2)) for both. ``lr_decay_epoch``: when set, the learning rate stays at
    ``lr`` up to that epoch and then decays linearly to 0 at the end of the last epoch (None:
    constant). ``augment`` (default off) adds random flips and 90-degree rotations; SEM tiles
    are lit from one detector direction (so are the synthetic ones), and on the quickstart data
    rotations slow the attribute classifier badly (real-tile BCE 0.66 instead of 0.56 after 6
    epochs), so only switch it on for isotropic images. On a GPU the G and D forward passes run
    under bf16 autocast; the gradient penalty runs in float32.

    ``classifier_warmup_epochs`` (default 0 = the reference): before the GAN phase, that many
    epochs of the discriminator trunk + attribute head alone on real tiles (BCE against the soft
    lot labels; Adam(``classifier_warmup_lr`` or ``lr``)), so that the generator's attribute loss
    is meaningful from its first step.

    ``cls_dropout`` / ``cls_crop`` (defaults 0.0 / None = the reference): dropout on the trunk
    features before the attribute head, and an attribute head that sees a random crop of each tile
    repeated periodically to the tile size (:func:`periodic_random_crop`), wherever the head is
    trained or scores generated tiles; inference (:meth:`classify`) uses whole tiles, no dropout.
    ``cls_pool`` (default ``"flatten"`` = the reference; ``"mean"``: spatially pooled multi-scale
    features; ``"stats"``: a linear head on texture statistics, :mod:`.texture`; see
    :class:`.model.Discriminator`).

Loss history (one entry per generator step) and the Figure-10 style figure of the four curves
(reconstruction, adversarial, classifier on real, classifier on generated) in
``ctx.figures_dir/"attgan_losses.png"``; with ``sample_every = n`` a sample grid
``attgan_samples/epoch_XXX.png`` every n epochs.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import autograd

from mxplain.errors import UserError
from mxplain.filters import gaussian_blur
from mxplain.training import TrainingCheckpoint

from .augment import diff_augment
from .model import encode_attributes

LOSS_KEYS = ("g_rec", "g_adv", "g_cls", "d_adv", "d_cls", "d_gp")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree rotations of a batch (one draw per batch)."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    if k:
        x = torch.rot90(x, k, dims=(2, 3))
    if int(torch.randint(0, 2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    return x


def periodic_random_crop(x: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    """A random ``crop`` x ``crop`` window of each image of ``x`` (N, C, H, W), repeated
    periodically to H x W (tiled from the top-left corner). Keeps the particle scale and the area
    fractions of the window, removes the image's global layout."""
    n, _, h, w = x.shape
    oy = torch.randint(0, h - crop + 1, (n,), generator=gen)
    ox = torch.randint(0, w - crop + 1, (n,), generator=gen)
    yy = (oy[:, None] + torch.arange(h) % crop).to(x.device)   # (N, H)
    xx = (ox[:, None] + torch.arange(w) % crop).to(x.device)   # (N, W)
    rows = torch.gather(x, 2, yy[:, None, :, None].expand(n, x.shape[1], h, w))
    return torch.gather(rows, 3, xx[:, None, None, :].expand(n, x.shape[1], h, w))


def single_attribute_targets(a: torch.Tensor, gen: torch.Generator,
                             min_change: float = 0.3) -> torch.Tensor:
    """Targets that change ONE attribute per row (a random column), the others kept at the row's
    own values, as the explainers edit. The new value is uniform over the part of [0, 1] at least
    ``min_change`` away from the old one (a large, two-sided change: below and above are chosen in
    proportion to the room on each side)."""
    n, k = a.shape
    col = torch.randint(0, k, (n,), generator=gen)
    old = a[torch.arange(n), col]
    lo_len = (old - min_change).clamp(min=0.0)          # room in [0, old - m]
    hi_len = (1.0 - old - min_change).clamp(min=0.0)    # room in [old + m, 1]
    u = torch.rand(n, generator=gen) * (lo_len + hi_len)
    new = torch.where(u < lo_len, u, old + min_change + (u - lo_len))
    # degenerate rows (no room on either side: only when min_change > 0.5): go to the far end
    new = torch.where(lo_len + hi_len > 0, new, (old < 0.5).to(a.dtype))
    b = a.clone()
    b[torch.arange(n), col] = new.clamp(0.0, 1.0).to(a.dtype)
    return b


class AttGANTraining:
    """The losses, the training loop and its steps of :class:`~mxplain_attgan.editor.AttGANEditor`
    (which supplies the parameters, the networks and ``fit``)."""

    def _load_data(self, store) -> tuple[torch.Tensor, torch.Tensor]:
        tiles, lots = store.all_tiles(max_per_lot=self.max_tiles_per_lot or 0, seed=self.seed)
        x = torch.from_numpy(tiles)
        a = torch.from_numpy(store.lot_attributes[lots].astype(np.float32))
        if not torch.isfinite(a).all():
            raise UserError(f"tile store {str(store.path)!r}: attgan needs every lot's attributes "
                            f"(some are missing)")
        return x, a

    def _lr_at(self, epoch_float: float) -> float:
        if self.lr_decay_epoch is None or epoch_float < self.lr_decay_epoch:
            return self.lr
        span = max(self.epochs - self.lr_decay_epoch, 1e-8)
        return self.lr * max(0.0, 1.0 - (epoch_float - self.lr_decay_epoch) / span)

    def _cls_logits(self, x: torch.Tensor, gen: torch.Generator,
                    h: torch.Tensor | None = None, plain: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Training-time attribute logits of the discriminator for images ``x`` in [-1, 1].

        ``cls_crop`` = c: the head sees a random c x c crop of each image, repeated periodically
        to the tile size (the particle scale and the area fractions are kept, the tile's global
        layout is not); ``cls_dropout`` = p: dropout on the trunk features before the head.
        ``h``: the trunk features of ``x`` when already computed (used without ``cls_crop``).
        ``cls_pool = "stats"``: the texture head reads ``plain``, the images before DiffAugment
        (a cutout square or a shifted border would change the statistics, not the attribute)."""
        D = self.discriminator_
        if self.cls_pool == "stats":
            plain = x if plain is None else plain
            if not D.trunk_columns:
                return D.fc_cls(plain)
            return D.classify(plain, D.features(x)[1] if h is None else h)
        if self.cls_crop is not None and self.cls_crop < x.shape[-1]:
            h = D.features(periodic_random_crop(x, self.cls_crop, gen))[1]
        elif h is None:
            h = D.features(x)[1]
        if self.cls_dropout > 0:
            h = F.dropout(h, self.cls_dropout, training=True)
        return D.fc_cls(h)

    def _targets(self, a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Target attributes ``b`` for a batch with attributes ``a`` (see ``target_sampling``)."""
        if self.target_sampling == "single":
            return single_attribute_targets(a, gen, self.target_min_change)
        if self.target_sampling == "uniform":
            return torch.rand(a.shape, generator=gen)
        b = a[torch.randperm(len(a), generator=gen)]
        if self.b_uniform > 0:
            u = torch.rand(a.shape, generator=gen)
            pick = torch.rand(len(a), 1, generator=gen) < self.b_uniform
            b = torch.where(pick, u, b)
        return b

    def _loss_summary(self, warmup_losses: list[float]) -> dict:
        """Mean of each loss over the last epoch's generator steps, and the warm-up's losses."""
        out = {}
        tail = max(1, len(self.history_["g_rec"]) // max(self.epochs, 1))
        for k in LOSS_KEYS:
            h = self.history_[k][-tail:]
            out[f"final_{k}"] = float(np.mean(h)) if h else float("nan")
        if warmup_losses:
            per_epoch = np.array_split(np.asarray(warmup_losses), self.classifier_warmup_epochs)
            out["warmup_d_cls_first_epoch"] = float(per_epoch[0].mean())
            out["warmup_d_cls_last_epoch"] = float(per_epoch[-1].mean())
        return out

    def _training_loop(self, x_all, a_all, gen, ctx, tile_size: int) -> SimpleNamespace:
        """Optimisers (two timescales: ``lr`` for G, ``lr_d`` for D), the EMA generator, the
        per-epoch checkpoint (restored when there is one, else the classifier warm-up runs)."""
        n = len(x_all)
        G, D = self.generator_, self.discriminator_
        for p in G.parameters():
            p.requires_grad_(True)
        betas = (self.beta1, self.beta2)
        opt_g = torch.optim.Adam(G.parameters(), lr=self.lr, betas=betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=self._lr_d(), betas=betas)
        bs = min(self.batch_size, n)
        loop = SimpleNamespace(x_all=x_all, a_all=a_all, gen=gen, n=n, bs=bs,
                               iters=max(1, n // bs),  # drop the last incomplete batch
                               opt_g=opt_g, opt_d=opt_d, start=0, it=0, warmup=[],
                               last_d={"d_adv": float("nan"), "d_cls": float("nan"),
                                       "d_gp": float("nan")},
                               amp=self.device.type == "cuda", hint=f"lower [editor] lr "
                                                                     f"(now {self.lr})")
        self.history_ = {k: [] for k in LOSS_KEYS}
        modules = {"G": G, "D": D}
        if self.generator_ema_ is not None:
            modules["G_ema"] = self.generator_ema_
        loop.ckpt = TrainingCheckpoint.for_run(
            ctx, "attgan", signature={**self.get_params(), "n": n, "tile_size": tile_size})
        loop.ckpt.bind(modules=modules, optimizers={"g": opt_g, "d": opt_d},
                       generators={"gen": gen})
        state = loop.ckpt.restore(map_location=self.device)
        if state is None:
            if self.cls_pool == "stats":
                D.fc_cls.fit_scaling(x_all.float().div(127.5).sub(1.0)[:, None].to(self.device))
            loop.warmup = self._classifier_warmup(x_all, a_all, gen, bs, loop.iters,
                                                  self.device, ctx)
        else:
            loop.start, loop.it = state.epoch, int(state.extra["it"])
            self.history_ = {k: [float(v) for v in state.extra["history"][k]] for k in LOSS_KEYS}
            loop.last_d = dict(state.extra["last_d"])
            loop.warmup = [float(v) for v in state.extra["warmup"]]
        return loop

    def _lr_d(self) -> float:
        return self.lr if self.lr_d is None else self.lr_d

    def _batch(self, loop, idx) -> torch.Tensor:
        """Tiles ``idx`` of the training set as network input in [-1, 1] on the device."""
        x = loop.x_all[idx].float().div_(255.0)[:, None]
        if self.augment:
            x = _augment(x, loop.gen)
        return (x * 2.0 - 1.0).to(self.device)

    def _train_epoch(self, loop, epoch: int, bar) -> None:
        """One epoch: a critic step every iteration, a generator step every ``n_critic``-th."""
        self.generator_.train()
        self.discriminator_.train()
        for p in self.generator_.parameters():  # a sample figure in between froze them
            p.requires_grad_(True)
        perm = torch.randperm(loop.n, generator=loop.gen)
        scale_d = self._lr_d() / self.lr
        for b_i in range(loop.iters):
            lr = self._lr_at(epoch + b_i / loop.iters)
            for opt, f in ((loop.opt_g, 1.0), (loop.opt_d, scale_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * f
            idx = perm[b_i * loop.bs:(b_i + 1) * loop.bs]
            x = self._batch(loop, idx)
            a = loop.a_all[idx]
            b = self._targets(a, loop.gen)
            a, b = a.to(self.device), b.to(self.device)
            loop.last_d = self._critic_step(loop, x, a, b)
            if loop.it % self.n_critic == self.n_critic - 1:
                g = self._generator_step(loop, x, a, b)
                for k, v in g.items():
                    self.history_[k].append(v)
                for k, v in loop.last_d.items():
                    self.history_[k].append(v)
                for k in LOSS_KEYS:
                    if not math.isfinite(self.history_[k][-1]):
                        raise loop.ckpt.fault(f"{k} loss is {self.history_[k][-1]}", epoch + 1,
                                              b_i + 1, loop.hint)
                self._update_ema()
                bar.set_postfix(rec=f"{g['g_rec']:.3f}", adv=f"{loop.last_d['d_adv']:.2f}",
                                dcls=f"{loop.last_d['d_cls']:.3f}", gcls=f"{g['g_cls']:.3f}",
                                refresh=False)
            loop.it += 1
            bar.update(1)

    def _autocast(self, loop):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=loop.amp)

    def _shown(self, x: torch.Tensor, fake: torch.Tensor, rec: torch.Tensor | None
               ) -> torch.Tensor:
        """The edit the critic and its classifier judge: ``G(x, b)``, or with ``edit_mode =
        "difference"`` the tile plus the generator's change ``x + G(x, b) - sg(G(x, a))`` (the
        anchor's gradient stopped), clipped to [-1, 1]."""
        if self.edit_mode != "difference":
            return fake
        return (x + fake - rec.detach()).clamp(-1.0, 1.0)

    def _critic_step(self, loop, x, a, b) -> dict:
        """``-D(x) + D(G(x, b)) + lambda_gp GP + lambda_datt BCE(C(x), a)`` on DiffAugment-ed
        real and fake tiles (``diffaug``); GP on interpolates of the two, in float32."""
        G, D, gen = self.generator_, self.discriminator_, loop.gen
        alpha = torch.rand(len(x), 1, 1, 1, generator=gen).to(self.device)
        for p in D.parameters():
            p.requires_grad_(True)
        with torch.no_grad(), self._autocast(loop):
            zs = G.encode(x)
            fake = G.decode(zs, encode_attributes(b, self.thres_int))
            rec = (G.decode(zs, encode_attributes(a, self.thres_int))
                   if self.adv_rec or self.edit_mode == "difference" else None)
            fake = self._shown(x, fake, rec)
            rec = rec if self.adv_rec else None
        x_d = diff_augment(x, self._policy, gen)
        fake_d = diff_augment(fake.float(), self._policy, gen)
        with self._autocast(loop):
            h_real, hc_real = D.features(x_d)
            d_real = D.fc_adv(h_real).squeeze(1)
            dc_real = self._cls_logits(x_d, gen, hc_real, plain=x)
            d_fake, _ = D(fake_d)
            d_fake = d_fake.float().mean()
            if rec is not None:
                d_fake = 0.5 * (d_fake + D(diff_augment(rec.float(), self._policy, gen))[0]
                                .float().mean())
        wd = d_real.float().mean() - d_fake
        x_hat = (x_d + alpha * (fake_d - x_d)).requires_grad_(True)
        d_hat, _ = D(x_hat)  # float32: the gradient penalty stays out of autocast
        grad = autograd.grad(d_hat.sum(), x_hat, create_graph=True)[0]
        gp = ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
        d_cls = F.binary_cross_entropy_with_logits(dc_real.float(), a)
        d_loss = -wd + self.lambda_gp * gp + self.lambda_datt * d_cls
        loop.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        loop.opt_d.step()
        return {"d_adv": -wd.item(), "d_cls": d_cls.item(), "d_gp": gp.item()}

    def _generator_step(self, loop, x, a, b) -> dict:
        """``-D(G(x, b)) + lambda_gatt BCE(C(G(x, b)), b) + lambda_rec L1(G(x, a), x)`` (with
        ``rec_blur`` and ``adv_rec`` as the module says)."""
        G, D, gen = self.generator_, self.discriminator_, loop.gen
        for p in D.parameters():
            p.requires_grad_(False)
        with self._autocast(loop):
            zs = G.encode(x)
            fake = G.decode(zs, encode_attributes(b, self.thres_int))
            rec = G.decode(zs, encode_attributes(a, self.thres_int))
            shown = self._shown(x, fake, rec)
            fake_d = diff_augment(shown, self._policy, gen)
            h_fake, hc_fake = D.features(fake_d)
            g_fake = D.fc_adv(h_fake).squeeze(1)
            gc_fake = self._cls_logits(fake_d, gen, hc_fake, plain=shown)
            g_adv = -g_fake.float().mean()
            if self.adv_rec:
                g_adv = 0.5 * (g_adv - D(diff_augment(rec, self._policy, gen))[0].float().mean())
        g_cls = F.binary_cross_entropy_with_logits(gc_fake.float(), b,
                                                   weight=self._gatt_weight(a, b))
        g_rec = F.l1_loss(gaussian_blur(rec.float(), self.rec_blur),
                          gaussian_blur(x, self.rec_blur))
        g_loss = g_adv + self.lambda_gatt * g_cls + self.lambda_rec * g_rec
        loop.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        loop.opt_g.step()
        return {"g_rec": g_rec.item(), "g_adv": g_adv.item(), "g_cls": g_cls.item()}

    def _gatt_weight(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
        """Per-element weights of the generator's attribute loss: ``gatt_weights`` by column,
        times ``gatt_keep_weight`` where the target keeps the tile's own value; ``None`` (the
        reference's plain mean) when both are their defaults."""
        if not self.gatt_weights and self.gatt_keep_weight == 1.0:
            return None
        col = torch.tensor([float((self.gatt_weights or {}).get(n, 1.0)) for n in self.attributes],
                           device=b.device)
        keep = torch.where(b == a, float(self.gatt_keep_weight), 1.0)
        return col * keep

    @torch.no_grad()
    def _update_ema(self) -> None:
        """``G_ema <- beta G_ema + (1 - beta) G`` after a generator step, with the ramp-up
        ``beta = min(g_ema, (1 + s) / (10 + s))`` at generator step ``s`` (the num_updates rule of
        TensorFlow's ExponentialMovingAverage) so that short trainings are not stuck at the initial
        weights; batch-norm buffers are copied (as StyleGAN2-ADA's G_ema)."""
        ema = self.generator_ema_
        if ema is None:
            return
        s = len(self.history_["g_rec"])
        beta = min(float(self.g_ema), (1.0 + s) / (10.0 + s))
        for pe, p in zip(ema.parameters(), self.generator_.parameters()):
            pe.lerp_(p.detach(), 1.0 - beta)
        for be, bg in zip(ema.buffers(), self.generator_.buffers()):
            be.copy_(bg)

    def _classifier_warmup(self, x_all, a_all, gen, bs, iters, device, ctx) -> list[float]:
        """``classifier_warmup_epochs`` epochs of the discriminator trunk + attribute head alone on
        real tiles (BCE against the soft lot labels), Adam(classifier_warmup_lr or lr), so that the
        generator gets a meaningful attribute gradient from its first step."""
        from tqdm.auto import tqdm

        if not self.classifier_warmup_epochs:
            return []
        D = self.discriminator_
        params = D.classifier_parameters()
        for p in D.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=self.classifier_warmup_lr or self.lr,
                               betas=(self.beta1, self.beta2))
        use_amp = device.type == "cuda"
        losses: list[float] = []
        n = len(x_all)
        D.train()
        bar = tqdm(total=self.classifier_warmup_epochs * iters, desc="attgan classifier warm-up",
                   disable=not ctx.progress, dynamic_ncols=True)
        for _ in range(self.classifier_warmup_epochs):
            perm = torch.randperm(n, generator=gen)
            for b_i in range(iters):
                idx = perm[b_i * bs:(b_i + 1) * bs]
                x = x_all[idx].float().div_(255.0)[:, None]
                if self.augment:
                    x = _augment(x, gen)
                x = (x * 2.0 - 1.0).to(device)
                a = a_all[idx].to(device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    logits = self._cls_logits(diff_augment(x, self._policy, gen), gen, plain=x)
                loss = F.binary_cross_entropy_with_logits(logits.float(), a)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):
                    bar.close()
                    raise UserError(f"attgan: classifier warm-up loss is {losses[-1]}; lower "
                                    f"[editor] classifier_warmup_lr (now "
                                    f"{self.classifier_warmup_lr or self.lr})")
                bar.set_postfix(cls=f"{losses[-1]:.3f}", refresh=False)
                bar.update(1)
        bar.close()
        return losses

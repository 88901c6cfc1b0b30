"""What tells how an AttGAN trained (mixed into :class:`~mxplain_attgan.editor.AttGANEditor`):
its evaluation on real and edited tiles, the loss and sample figures, and the README's failure
signs read from the training history (``health``, :mod:`mxplain.trust`'s editor_health gate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mxplain.figures import save_figure


class AttGANDiagnostics:
    """Evaluation, figures and health of a trained :class:`~mxplain_attgan.editor.AttGANEditor`."""

    def evaluate(self, x_all: torch.Tensor, a_all: torch.Tensor, gen: torch.Generator,
                 n_max: int = 512, batch: int = 128) -> dict:
        """Reconstruction L1/MSE (in [0, 1] grey levels) and the classifier's attribute accuracy on
        real tiles (against the lot labels) and on edited tiles (against the requested targets)."""
        sel = torch.randperm(len(x_all), generator=gen)[: min(n_max, len(x_all))]
        l1 = mse = 0.0
        real_p, real_a, fake_p, fake_b = [], [], [], []
        with torch.no_grad():
            for i in range(0, len(sel), batch):
                idx = sel[i:i + batch]
                t = x_all[idx].float().div(255.0)[:, None].to(self.device)
                a = a_all[idx].to(self.device)
                b = self._targets(a_all[idx], gen).to(self.device)
                zs = self.encode(t)
                rec = self.decode(zs, a)
                fake = self.decode(zs, b)
                l1 += float((rec - t).abs().mean(dim=(1, 2, 3)).sum())
                mse += float(((rec - t) ** 2).mean(dim=(1, 2, 3)).sum())
                real_p.append(self.classify(t).cpu())
                real_a.append(a.cpu())
                fake_p.append(self.classify(fake).cpu())
                fake_b.append(b.cpu())
        m = len(sel)
        rp, ra, fp, fb = (torch.cat(v) for v in (real_p, real_a, fake_p, fake_b))
        out = {"reconstruction_l1": l1 / m, "reconstruction_mse": mse / m}
        for tag, p, y in (("real", rp, ra), ("edited", fp, fb)):
            out[f"classifier_{tag}_mae"] = float((p - y).abs().mean())
            out[f"classifier_{tag}_accuracy"] = float(((p > 0.5) == (y > 0.5)).float().mean())
            for j, name in enumerate(self.attributes):
                out[f"classifier_{tag}_mae_{name}"] = float((p[:, j] - y[:, j]).abs().mean())
        return out

    def loss_figure(self, path: Path) -> Path:
        """Figure 10 of seed 000: the four training curves."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = (("g_rec", "(a) generator reconstruction loss (L1)"),
                  ("d_adv", "(b) discriminator adversarial loss (-W distance)"),
                  ("d_cls", "(c) classifier loss, real tiles (D)"),
                  ("g_cls", "(d) classifier loss, generated tiles (G)"))
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
        for ax, (key, title) in zip(axes, panels):
            y = np.asarray(self.history_[key], dtype=float)
            ax.plot(y, lw=0.6, alpha=0.4, color="C0")
            if len(y) >= 10:
                w = max(2, len(y) // 50)
                ax.plot(np.arange(w - 1, len(y)), np.convolve(y, np.ones(w) / w, "valid"),
                        color="C1", lw=1.2)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("generator step")
        return save_figure(fig, path, dpi=100)

    def sample_figure(self, tiles_u8: torch.Tensor, path: Path, delta: float = 0.5) -> Path:
        """Rows: tiles; columns: original, then each attribute set to 0 and to 1 (others at 0.5)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = tiles_u8.float().div(255.0)[:, None]
        k = len(self.attributes)
        cols = [t]
        with torch.no_grad():
            zs = self.encode(t)
            for j in range(k):
                for v in (0.0, 1.0):
                    a = torch.full((len(t), k), 0.5)
                    a[:, j] = v
                    cols.append(self.decode(zs, a).cpu())
        titles = ["original"] + [f"{n}={v:g}" for n in self.attributes for v in (0.0, 1.0)]
        fig, axes = plt.subplots(len(t), len(cols), figsize=(1.6 * len(cols), 1.6 * len(t)),
                                 squeeze=False)
        for r in range(len(t)):
            for c, col in enumerate(cols):
                ax = axes[r, c]
                ax.imshow(col[r, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(titles[c], fontsize=7)
        return save_figure(fig, path, dpi=80)

    # ---- trust: the README's failure signs (mxplain.trust's editor_health gate) ----------------
    def health(self, metrics: dict, store=None) -> list[tuple[str, str, str]]:
        """Two failure signs of the README against the training history (``history_``, kept in
        the checkpoint): the real-tile attribute classifier that never gets far from the
        no-information loss towards the soft-label floor (share of that gap closed by the last
        10 % of critic steps: pass >= 0.5, warn >= 0.2, else fail; floor and no-information
        loss from ``store``'s lot labels), and a reconstruction L1 that does not fall (last 10 %
        of generator steps over the first 10 %: pass <= 0.5, warn <= 0.8, else fail)."""
        hist = self.history_ or {}
        rec, cls = list(hist.get("g_rec") or []), list(hist.get("d_cls") or [])
        if not rec:
            return [("training history", "warn", "the AttGAN records no training losses "
                                                 "(nothing to check its training by)")]
        tail = max(1, len(rec) // 10)
        ratio = float(np.mean(rec[-tail:]) / max(np.mean(rec[:tail]), 1e-12))
        out = [("reconstruction loss falls",
                "pass" if ratio <= 0.5 else "warn" if ratio <= 0.8 else "fail",
                f"reconstruction L1 fell to {ratio:.2f} x its start (the README's failure sign: "
                f"a reconstruction loss that does not fall)")]
        if cls and store is not None and store.n_tiles:
            a = np.clip(np.repeat(np.asarray(store.lot_attributes, np.float64),
                                  np.asarray(store.counts), axis=0), 1e-6, 1 - 1e-6)
            m = np.clip(a.mean(axis=0, keepdims=True), 1e-6, 1 - 1e-6)
            floor = float(-(a * np.log(a) + (1 - a) * np.log(1 - a)).mean())
            none = float(-(a * np.log(m) + (1 - a) * np.log(1 - m)).mean())
            final = float(np.mean(cls[-max(1, len(cls) // 10):]))
            closed = (none - final) / max(none - floor, 1e-9)
            out.append(("attribute classifier learns",
                        "pass" if closed >= 0.5 else "warn" if closed >= 0.2 else "fail",
                        f"real-tile classifier BCE {final:.3f} closed {closed:.0%} of the gap from "
                        f"the no-information loss {none:.3f} to the soft-label floor {floor:.3f} "
                        f"(the README's failure sign: it never beats the floor by much, the "
                        f"edits then do not follow the request)"))
        return out

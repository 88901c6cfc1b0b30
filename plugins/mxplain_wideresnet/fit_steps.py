"""The steps of one WideResNet training (:meth:`WideResNetPredictor._fit_arrays`): the target's
scaling, the progress a per-epoch checkpoint carries, one epoch of optimiser steps, the
validation and early-stopping bookkeeping after it, and the fit metrics."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

MARGIN = 1.5  # half_range = MARGIN * max |y - center| over the training targets


def target_range(y_train: np.ndarray) -> tuple[float, float]:
    """``(center, half)``: the network's tanh output maps ``[-1, 1]`` onto
    ``center ± half``, with ``half = MARGIN * max |y - center|`` over the training targets."""
    center = float(y_train.mean())
    half = MARGIN * float(np.max(np.abs(y_train - center)))
    if not half > 1e-9 * max(1.0, abs(center)):
        half = max(1.0, 0.05 * abs(center))  # a single training target: a fixed margin
    return center, half


def augment_batch(x: torch.Tensor, mode: str, g: torch.Generator, n: int | None = None,
                  rows: slice = slice(None)) -> torch.Tensor:
    """Random per-tile flips (``hflip``) or the 8 dihedral transforms (``dihedral``) of a
    ``(B, 1, H, W)`` batch; random draws come from the CPU generator ``g`` (deterministic). With
    ``n`` and ``rows`` (DDP), ``x`` is rows ``rows`` of a global batch of ``n``: the draws are the
    global batch's, so every rank's generator stays in step."""
    if mode == "none" or len(x) == 0:
        return x
    b, m = len(x), (len(x) if n is None else n)
    flip = (torch.rand(m, generator=g) < 0.5)[rows]
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    if mode == "dihedral":
        vflip = (torch.rand(m, generator=g) < 0.5)[rows]
        x = torch.where(vflip.view(b, 1, 1, 1).to(x.device), x.flip(-2), x)
        if x.shape[-1] == x.shape[-2]:
            rot = (torch.rand(m, generator=g) < 0.5)[rows].view(b, 1, 1, 1).to(x.device)
            x = torch.where(rot, x.transpose(-1, -2), x)  # with the flips: all 8 symmetries
    return x


@dataclass
class Progress:
    """What a training has reached; saved with every epoch's checkpoint and restored from it."""

    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict | None = None
    wait: int = 0
    train_time: float = 0.0
    seen: int = 0
    epochs_run: int = 0
    stopped: bool = False
    history: list = field(default_factory=list)

    @classmethod
    def restored(cls, resumed) -> Progress:
        """The progress of a resumed checkpoint (``TrainingCheckpoint.restore``), else a fresh one."""
        if resumed is None:
            return cls()
        e = resumed.extra
        return cls(float(e["best_loss"]), int(e["best_epoch"]), e["best_state"] or None,
                   int(e["wait"]), float(e["train_time"]), int(e["seen"]), resumed.epoch,
                   bool(e["stopped"]), [(float(a), float(b)) for a, b in e["history"]])

    def extra(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_state": self.best_state or {}, "train_time": self.train_time,
                "seen": self.seen, "stopped": self.stopped,
                "history": [list(h) for h in self.history]}


@dataclass
class Trainer:
    """One training's network, optimiser and data on the device."""

    module: torch.nn.Module
    step_forward: Callable  # module.scaled, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: Any
    ddp: Any
    g: torch.Generator
    x_dev: torch.Tensor
    z_dev: torch.Tensor
    tr: torch.Tensor
    batch_size: int
    augment: str
    to_device: Callable

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.tr) / self.batch_size)

    def epoch(self, bar, report: Callable | None = None) -> tuple[float, int, torch.Tensor]:
        """One pass over the shuffled training tiles: ``(summed loss, tiles seen, per-step
        losses)``; the losses stay on the device (one NaN/Inf check per epoch, no extra syncs)."""
        from mxplain import ddp as ddp_mod

        device, ddp, bs, n_batches = self.z_dev.device, self.ddp, self.batch_size, self.n_batches
        cuda = device.type == "cuda"
        self.module.train()
        order = self.tr[torch.randperm(len(self.tr), generator=self.g)]
        run_loss, run_n = torch.zeros((), device=device), 0
        step_loss = torch.zeros(n_batches, device=device)
        for b in range(n_batches):
            idx = order[b * bs: (b + 1) * bs]
            if len(idx) < 2 * ddp.world and (run_n > 0 or ddp.active):
                continue  # BatchNorm needs 2 samples (per rank); a leftover is skipped
            n_global, rows = len(idx), slice(ddp.rank, None, ddp.world)
            idx_d = ddp_mod.shard(idx, ddp).to(device)
            xb = self.x_dev[idx_d].float().div_(255.0).unsqueeze(1)
            xb = self.to_device(augment_batch(xb, self.augment, self.g, n_global, rows), device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                s = self.step_forward(xb)
            loss = F.mse_loss(s.float(), self.z_dev[idx_d])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.sched is not None:
                self.sched.step()
            step_loss[b] = loss.detach()
            run_loss += loss.detach() * len(idx_d)
            run_n += len(idx_d)
            bar.update(1)
            if report is not None and (b % 10 == 0 or b == n_batches - 1):
                report(float(run_loss) / run_n)
        return float(run_loss), run_n, step_loss


def record_epoch(p: Progress, module: torch.nn.Module, epoch: int, train_loss: float,
                 val_loss: float, patience: int) -> None:
    """After an epoch: its losses into the history, the best weights kept, early stopping."""
    p.epochs_run = epoch
    p.history.append((train_loss, val_loss))
    if val_loss < p.best_loss:
        p.best_loss, p.best_epoch, p.wait = val_loss, epoch, 0
        p.best_state = copy.deepcopy(module.state_dict())
    else:
        p.wait += 1
    p.stopped = p.wait >= patience


def fit_metrics(p: Progress, t_start: float, tr: np.ndarray, va: np.ndarray, split: str,
                lot_idx: np.ndarray, center: float, half: float) -> dict:
    """The training's own numbers (the prediction scores are added by the predictor)."""
    return {
        "epochs_run": p.epochs_run,
        "best_epoch": p.best_epoch,
        "best_val_loss": float(p.best_loss),
        "train_seconds": float(time.perf_counter() - t_start),
        "images_per_s": float(p.seen / p.train_time) if p.train_time > 0 else float("nan"),
        "train_loss_history": [float(a) for a, _ in p.history],
        "val_loss_history": [float(b) for _, b in p.history],
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "split": split,
        "val_lots": [int(i) for i in np.unique(lot_idx[va])] if split == "lots" else [],
        "center": center,
        "half_range": half,
    }

"""Per-epoch training checkpoints, so that ``--resume`` continues a killed training exactly.

A training loop keeps one :class:`TrainingCheckpoint`. After every epoch it saves (atomically: temp
file + rename) the state of its modules, optimizers and LR schedulers, the epoch, whatever the loop
needs to go on (best-so-far weights, early-stopping counters, history: ``extra``) and every random
state: torch's CPU generator, CUDA's where available, numpy's and Python's global generators and the
loop's own ``torch.Generator`` objects. Everything is plain data (tensors, numbers, strings, lists,
dicts), so the file loads with ``torch.load(weights_only=True)``. A resumed run is bit-identical to
an uninterrupted one on the CPU (same seed).

The pipeline says where the file goes: ``RunContext.training_state_path``
(``out/models/{kind}.training.pt``), set while ``fit`` runs and removed once the final model is
saved. Without a path (a direct ``fit`` call) the helper does nothing but watch for NaN losses.

Typical loop::

    ckpt = TrainingCheckpoint.for_run(ctx, "wideresnet", signature=self.get_params())
    ckpt.bind(modules={"model": net}, optimizers={"opt": opt}, schedulers={"sched": sched},
              generators={"shuffle": g})
    start, extra = 1, {}
    state = ckpt.restore()            # None: nothing to resume
    if state is not None:
        start, extra = state.epoch + 1, state.extra
    for epoch in range(start, epochs + 1):
        for step, batch in enumerate(batches):
            loss = ...
            ckpt.check_loss(loss, epoch, step)   # UserError on NaN/Inf, checkpoint kept
        ckpt.save(epoch, extra={"history": history})
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mxplain import failpoints
from mxplain.checkpoint import save_atomic
from mxplain.errors import UserError

FORMAT = "mxplain-training-1"


# ---- random states as plain data ------------------------------------------------------------------
def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every global random state (torch CPU, CUDA if available, numpy, ``random``) plus the states of
    ``generators``, as tensors, numbers and lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(py[0]), "state": [int(v) for v in py[1]],
                   "gauss": None if py[2] is None else float(py[2])},
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` returned (the generators in place)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached"])))
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    for k, g in (generators or {}).items():
        if k not in state["generators"]:
            raise KeyError(f"training checkpoint has no state of generator {k!r}")
        g.set_state(state["generators"][k])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators."""
    seed = int(seed) % (2**32)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ---- the checkpoint -------------------------------------------------------------------------------
@dataclass
class TrainingState:
    """What :meth:`TrainingCheckpoint.restore` hands back: the last finished epoch and ``extra``."""

    epoch: int
    extra: dict = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """Detach tensors onto the CPU (a copy, so later in-place updates do not leak into the file)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _signature(sig: Any) -> str:
    import json

    return json.dumps(sig, sort_keys=True, default=str)


def training_path(base: Path | str | None, key: str = "") -> Path | None:
    """``out/models/predictor.training.pt`` for key ``""``, ``...training-<key>.pt`` otherwise."""
    if base is None:
        return None
    base = Path(base)
    if not key:
        return base
    return base.with_name(f"{base.name.removesuffix('.pt')}-{key}.pt")


class TrainingCheckpoint:
    """The per-epoch checkpoint of one training loop (see the module docstring).

    ``path`` None disables saving and resuming (the NaN check still works). ``component`` names the
    training in error messages; ``signature`` (plain data, e.g. the constructor parameters) must
    match for a file to be resumed, so a checkpoint of another training is refused, not mixed in.
    """

    def __init__(self, path: Path | str | None, component: str = "training", signature: Any = None):
        self.path = None if path is None else Path(path)
        self.component = component
        self.signature = _signature(signature)
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.generators: dict[str, torch.Generator] = {}
        self.last_epoch = 0

    @classmethod
    def for_run(cls, ctx, component: str, key: str = "", signature: Any = None
                ) -> TrainingCheckpoint:
        """The checkpoint the run context asks for (``ctx.training_state_path``; none without it);
        ``key`` separates several trainings of one component (``...training-<key>.pt``)."""
        base = getattr(ctx, "training_state_path", None) if ctx is not None else None
        return cls(training_path(base, key), component, signature)

    def bind(self, modules: dict | None = None, optimizers: dict | None = None,
             schedulers: dict | None = None, generators: dict | None = None) -> TrainingCheckpoint:
        """What to save and restore, by name: ``nn.Module``s (or anything with
        ``state_dict``/``load_state_dict``), optimizers, LR schedulers, ``torch.Generator``s."""
        self.modules = dict(modules or {})
        self.optimizers = dict(optimizers or {})
        self.schedulers = {k: s for k, s in (schedulers or {}).items() if s is not None}
        self.generators = dict(generators or {})
        return self

    # ---- saving -----------------------------------------------------------------------------------
    def save(self, epoch: int, extra: dict | None = None) -> None:
        """Write the state after finished epoch ``epoch`` (1-based) atomically."""
        self.last_epoch = int(epoch)
        if self.path is None:
            return
        payload = {
            "format": FORMAT,
            "component": self.component,
            "signature": self.signature,
            "epoch": int(epoch),
            "modules": {k: _plain(m.state_dict()) for k, m in self.modules.items()},
            "optimizers": {k: _plain(o.state_dict()) for k, o in self.optimizers.items()},
            "schedulers": {k: _plain(s.state_dict()) for k, s in self.schedulers.items()},
            "rng": rng_state(self.generators),
            "extra": _plain(extra or {}),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(payload, self.path)
        failpoints.hit(f"epoch:{self.path.name}")

    # ---- resuming ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path is not None and self.path.is_file()

    def restore(self, map_location: torch.device | str | None = None) -> TrainingState | None:
        """Load the file (``weights_only=True``) into the bound objects and the random generators;
        ``None`` when there is nothing to resume."""
        if not self.exists():
            return None
        where = f"training checkpoint {str(self.path)!r}"
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"{where} is not readable ({type(exc).__name__}); delete it to "
                            f"train from the start") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise UserError(f"{where} is not an mxplain training checkpoint")
        if payload.get("component") != self.component or payload.get("signature") != self.signature:
            raise UserError(f"{where} belongs to another training than {self.component!r} with "
                            f"these parameters; delete it to train from the start")
        try:
            for k, m in self.modules.items():
                m.load_state_dict(payload["modules"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(payload["optimizers"][k])
            for k, s in self.schedulers.items():
                s.load_state_dict(payload["schedulers"][k])
            set_rng_state(payload["rng"], self.generators)
        except (KeyError, RuntimeError, ValueError) as exc:
            msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{where} does not fit {self.component!r}: {msg}") from None
        self.last_epoch = int(payload["epoch"])
        extra = payload.get("extra") or {}
        if map_location is not None:
            extra = _to(extra, torch.device(map_location))
        return TrainingState(epoch=self.last_epoch, extra=extra)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)

    # ---- numerical faults -------------------------------------------------------------------------
    def fault(self, what: str, epoch: int, step: int | None = None, hint: str = "") -> UserError:
        """The one-line error of a non-finite loss: component, epoch, step, where the last good
        checkpoint is."""
        at = f"epoch {int(epoch)}" + ("" if step is None else f", step {int(step)}")
        if self.path is not None and self.path.is_file():
            kept = f"last good checkpoint kept at {str(self.path)!r} (epoch {self.last_epoch})"
        elif self.path is not None:
            kept = "no good checkpoint yet (it failed in the first epoch)"
        else:
            kept = "no training checkpoint (no run folder)"
        hint = f"; {hint}" if hint else ""
        return UserError(f"{self.component}: {what} at {at}{hint}; {kept}")

    def check_loss(self, loss: torch.Tensor | float, epoch: int, step: int | None = None,
                   hint: str = "") -> None:
        """Raise the :meth:`fault` UserError if ``loss`` is NaN or infinite (syncs a GPU tensor);
        ``epoch`` and ``step`` are counted from 1."""
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            kind = "NaN" if math.isnan(value) else "infinite"
            raise self.fault(f"training loss is {kind}", epoch, step, hint)

    def check_losses(self, losses: torch.Tensor, epoch: int, hint: str = "") -> None:
        """Check a whole epoch's per-step losses at once (one sync); names the first bad step
        (1-based, as epochs are: ``losses[0]`` is step 1)."""
        bad = ~torch.isfinite(losses.detach())
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0, 0])
            self.check_loss(losses[i], epoch, i + 1, hint)


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


def remove_training_states(base: Path | str | None) -> None:
    """Delete ``base`` and every keyed variant (``...training-<key>.pt``) of it."""
    if base is None:
        return
    base = Path(base)
    stem = base.name.removesuffix(".pt")
    if base.parent.is_dir():
        for p in base.parent.glob(f"{stem}*.pt*"):
            if p.name == base.name or p.name.startswith(stem + "-") or p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)


__all__ = ["TrainingCheckpoint", "TrainingState", "rng_state", "set_rng_state", "seed_everything",
           "training_path", "remove_training_states"]

"""Checkpoints as plain data: parameters, state dicts and numbers, never pickled objects.

Loading uses ``torch.load(weights_only=True)``, so a file holding a pickled object is refused instead
of executed.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from pathlib import Path

import torch

from mxplain.errors import UserError

FORMAT = "mxplain-checkpoint-1"


def save_component(component, path: str | Path) -> None:
    """Write ``component``'s name, kind, parameters and state atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "kind": component.kind,
        "name": component.name,
        "params": component.get_params(),
        "state": component.state_dict(),
    }
    save_atomic(payload, path)


def save_atomic(payload: dict, path: str | Path) -> None:
    """``torch.save`` into ``path.tmp``, then rename over ``path``: a kill leaves the old file. A
    failed write (a full disk: torch's ``RuntimeError [enforce fail at inline_container.cc]``)
    removes the temporary file and is an ``OSError`` naming the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, RuntimeError) and ("enforce fail" in str(exc) or "write" in str(exc)):
            full = _free_bytes(path.parent) < 64 * 2**20
            raise OSError(errno.ENOSPC if full else errno.EIO,
                          "No space left on device" if full else "could not write the checkpoint",
                          str(path)) from None
        raise


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint without executing code; anything else is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"checkpoint {str(path)!r} was refused: it holds objects that loading would execute "
            f"({first[:160]})"
        ) from None
    except Exception as exc:
        raise UserError(f"checkpoint {str(path)!r} is not readable: {type(exc).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"checkpoint {str(path)!r} is not an mxplain checkpoint")
    for key, kind in (("kind", str), ("name", str), ("params", dict), ("state", dict)):
        if not isinstance(payload.get(key), kind):  # a damaged or hand-made file
            got = type(payload[key]).__name__ if key in payload else "missing"
            raise UserError(f"checkpoint {str(path)!r} is damaged: its {key!r} is {got}, not a "
                            f"{'string' if kind is str else 'dict'}")
    return payload


def load_component(cls, path: str | Path, device="cpu"):
    """Rebuild a component of class ``cls`` from a checkpoint written by :func:`save_component`."""
    payload = read_checkpoint(path)
    if payload["kind"] != cls.kind or payload["name"] != cls.name:
        raise UserError(
            f"checkpoint {str(path)!r} holds a {payload['kind']} {payload['name']!r}, "
            f"not a {cls.kind} {cls.name!r}"
        )
    params = {k: v for k, v in payload["params"].items() if k in cls.param_defaults()}
    component = cls(**params)
    component.to(device)
    try:
        component.load_state_dict(payload["state"])
    except (RuntimeError, KeyError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"checkpoint {str(path)!r} does not fit {cls.name!r}: {msg}") from None
    return component


def state_differences(a, b, prefix: str = "") -> list[str]:
    """Dotted keys where two (nested) state dicts differ: a key on one side only, or values not
    exactly equal (tensors by shape and ``torch.equal``). Empty when they are identical."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{prefix}{k}")
            else:
                out += state_differences(a[k], b[k], f"{prefix}{k}.")
        return out
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and torch.equal(a, b))
    else:
        same = bool(a == b)
    return [] if same else [prefix.rstrip(".")]

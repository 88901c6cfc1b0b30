"""Checkpoints as plain data: parameters, state dicts and numbers, never pickled objects.

Loading uses ``torch.load(weights_only=True)``, so a file holding a pickled object is refused instead
of executed. Saving checks the same first (:func:`check_plain`): a state that holds an object (a
scikit-learn estimator, a numpy array) is refused when it is saved, naming the key, with how to
store it as plain data instead. :func:`mxplain.plugins.load_checkpoint` rebuilds any registered
component from its file (``mxplain.load_checkpoint``).
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
from pathlib import Path

import torch

from mxplain.errors import UserError

FORMAT = "mxplain-checkpoint-1"


#: what a checkpoint may hold: what ``torch.load(weights_only=True)`` reads without executing code
PLAIN_LEAVES = (torch.Tensor, bool, int, float, complex, str, bytes, type(None), torch.dtype,
                torch.device)
PLAIN_GUIDE = ("state_dict() may hold only tensors, numbers, strings, lists, tuples and dicts (a "
               "checkpoint is loaded without executing code); store a fitted scikit-learn model "
               "as arrays, e.g. a linear model's coef_ and intercept_ as tensors, a forest's tree "
               "node arrays as the texture_rf predictor does (mxplain_vgg.forest.ForestArrays), "
               "and rebuild it in load_state_dict (docs/custom-predictor.md, 'Plain state')")


def check_plain(value, where: str = "state") -> tuple[str, str] | None:
    """``(key, type)`` of the first value in ``value`` (nested dicts, lists, tuples) that a
    checkpoint cannot hold, e.g. ``("state['model']", "sklearn.linear_model._ridge.Ridge")``;
    ``None`` when everything is plain data."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                return f"{where} key {k!r}", _type_name(k)
            found = check_plain(v, f"{where}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            found = check_plain(v, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if isinstance(value, PLAIN_LEAVES) else (where, _type_name(value))


def _type_name(value) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def save_component(component, path: str | Path) -> None:
    """Write ``component``'s name, kind, parameters and state atomically (temp file + rename). A
    state or parameter that is not plain data (:func:`check_plain`) is a :class:`UserError` here,
    naming the key, before anything is written."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "kind": component.kind,
        "name": component.name,
        "params": component.get_params(),
        "state": component.state_dict(),
    }
    for part in ("state", "params"):
        bad = check_plain(payload[part], part)
        if bad:
            hint = (" (torch.from_numpy(array) stores it as a tensor)"
                    if bad[1].startswith("numpy.") else "")
            raise UserError(f"cannot save the {component.kind} {component.name!r}: its {bad[0]} "
                            f"is a {bad[1]}, not plain data{hint}; {PLAIN_GUIDE}")
    path.parent.mkdir(parents=True, exist_ok=True)
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
        raise UserError(f"checkpoint {str(path)!r} was refused: it holds "
                        f"{_refused_object(str(exc))} that loading would have to execute; save it "
                        f"again from a component whose state is plain data") from None
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


def load_component(cls, path: str | Path, device="cpu", overrides: dict | None = None):
    """Rebuild a component of class ``cls`` from a checkpoint written by :func:`save_component`;
    ``overrides``: values of ``cls.inference_params`` that replace the checkpoint's."""
    payload = read_checkpoint(path)
    if payload["kind"] != cls.kind or payload["name"] != cls.name:
        raise UserError(
            f"checkpoint {str(path)!r} holds a {payload['kind']} {payload['name']!r}, "
            f"not a {cls.kind} {cls.name!r}"
        )
    fixed = sorted(set(overrides or {}) - set(cls.inference_params))
    if fixed:
        raise UserError(f"{cls.kind} {cls.name!r}: {', '.join(fixed)} cannot be changed on a "
                        f"trained checkpoint (what may: "
                        f"{', '.join(sorted(cls.inference_params)) or 'nothing'})")
    params = {k: v for k, v in payload["params"].items() if k in cls.param_defaults()}
    params.update(overrides or {})
    component = cls(**params)
    component.to(device)
    try:
        component.load_state_dict(payload["state"])
    except (RuntimeError, KeyError, ValueError) as exc:
        msg = whole_sentences(f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError)
                              else str(exc))
        raise UserError(f"checkpoint {str(path)!r} does not fit {cls.name!r}: {msg}") from None
    return component


def _refused_object(message: str) -> str:
    """What ``torch.load(weights_only=True)`` refused, from its message: ``a
    sklearn.linear_model._ridge.Ridge object``, else ``objects``."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return f"a {found.group(1)} object" if found else "objects"


def whole_sentences(text: str, limit: int = 300) -> str:
    """``text`` on one line (control characters and ANSI colours dropped), shortened only at the
    end of a sentence: the sentences that fit in ``limit`` characters, or the first one whole."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    text = " ".join(text.split()).strip() or "no details"
    if len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[.;:](?=\s)", text)]
    fits = [e for e in ends if e <= limit]
    cut = fits[-1] if fits else (ends[0] if ends else len(text))
    rest = text[cut:].strip()
    return text[:cut] + (f" ({len(rest)} more characters)" if rest else "")


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

"""Device selection: ``auto`` takes the GPU when there is one."""

from __future__ import annotations

import re

import torch

from mxplain.errors import UserError


def resolve_device(spec: str | None) -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not m:
        raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"device {spec!r} asked for, but no CUDA GPU is available here")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{index}")

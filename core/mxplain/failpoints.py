"""Fault injection for the kill-and-resume tests: ``MXPLAIN_KILL_AT=NAME[@N]`` makes the process
SIGKILL itself the N-th time (default: the first) it passes the point ``NAME``.

Points: ``write:<store>`` (a lot's data is in ``<store>`` -- ``tiles.zarr``, ``results.zarr`` -- but
its done-flag is not), ``epoch:<file>`` (a training checkpoint such as ``predictor.training.pt`` was
just saved), ``explain:lot`` (a lot is explained, its values are not written yet). Without the
variable a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "MXPLAIN_KILL_AT"
_hits: dict[str, int] = {}


def hit(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

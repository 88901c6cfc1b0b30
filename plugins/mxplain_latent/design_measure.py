"""The dataset's measurement of ``latent_design``'s step images, off the compute path.

:class:`StepMeasurer` measures the images of each gradient step in one background thread while the
next steps are computed (torch releases the interpreter during its kernels, the measurement is
numpy), in the order they were added. A tile's measurement depends on its pixels alone
(:meth:`mxplain.interfaces.Dataset.measure`), so the values are those of one call over all images
at the end. :func:`step_values` puts them on the cube's layout.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from mxplain.store import to_uint8


def u8(imgs: torch.Tensor) -> np.ndarray:
    """Tiles ``(N, 1, H, W)`` in [0, 1] (any float dtype) as stored tiles: ``uint8 (N, H, W)``."""
    return to_uint8(imgs.detach().float())


def _measured(measure, imgs: torch.Tensor) -> np.ndarray:
    tiles = u8(imgs)
    m = np.asarray(measure(tiles), np.float64)
    if m.ndim != 2 or len(m) != len(tiles):
        raise ValueError(f"measure returned shape {m.shape} for {len(tiles)} tiles, expected "
                         f"(N, M)")
    return m


class StepMeasurer:
    """``add`` step images, then ``result()``: ``measure(u8(all images))`` as ``(N, M)``, computed
    in a background thread meanwhile. ``measure=None``: nothing is measured (``result()`` is
    ``None``). A context manager: leaving it stops the thread (an error in ``measure`` is raised
    by ``result()``)."""

    def __init__(self, measure):
        self.measure = measure
        self._jobs: list[Future] = []
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="mxplain-measure")
                      if measure is not None else None)

    def add(self, imgs: torch.Tensor) -> None:
        if self._pool is not None:
            self._jobs.append(self._pool.submit(_measured, self.measure, imgs))

    def result(self) -> np.ndarray | None:
        if self.measure is None:
            return None
        return np.concatenate([job.result() for job in self._jobs])

    def __enter__(self) -> StepMeasurer:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def fill_steps(v: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Fill invalid entries along the last-but-one axis (steps) with the nearest valid step."""
    out = v.copy()
    s = v.shape[-2]
    for idx in np.ndindex(*v.shape[:-2], v.shape[-1]):
        *lead, k = idx
        good = np.flatnonzero(ok[(*lead, slice(None), k)])
        if len(good) == 0:
            out[(*lead, slice(None), k)] = 0.0
            continue
        pos = np.arange(s)
        nearest = good[np.abs(pos[:, None] - good[None]).argmin(1)]
        out[(*lead, slice(None), k)] = v[(*lead, nearest, k)]
    return out


def step_values(m: np.ndarray, n: int, steps: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Measurements ``m`` of the step images in the order latent path steps 0..S-1, then pixel
    path steps 0..S-1 (each step ``n`` tiles) as ``(n, 2, S, k)`` values (invalid ones filled from
    the nearest valid step) and their validity."""
    m = m.reshape(2, steps, n, -1)
    vals = np.full((n, 2, steps, k), np.nan)
    vals[..., : min(k, m.shape[-1])] = np.transpose(m, (2, 0, 1, 3))[..., :k]
    ok = np.isfinite(vals)
    return fill_steps(np.where(ok, vals, 0.0), ok), ok

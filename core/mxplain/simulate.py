"""Physics computed from the image: the :class:`Simulator` interface and a built-in transport solver.

A *simulator* maps tiles to a property by physics (seed 001 §3.2: "the true properties of these
samples are computed"): batched, deterministic, numpy in and numpy out. A dataset that has one
returns it from :meth:`mxplain.interfaces.Dataset.simulator` (the default: none); the pipeline puts
it in :attr:`mxplain.interfaces.ExplainContext.simulator`, where explainers (``latent_design``)
judge designed tiles by it.

The built-in solver, :func:`effective_conductivity`, is a cell-centred finite-volume solve of the
steady diffusion (Laplace) equation ``div(k grad u) = 0`` on a two-phase map:

* one unknown ``u`` per pixel (cell of side 1); the conductance of the face between two cells is
  the harmonic mean of their conductivities ``2 k1 k2 / (k1 + k2)`` (the exact series resistance of
  two half cells);
* ``u = 1`` on the first face across the flow direction and ``u = 0`` on the opposite one, each
  reached through a half cell (conductance ``2 k``); no flux through the two other faces;
* the symmetric positive definite system is solved directly (``scipy.sparse.linalg.splu``,
  minimum-degree ordering, diagonal pivots);
* the effective conductivity is the total flux through the inlet face times length over width:
  ``k_eff = F * L / W`` (``L`` cells along the flow, ``W`` across; unit potential drop).

A layered medium gives exactly the arithmetic mean of the layer conductivities along the layers
and the harmonic mean across them; dilute disks follow Maxwell-Garnett (tests/core/test_simulate.py
states the tolerances). The phases' conductivities need a finite contrast (e.g. 1 : 1e-3) so that
the matrix stays nonsingular where a phase is cut off.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

DIRECTIONS = ("x", "y", "both")


class Simulator(ABC):
    """Tiles -> a property computed by physics, one value per tile.

    ``simulate`` takes ``uint8`` tiles ``(N, H, W)`` (or float tiles in [0, 1], ``(N, 1, H, W)``
    too) and returns ``(N,)`` ``float64``; it is deterministic (the same tiles give the same
    values bit for bit) and works on any tiles, including edited or designed ones.
    Constructors store parameters only."""

    #: the property's name and units (``pore_diffusivity``, ``D_eff / D_pore``)
    property_name: str = "simulated_property"
    property_units: str = ""

    @abstractmethod
    def simulate(self, tiles) -> np.ndarray:
        """``(N, H, W)`` tiles -> ``(N,)`` property."""

    def describe(self) -> dict:
        """Plain data naming what is computed (for metrics and store attributes)."""
        return {"simulator": type(self).__name__, "property_name": self.property_name,
                "property_units": self.property_units}


def as_unit_float(tiles) -> np.ndarray:
    """``uint8`` or float tiles (``(N, H, W)`` / ``(N, 1, H, W)``, numpy or torch) -> float64
    ``(N, H, W)`` in [0, 1]."""
    if hasattr(tiles, "detach"):
        tiles = tiles.detach().cpu().numpy()
    arr = np.asarray(tiles)
    if arr.ndim == 4:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"tiles must have shape (N, H, W) or (N, 1, H, W), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    # float tiles are quantised as a tile store would keep them, so a tile and its stored copy agree
    return np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255) / 255.0


def _harmonic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 2.0 * a * b / (a + b)


def _flux_x(k: np.ndarray) -> float:
    """Effective conductivity along axis 1 (columns) of the conductivity map ``k`` (H, W)."""
    h, w = k.shape
    idx = np.arange(h * w).reshape(h, w)
    gx = _harmonic(k[:, :-1], k[:, 1:])  # faces between (i, j) and (i, j + 1)
    gy = _harmonic(k[:-1, :], k[1:, :])  # faces between (i, j) and (i + 1, j)
    g_in, g_out = 2.0 * k[:, 0], 2.0 * k[:, -1]  # half cells to the fixed-potential faces
    diag = np.zeros((h, w))
    diag[:, :-1] += gx
    diag[:, 1:] += gx
    diag[:-1, :] += gy
    diag[1:, :] += gy
    diag[:, 0] += g_in
    diag[:, -1] += g_out
    rows = np.concatenate([idx[:, :-1].ravel(), idx[:, 1:].ravel(),
                           idx[:-1, :].ravel(), idx[1:, :].ravel(), idx.ravel()])
    cols = np.concatenate([idx[:, 1:].ravel(), idx[:, :-1].ravel(),
                           idx[1:, :].ravel(), idx[:-1, :].ravel(), idx.ravel()])
    vals = np.concatenate([-gx.ravel(), -gx.ravel(), -gy.ravel(), -gy.ravel(), diag.ravel()])
    a = sp.csc_matrix((vals, (rows, cols)), shape=(h * w, h * w))
    b = np.zeros((h, w))
    b[:, 0] = g_in  # u = 1 on the inlet face
    # a minimum-degree ordering of A + A^T with diagonal pivots (the matrix is symmetric positive
    # definite): about 1.5x faster than the default COLAMD on 64 x 64 grids
    lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
              options={"SymmetricMode": True})
    u = lu.solve(b.ravel()).reshape(h, w)
    flux = float(np.sum(g_in * (1.0 - u[:, 0])))
    return flux * w / h


def effective_conductivity(conductivity: np.ndarray, direction: str = "x") -> float:
    """Effective conductivity of a 2-D conductivity map ``(H, W)`` (all values > 0) by the
    finite-volume solve of the module docstring: along ``"x"`` (potential fixed on the left and
    right faces), ``"y"`` (top and bottom) or ``"both"`` (the mean of the two)."""
    k = np.asarray(conductivity, np.float64)
    if k.ndim != 2 or min(k.shape) < 1:
        raise ValueError(f"a conductivity map must be 2-D, got shape {k.shape}")
    if not (np.isfinite(k).all() and (k > 0).all()):
        raise ValueError("conductivities must be finite and > 0 (use a contrast such as 1e-3 for "
                         "an insulating phase)")
    if direction == "x":
        return _flux_x(k)
    if direction == "y":
        return _flux_x(k.T)
    if direction == "both":
        return 0.5 * (_flux_x(k) + _flux_x(k.T))
    raise ValueError(f"direction = {direction!r}: use one of {list(DIRECTIONS)}")


def two_phase_conductivity(phase: np.ndarray, k_phase: float = 1.0,
                           k_other: float = 1e-3) -> np.ndarray:
    """Conductivity map of a boolean phase map: ``k_phase`` where true, ``k_other`` elsewhere."""
    return np.where(np.asarray(phase, bool), float(k_phase), float(k_other))


class PhaseConductivity(Simulator):
    """Effective conductivity (relative to the conducting phase's) of each tile's two-phase map.

    ``phase_map`` turns one float tile ``(H, W)`` in [0, 1] into a boolean map of the conducting
    phase; that phase has conductivity 1 and the other ``contrast``; the result is
    :func:`effective_conductivity` along ``direction`` (``"both"``: mean of x and y)."""

    def __init__(self, phase_map: Callable[[np.ndarray], np.ndarray] | None = None,
                 contrast: float = 1e-3, direction: str = "both",
                 property_name: str = "effective_conductivity",
                 property_units: str = "k_eff / k_phase"):
        self.phase_map = phase_map
        self.contrast = contrast
        self.direction = direction
        self.property_name = property_name
        self.property_units = property_units

    def phases(self, tiles) -> np.ndarray:
        """Boolean ``(N, H, W)`` maps of the conducting phase."""
        rule = self.phase_map or (lambda t: t < 0.5)
        return np.stack([np.asarray(rule(t), bool) for t in as_unit_float(tiles)])

    def simulate(self, tiles) -> np.ndarray:
        maps = self.phases(tiles)
        out = np.empty(len(maps), np.float64)
        for i, m in enumerate(maps):
            out[i] = effective_conductivity(two_phase_conductivity(m, 1.0, self.contrast),
                                            self.direction)
        return out

    def describe(self) -> dict:
        return {**super().describe(), "contrast": float(self.contrast),
                "direction": self.direction,
                "solver": "cell-centred finite volumes, harmonic face conductances, splu"}

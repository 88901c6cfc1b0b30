"""The plain data the interfaces pass (:mod:`mxplain.interfaces` re-exports every name): the
data's shape and a component's footprint, the run's context and the explainers' (models, names,
what the dataset knows), one lot, and a results-cube variable's declaration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from mxplain.interfaces import Editor, Predictor
    from mxplain.simulate import Simulator


@dataclass(frozen=True)
class DataShape:
    """The size of a dataset's tile store as its config sets it (before anything is built)."""

    n_lots: int
    n_tiles: int  # all lots together
    max_tiles_per_lot: int
    tile_size: int  # pixels (tiles are square)
    #: the lots' attribute names, where known before the store is built (``None``: not known);
    #: not part of the shape's equality
    attributes: tuple[str, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Footprint:
    """A rough estimate of what one stage of a component holds in memory at its peak and writes to
    disk, in bytes, and the config keys that set it (named when it cannot fit)."""

    what: str  # e.g. "the tile store", "the network's weights and Adam state"
    keys: tuple[str, ...]
    memory: int = 0
    disk: int = 0
    #: the memory is on the run's device (the GPU's, when the run has one), not the host's
    on_device: bool = False


@dataclass
class RunContext:
    """What a component needs to know about the run it is part of (``fit(store, ctx)``; every
    field is described in docs/custom-predictor.md, section 2)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    out_dir: Path | None = None
    seed: int = 0
    progress: bool = True
    batch_size: int = 256
    #: where ``fit`` keeps its per-epoch training checkpoint (:mod:`mxplain.training`); the pipeline
    #: sets ``out/models/{kind}.training.pt`` while a model trains, ``None`` otherwise (no checkpoint)
    training_state_path: Path | None = None

    @property
    def figures_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "figures"

    @property
    def models_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "models"


@dataclass
class Lot:
    """One lot's tiles and labels, as explainers receive them."""

    index: int
    lot_id: str
    tiles: torch.Tensor  # (n, 1, H, W) float in [0, 1], on the CPU
    attributes: np.ndarray  # (K,) in [0, 1]
    property: float


@dataclass
class ExplainContext(RunContext):
    """Run context plus the models and the cube's coordinates (``explain_lot(lot, ctx)``,
    ``summarize(cube, ctx)``)."""

    #: the run's trained predictor and editor (``None``: the config has none)
    predictor: Predictor | None = None
    editor: Editor | None = None
    #: attribute names, in the order of the attribute vectors and the cube's ``attribute`` dim
    attributes: tuple[str, ...] = ()
    #: the lot property's name and units (``peak_stress``, ``psi``)
    property_name: str = "property"
    property_units: str = ""
    #: the ground-truth effect of each attribute where the dataset knows it (synthetic lots)
    true_sensitivity: dict[str, float] | None = None
    #: the dataset's simulator (:meth:`Dataset.simulator`), ``None`` where it has none
    simulator: Simulator | None = None
    #: the dataset's attribute measurement (:meth:`Dataset.measure`: ``uint8`` tiles ``(N, H, W)``
    #: -> ``(N, K)`` raw measurements, columns in the order of ``attributes``), ``None`` where it
    #: has none
    measure: Callable[[np.ndarray], np.ndarray] | None = None
    #: the dataset's segmentation into labelled structures (:meth:`Dataset.segment`: ``uint8``
    #: tiles ``(N, H, W)`` -> ``{structure: (N, H, W) bool}``), ``None`` where it has none
    segment: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None
    #: the structures ``segment`` returns, each with the attribute whose effect it carries
    #: (``None``: none) (:attr:`Dataset.structures`; the cube's ``structure`` dimension)
    structures: dict[str, str | None] = field(default_factory=dict)
    #: the cube's coordinates by name (``lot``, ``attribute``, the explainers' extra dimensions
    #: and coordinates such as forward's ``value``), set before the first lot is explained
    cube_coords: dict[str, np.ndarray] = field(default_factory=dict)
    #: in :meth:`Explainer.explain_lot`: what the lot already holds of the variables the explainer
    #: declares in ``reads`` and ``reads_optional`` (their producers ran first; an optional read
    #: without a producer is absent), without the ``lot`` dimension
    lot_results: dict[str, np.ndarray] = field(default_factory=dict)
    #: for each variable of ``lot_results``: the name and parameters
    #: (:meth:`~mxplain.interfaces.Component.get_params`) of the explainer that wrote it
    #: (``("pipeline", {})`` for the pipeline's own), so that a reader can check they match its own
    lot_producers: dict[str, tuple[str, dict]] = field(default_factory=dict)
    #: for each explainer named in ``lot_producers``: the seconds its ``explain_lot`` took on this
    #: lot (what a reader reports as the cost of the values it took over)
    lot_seconds: dict[str, float] = field(default_factory=dict)
    #: ``[run] editor_eval_tiles``: tiles per lot of the editor's reconstruction and fidelity checks
    editor_eval_tiles: int = 6
    #: ``[run] editor_realism_tiles``: tiles per class of the editor's realism test (0: off)
    editor_realism_tiles: int = 512
    #: the resolved ``[trust]`` table (gate thresholds, ``probe_tiles``; :mod:`mxplain.trust`),
    #: ``None`` outside a run (no probe, no gates)
    trust: dict | None = None


@dataclass(frozen=True)
class Variable:
    """A results-cube variable an explainer writes: its dims (all but ``lot`` known to the cube or
    given in ``Explainer.extra_dims``), dtype and the fill value of lots not written yet;
    ``units`` and ``description`` (optional) become the variable's attributes in the cube (units
    ``"1"`` for dimensionless values, e.g. attributes in [0, 1])."""

    dims: tuple[str, ...]
    dtype: str = "float32"
    fill: Any = float("nan")
    units: str = ""
    description: str = ""

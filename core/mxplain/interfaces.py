"""The three core interfaces (Predictor, Editor, Explainer) and the Dataset interface.

Conventions shared by every component:

* A *tile batch* is a ``torch.Tensor`` of shape ``(N, 1, H, W)``, ``float32``, grey levels in [0, 1].
  Tile stores keep ``uint8``; :func:`mxplain.store.to_tensor` converts.
* *Attributes* are a ``(N, K)`` float tensor in [0, 1], columns in the order of ``Editor.attributes``
  (the tile store's attribute names).
* Constructors store parameters only (scikit-learn style); learned state is set by ``fit`` or ``load``.
  Every constructor parameter is a config key of the component's table and must have a default.
* ``name`` is the registered, lowercase name used in configs.
* Config values are checked when the config is resolved, before anything is written or trained
  (:mod:`mxplain.config`): their types against the constructor's annotations and defaults, common
  keys by :data:`mxplain.config.COMMON_RULES` (``lr`` > 0, ``epochs`` >= 1, ...), then the
  component's own :meth:`Component.check_params`. Sizes: :meth:`Component.footprint` estimates what
  a component will hold in memory or write to disk, and :mod:`mxplain.preflight` refuses what the
  machine cannot hold.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

if TYPE_CHECKING:
    from mxplain.simulate import Simulator
    from mxplain.store import TileStore

Latent = Any  # a Tensor or a tuple of Tensors, batch dimension first


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


#: What an explainer can need of the run (:meth:`Explainer.requirements`), each with the words a
#: refusal uses. A predictor or an editor declares which it provides (:meth:`Predictor.capabilities`,
#: :meth:`Editor.capabilities`); :func:`mxplain.preflight.check_requirements` compares the two when
#: the config is resolved, before anything is written or trained, and ``[run] on_unsupported``
#: says whether an explainer whose needs are not met is an error (the default) or is skipped.
NEEDS: dict[str, str] = {
    "predictor": "a [predictor]",
    "editor": "an [editor]",
    "gradients": "a differentiable predictor",  # gradients of the prediction w.r.t. the tiles
    "torch_module": "a predictor with a torch module",  # torch_module(), for layer-based maps
    "editor_gradients": "a differentiable editor",  # w.r.t. its attributes and latent
    "attributes": "named attributes in the data",  # the lot labels an editor edits
}


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


class Component(ABC):
    """Base of every registered component: a name, a kind and constructor parameters."""

    name: ClassVar[str]
    kind: ClassVar[str]
    #: parameters of a tiny, fast instance: what the conformance suite (tests/test_conformance.py)
    #: builds every registered component with
    test_params: ClassVar[dict[str, Any]] = {}
    #: parameters that may hold NaN or Inf (everywhere else a non-finite number is refused)
    nonfinite_params: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Refuse values out of range with a :class:`~mxplain.errors.UserError` naming the key
        (``params``: every constructor parameter, defaults filled in, types already checked against
        the annotations). Called when the config is resolved; the default accepts everything."""
        return None

    @classmethod
    def footprint(cls, params: dict[str, Any], data: DataShape | None) -> list[Footprint]:
        """Rough memory and disk estimates of this component with ``params`` on data of shape
        ``data`` (``None``: not known before the data is built), checked against the machine before
        the run starts (:mod:`mxplain.preflight`). The default estimates nothing."""
        return []

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """Constructor parameters and their defaults: the keys of the component's config table."""
        sig = inspect.signature(cls.__init__)
        out = {}
        for pname, p in sig.parameters.items():
            if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[pname] = None if p.default is inspect.Parameter.empty else p.default
        return out

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.param_defaults()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class TrainableModel(Component):
    """A component with learned state: ``fit``, ``state_dict``/``load_state_dict``, ``save``/``load``.

    ``state_dict`` returns only tensors, numbers, strings, lists and dicts, so that checkpoints load
    with ``torch.load(weights_only=True)`` (see :mod:`mxplain.checkpoint`).
    """

    device: torch.device = torch.device("cpu")

    @abstractmethod
    def fit(self, store: TileStore, ctx: RunContext) -> dict:
        """Learn from the tile store; return metrics (numbers) for ``metrics.json``."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Learned state, plain data only."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore learned state produced by :meth:`state_dict` (constructor params already set)."""

    def to(self, device: torch.device | str):
        self.device = torch.device(device)
        return self

    def save(self, path: str | Path) -> None:
        from mxplain.checkpoint import save_component

        save_component(self, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu"):
        from mxplain.checkpoint import load_component

        return load_component(cls, path, device)


class NoLearnedState:
    """Mixin for a component with nothing to learn or save (an analytic model, a wrapper of a fixed
    network): ``fit`` does nothing and the state is empty. Put it first: ``class M(NoLearnedState,
    Predictor)``."""

    def fit(self, store, ctx) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Predictor(TrainableModel):
    """Tiles -> property (a scalar per tile, in physical units)."""

    kind: ClassVar[str] = "predictor"
    differentiable: ClassVar[bool] = True

    @abstractmethod
    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` tiles on ``self.device`` -> ``(N,)`` property; differentiable w.r.t. the
        tiles when ``differentiable`` is true. The model is in evaluation mode."""

    def predict(self, tiles: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Batched, gradient-free prediction; accepts tensors or ``uint8``/float arrays."""
        from mxplain.store import to_tensor

        tiles = to_tensor(tiles)
        out = []
        with torch.no_grad():
            for i in range(0, len(tiles), batch_size):
                out.append(self.forward(tiles[i : i + batch_size].to(self.device)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def torch_module(self) -> torch.nn.Module | None:
        """The underlying ``nn.Module`` (for layer-based methods such as GradCAM), if any."""
        return None

    @classmethod
    def capabilities(cls, params: dict[str, Any]) -> frozenset[str]:
        """What this predictor with ``params`` offers explainers (names of :data:`NEEDS`), known
        from the class before anything is trained: ``"gradients"`` when ``differentiable``,
        ``"torch_module"`` when the class overrides :meth:`torch_module`. Override it where the
        parameters decide."""
        caps = {"gradients"} if cls.differentiable else set()
        if cls.torch_module is not Predictor.torch_module:
            caps.add("torch_module")
        return frozenset(caps)

    def compile(self) -> list[str]:
        """Wrap the networks :meth:`forward` runs in ``torch.compile`` (``[run] compile = true``);
        returns the names of what was wrapped. The default compiles nothing."""
        return []


class Editor(TrainableModel):
    """Tile + attribute vector in [0, 1] -> edited tile (a tile of a hypothetical lot)."""

    kind: ClassVar[str] = "editor"
    differentiable: ClassVar[bool] = True
    attributes: tuple[str, ...] = ()

    @abstractmethod
    def encode(self, tiles: torch.Tensor) -> Latent:
        """``(N, 1, H, W)`` tiles -> latent (a tensor or tuple of tensors, batch first)."""

    @abstractmethod
    def decode(self, latent: Latent, attributes: torch.Tensor) -> torch.Tensor:
        """Latent of N tiles and ``(N, K)`` attributes in [0, 1] -> ``(N, 1, H, W)`` tiles in [0, 1].
        Differentiable w.r.t. ``attributes`` when ``differentiable`` is true."""

    def edit(self, tiles: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(tiles), attributes)

    @classmethod
    def capabilities(cls, params: dict[str, Any]) -> frozenset[str]:
        """What this editor with ``params`` offers explainers (names of :data:`NEEDS`):
        ``"editor_gradients"`` when ``differentiable``. Override it where the parameters decide."""
        return frozenset({"editor_gradients"} if cls.differentiable else ())

    def health(self, metrics: dict, store: TileStore | None = None) -> list[tuple[str, str, str]]:
        """The editor's own training against its plugin's known failure signs: ``[(check,
        verdict, reason), ...]`` with ``verdict`` one of ``"pass"``, ``"warn"``, ``"fail"``
        (the trust gate ``editor_health``, :mod:`mxplain.trust`). ``metrics``: what ``fit``
        returned (a loaded checkpoint: ``{"checkpoint": ..., "provenance": ...}``); ``store``: the
        run's tiles (e.g. for the labels' loss floor). The default: no checks."""
        return []

    def compile(self) -> list[str]:
        """Wrap the networks :meth:`decode` (the hot loop of the explainers) runs in
        ``torch.compile`` (``[run] compile = true``); returns the names of what was wrapped. The
        default compiles nothing."""
        return []


def latent_take(latent: Latent, index: torch.Tensor | slice) -> Latent:
    """Rows ``index`` of a latent (tensor or tuple of tensors)."""
    if isinstance(latent, (tuple, list)):
        return type(latent)(latent_take(z, index) for z in latent)
    return latent[index]


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


class Explainer(Component):
    """(predictor, editor or none, tiles of one lot) -> that lot's piece of the results cube."""

    kind: ClassVar[str] = "explainer"
    #: shorthands read by the default :meth:`requirements`
    requires_editor: ClassVar[bool] = False
    requires_gradients: ClassVar[bool] = False

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> frozenset[str]:
        """What this explainer with ``params`` (every constructor parameter, defaults filled in)
        needs of the run: names of :data:`NEEDS`, checked against the config's predictor, editor
        and data when the config is resolved (:func:`mxplain.preflight.check_requirements`). The
        default: a predictor, an editor when ``requires_editor``, a differentiable predictor when
        ``requires_gradients``."""
        return frozenset({"predictor"} | ({"editor"} if cls.requires_editor else set())
                         | ({"gradients"} if cls.requires_gradients else set()))

    @classmethod
    def uses(cls, params: dict[str, Any]) -> frozenset[str]:
        """What this explainer uses where the models offer it, beyond what it needs (the backward
        explainer's ``optimizer = "auto"`` takes gradients where both models declare them, SPSA
        otherwise): the pipeline probes a model's declared gradients before an explainer that
        needs or uses them runs (:func:`mxplain.gradients.probe`). The default:
        :meth:`requirements`."""
        return frozenset(cls.requirements(params))

    def extra_dims(self) -> dict[str, Any]:
        """New cube dimensions and their coordinate values (e.g. ``{"step": values}``)."""
        return {}

    def extra_coords(self) -> dict[str, tuple[str, Any]]:
        """Further coordinates on those dims, as ``{name: (dim, values)}`` (``value`` of ``step``)."""
        return {}

    @abstractmethod
    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        """Every variable this explainer writes, by name (each has ``lot`` as first dim)."""

    @abstractmethod
    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        """Values for one lot, keyed as in :meth:`variables`, without the ``lot`` dimension; the
        ``tile`` axis holds the lot's real tiles only (the cube pads)."""

    def summarize(self, cube, ctx: ExplainContext) -> dict:
        """After all lots: metrics for ``metrics.json`` (figures go to ``ctx.figures_dir``)."""
        return {}


class Dataset(Component):
    """A source of lots: writes (or references) a tile store."""

    kind: ClassVar[str] = "dataset"

    @abstractmethod
    def build(self, path: Path, ctx: RunContext, resume: bool = False) -> TileStore:
        """Write the tile store at ``path`` (or return a reference to an existing one)."""

    def true_sensitivity(self) -> dict[str, float] | None:
        """Ground-truth effect of each attribute on the property, where the dataset knows it."""
        return None

    def simulator(self) -> Simulator | None:
        """The physics that computes this data's property from a tile (:class:`mxplain.simulate.
        Simulator`: batched, deterministic, numpy in and out), where the dataset has one (synthetic
        lots: the pore space's effective diffusivity); explainers reach it as
        :attr:`ExplainContext.simulator`. The default: none."""
        return None

    def reference_editor(self, store: TileStore) -> Editor | None:
        """An editor that edits by the data's own generating process (synthetic lots: each tile
        rendered again from its own seed at the new attributes), for tiles of ``store`` (this
        dataset's tile store): the reference the editor checks are calibrated with (the realism
        ceiling, :mod:`mxplain.realism`). The default: none."""
        return None

    @classmethod
    def data_shape(cls, params: dict[str, Any]) -> DataShape | None:
        """The tile store's size as ``params`` set it, where known without building it (lets
        predictors and editors estimate their footprints); the default: unknown."""
        return None


KINDS = {"predictor": Predictor, "editor": Editor, "explainer": Explainer, "dataset": Dataset}

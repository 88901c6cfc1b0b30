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
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from mxplain.interface_types import (  # noqa: F401 (the interfaces' data, re-exported)
    DataShape,
    ExplainContext,
    Footprint,
    Lot,
    RunContext,
    Variable,
)
from mxplain.report_sections import ReportInput, ReportSection, default_section

if TYPE_CHECKING:
    from mxplain.simulate import Simulator
    from mxplain.store import TileStore

Latent = Any  # a Tensor or a tuple of Tensors, batch dimension first


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
    "generate": "an editor that generates tiles from its latent alone",  # Editor.generate
}


class Component(ABC):
    """Base of every registered component: a name, a kind and constructor parameters."""

    name: ClassVar[str]
    kind: ClassVar[str]
    #: parameters of a tiny, fast instance: what the conformance suite (tests/core/test_conformance.py)
    #: builds every registered component with
    test_params: ClassVar[dict[str, Any]] = {}
    #: parameters that may hold NaN or Inf (everywhere else a non-finite number is refused)
    nonfinite_params: ClassVar[frozenset[str]] = frozenset()
    #: parameters that change how a trained model is *used*, not what it learned: they may be set
    #: next to ``checkpoint`` in the config and then override the checkpoint's own values
    #: (:meth:`TrainableModel.load`); every other key beside a checkpoint is refused
    inference_params: ClassVar[frozenset[str]] = frozenset()

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
        """Constructor parameters and their defaults: the keys of the component's config table.
        A constructor taking ``*args`` or ``**kwargs``, or a parameter without a default, is a
        :class:`~mxplain.errors.PluginError` naming it (scikit-learn's rule: every parameter is
        an explicit config key with a default)."""
        from mxplain.errors import PluginError

        if cls.__init__ is object.__init__:
            return {}
        out = {}
        for pname, p in list(inspect.signature(cls.__init__).parameters.items())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                star = "*" if p.kind is p.VAR_POSITIONAL else "**"
                raise PluginError(f"{cls.__name__}.__init__ takes {star}{pname}: a component's "
                                  f"constructor names each parameter (a config key) explicitly")
            if p.default is inspect.Parameter.empty:
                raise PluginError(f"{cls.__name__}.__init__ parameter {pname!r} has no default: "
                                  f"every constructor parameter needs one")
            out[pname] = p.default
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

    _device: torch.device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        """Where the model computes: the CPU until :meth:`to` (or ``fit`` on ``ctx.device``)
        moves it; not a parameter, so no constructor sets it."""
        return self._device

    @device.setter
    def device(self, device: torch.device | str) -> None:
        self._device = torch.device(device)

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
        self._device = torch.device(device)
        return self

    def save(self, path: str | Path) -> None:
        from mxplain.checkpoint import save_component

        save_component(self, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu",
             params: dict[str, Any] | None = None):
        """The model saved in ``path``; ``params`` (keys of :attr:`inference_params` only) replace
        the checkpoint's values of those parameters."""
        from mxplain.checkpoint import load_component

        return load_component(cls, path, device, params)


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
    #: the module path (in :meth:`torch_module`, e.g. ``"block3"``) whose activations layer-based
    #: maps such as GradCAM use by default; ``None``: the explainer picks the last convolution
    gradcam_layer: ClassVar[str | None] = None

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

    def generate(self, latent: Latent, size: int | None = None) -> torch.Tensor:
        """The tiles of a latent as it is, without an attribute edit (a generative model's
        decoder, e.g. TextureVAE's): ``(N, 1, H, W)`` in [0, 1], differentiable w.r.t. the latent
        when ``differentiable``; ``size``: the tile size where the latent does not fix it. The
        latent-space design explainer walks the latent through it where the editor offers it
        (``"generate"`` in :meth:`capabilities`), through ``decode(latent, lot attributes)``
        otherwise. The default: an editor whose decoder needs attributes has none."""
        raise NotImplementedError(f"the editor {self.name!r} decodes only with attributes "
                                  f"(decode); it does not generate from a latent alone")

    @classmethod
    def capabilities(cls, params: dict[str, Any]) -> frozenset[str]:
        """What this editor with ``params`` offers explainers (names of :data:`NEEDS`):
        ``"editor_gradients"`` when ``differentiable``, ``"generate"`` when the class overrides
        :meth:`generate`. Override it where the parameters decide."""
        caps = {"editor_gradients"} if cls.differentiable else set()
        if cls.generate is not Editor.generate:
            caps.add("generate")
        return frozenset(caps)

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


class Explainer(Component):
    """(predictor, editor or none, tiles of one lot) -> that lot's piece of the results cube."""

    kind: ClassVar[str] = "explainer"
    #: shorthands read by the default :meth:`requirements`
    requires_editor: ClassVar[bool] = False
    requires_gradients: ClassVar[bool] = False
    #: cube variables of the same lot that :meth:`explain_lot` reads from ``ctx.lot_results``,
    #: written before it by another explainer of the run or by the pipeline (``prediction``,
    #: ``reconstruction_prediction``, ...). The run orders its explainers so that each one's
    #: producers run first (:func:`mxplain.components.build_explainers`, the one place the local
    #: and the Dask path build them) and refuses, when the config is resolved, a read that no
    #: explainer of the run writes. A producer is found by the names its :meth:`variables`
    #: declares for a bare :class:`ExplainContext`: a variable that another explainer reads is
    #: declared whatever the run's models.
    reads: ClassVar[tuple[str, ...]] = ()
    #: like :attr:`reads`, but read only where the run has a producer (which then runs first);
    #: without one, :meth:`explain_lot` computes what it needs itself
    reads_optional: ClassVar[tuple[str, ...]] = ()

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
        """After all lots: metrics for ``metrics.json`` (figures go to ``ctx.figures_dir``).
        Reads the cube only: whatever a figure shows (an example tile, its edits) is a variable
        :meth:`explain_lot` writes with the lot, never state kept on the instance, so a resumed
        run, a Dask run and ``mxplain report`` (which calls it again on the run folder's cube,
        with no predictor or editor in ``ctx``) draw the same figures."""
        return {}

    def report_section(self, run: ReportInput) -> ReportSection | None:
        """This explainer's section of the run's report, built from what the run folder holds
        about it (``run``: its ``metrics.json`` block, the cube, the figures; never by running a
        model again); ``None``: nothing to show. The report renders every explainer's section
        through this method (:mod:`mxplain.report_sections`); sections with the same title are
        shown as one. The default: titled with the explainer's name, its summary's top-level
        numbers as one table (rounded on the page) and the figures named ``<name>_*.png``.
        Override it to choose the title, the figures or to add text and tables."""
        return default_section(run)


class Dataset(Component):
    """A source of lots: writes (or references) a tile store.

    What a dataset knows beyond its tiles reaches explainers through :class:`ExplainContext`,
    never by importing its plugin: :meth:`true_sensitivity`, :meth:`simulator`, :meth:`measure`,
    :meth:`segment` (with :attr:`structures`); :meth:`provides` says which of the optional ones a
    class implements."""

    kind: ClassVar[str] = "dataset"
    #: the labelled structures :meth:`segment` returns, in order (the cube's ``structure``
    #: dimension), each with the attribute whose effect it carries (``None``: none); ``{}``: no
    #: segmentation
    structures: ClassVar[dict[str, str | None]] = {}

    @classmethod
    def provides(cls) -> frozenset[str]:
        """The optional knowledge this class implements: ``"measure"``, ``"segment"``,
        ``"edit_fidelity_ceiling"`` for each of those methods it overrides. The pipeline passes
        them on (:class:`ExplainContext` ``measure`` and ``segment``; the editor evaluation's
        fidelity and its ceiling); the conformance suite checks what they return."""
        overridden = {"measure": cls.measure is not Dataset.measure,
                      "segment": cls.segment is not Dataset.segment,
                      "edit_fidelity_ceiling":
                          cls.edit_fidelity_ceiling is not Dataset.edit_fidelity_ceiling}
        return frozenset(n for n, yes in overridden.items() if yes)

    def measure(self, tiles: np.ndarray) -> np.ndarray | None:
        """An independent measurement of the attributes from the pixels alone: ``uint8`` tiles
        ``(N, H, W)`` -> ``(N, K)`` raw measurements (any units, NaN where a tile cannot be
        measured), columns in the order of the tile store's attributes. It judges the editor's
        edits (:func:`mxplain.editor_eval.edit_fidelity`) and the images explainers design
        (``ExplainContext.measure``). The default: no measurement (``None``)."""
        return None

    def segment(self, tiles: np.ndarray) -> dict[str, np.ndarray] | None:
        """Labelled structures of each tile: ``uint8`` tiles ``(N, H, W)`` -> ``{structure: (N, H,
        W) bool}``, one mask per name of :attr:`structures` (``ExplainContext.segment``: where a
        pixel map puts its mass). The default: no segmentation (``None``)."""
        return None

    def edit_fidelity_ceiling(self, store: TileStore, measure, **kwargs) -> dict | None:
        """:func:`mxplain.editor_eval.edit_fidelity` (same ``measure`` and ``kwargs``) of the
        data's own generating process used as the editor: what the protocol lets any editor reach
        on these lots. The default: none (``None``)."""
        return None

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

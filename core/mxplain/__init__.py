"""mxplain: explain deep models of materials microstructure with domain attributes."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mxplain")

from mxplain.errors import MxplainError, NotAvailableError, UserError  # noqa: E402
from mxplain.interfaces import (  # noqa: E402
    Dataset,
    Editor,
    ExplainContext,
    Explainer,
    Lot,
    Predictor,
    RunContext,
    Variable,
)

__all__ = [
    "__version__", "hookimpl", "MxplainError", "NotAvailableError", "UserError", "Dataset",
    "Editor", "ExplainContext", "Explainer", "Lot", "Predictor", "RunContext", "Variable",
]


def run(config=None, out="mxplain-run", **kwargs):
    """Run the pipeline (``config``: a path, a dict like the TOML, or None for the quickstart);
    keyword arguments as ``mxplain run``: device, resume, overwrite, progress. Returns the run
    folder."""
    from mxplain.pipeline import run as _run

    return _run(config, out=out, **kwargs)


def create_predictor(name: str, **params):
    """A registered predictor by name, e.g. ``create_predictor("wideresnet", depth=16)``."""
    from mxplain.plugins import create

    return create("predictor", name, **params)


def create_editor(name: str, **params):
    """A registered editor by name, e.g. ``create_editor("attgan", enc_dim=32)``."""
    from mxplain.plugins import create

    return create("editor", name, **params)


def create_explainer(name: str, **params):
    """A registered explainer by name, e.g. ``create_explainer("forward", steps=21)``."""
    from mxplain.plugins import create

    return create("explainer", name, **params)


def create_dataset(name: str, **params):
    """A registered dataset by name, e.g. ``create_dataset("synthetic", n_lots=12)``."""
    from mxplain.plugins import create

    return create("dataset", name, **params)


def open_results(path):
    """The results cube of a run folder (an ``xarray.Dataset``)."""
    from mxplain.cube import open_results as _open

    return _open(path)


def load_checkpoint(path, device="cpu"):
    """The trained component in a checkpoint file, e.g. ``load_checkpoint("runs/x/models/
    predictor.pt").predict(tiles)``: its class found by the kind and name the file records among
    the registered components, its parameters and state read without executing code
    (``torch.load(weights_only=True)``). ``device``: where its tensors go. A file that is not an
    mxplain checkpoint, or names a component that is not installed, is a ``UserError``."""
    from mxplain.plugins import load_checkpoint as _load

    return _load(path, device)


__all__ += ["run", "create_predictor", "create_editor", "create_explainer", "create_dataset",
            "open_results", "load_checkpoint"]

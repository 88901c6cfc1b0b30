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

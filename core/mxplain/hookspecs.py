"""The plugin hooks: one registration hook per kind of component. Each returns a list of classes."""

import pluggy

hookspec = pluggy.HookspecMarker("mxplain")


@hookspec
def mxplain_predictors():
    """Return the Predictor classes this plugin contributes."""


@hookspec
def mxplain_editors():
    """Return the Editor classes this plugin contributes."""


@hookspec
def mxplain_explainers():
    """Return the Explainer classes this plugin contributes."""


@hookspec
def mxplain_datasets():
    """Return the Dataset classes this plugin contributes."""

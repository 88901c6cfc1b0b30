"""mxplain.hookspecs: one registration hook per kind of component, each returning a list of
classes, which the plugin manager collects from every plugin."""

from __future__ import annotations

import inspect
import types

import pluggy
import pytest

from mxplain import hookimpl, hookspecs
from mxplain.interfaces import KINDS
from mxplain.plugins import HOOKS

SPECS = ("mxplain_predictors", "mxplain_editors", "mxplain_explainers", "mxplain_datasets")


def manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("mxplain")
    pm.add_hookspecs(hookspecs)
    return pm


def test_one_hook_per_kind_of_component_and_no_other():
    specs = {n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if n.startswith("mxplain_")}
    assert specs == set(SPECS) == set(HOOKS.values())
    assert set(HOOKS) == set(KINDS)
    pm = manager()
    for name in SPECS:
        assert inspect.signature(getattr(hookspecs, name)).parameters == {}
        assert getattr(pm.hook, name).spec is not None, f"{name} is not marked as a hookspec"


def test_the_manager_collects_every_plugins_list():
    pm = manager()
    first = types.SimpleNamespace(mxplain_datasets=hookimpl(lambda: ["a", "b"]))
    second = types.SimpleNamespace(mxplain_datasets=hookimpl(lambda: ["c"]),
                                   mxplain_editors=hookimpl(lambda: ["e"]))
    pm.register(first, name="first")
    pm.register(second, name="second")
    assert sorted(x for part in pm.hook.mxplain_datasets() for x in part) == ["a", "b", "c"]
    assert pm.hook.mxplain_editors() == [["e"]] and pm.hook.mxplain_predictors() == []


def test_a_hook_that_is_not_specified_is_refused():
    pm = manager()
    pm.register(types.SimpleNamespace(mxplain_explainer=hookimpl(lambda: [])), name="typo")
    with pytest.raises(pluggy.PluginValidationError, match="mxplain_explainer"):
        pm.check_pending()

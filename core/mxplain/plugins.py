"""Plugin discovery and the component registry.

Built-in plugins are found through the ``mxplain`` entry-point group exactly as third-party ones. A
plugin that fails to import is a warning naming it and its distribution; duplicate component names
are an error naming both providers; an unknown name is an error listing what exists.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import warnings
from dataclasses import dataclass

import pluggy

from mxplain import hookspecs
from mxplain.errors import PluginError, UserError
from mxplain.interfaces import KINDS

ENTRY_POINT_GROUP = "mxplain"
HOOKS = {
    "predictor": "mxplain_predictors",
    "editor": "mxplain_editors",
    "explainer": "mxplain_explainers",
    "dataset": "mxplain_datasets",
}


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the rest of mxplain works without it."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    cls: type
    plugin: str
    distribution: str
    version: str


_pm: pluggy.PluginManager | None = None
_dists: dict[str, tuple[str, str]] = {}
_registry: dict[str, dict[str, Entry]] | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every entry-point plugin loaded."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("mxplain")
        pm.add_hookspecs(hookspecs)
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "unknown"
            try:
                module = ep.load()
                if pm.is_registered(module) or pm.has_plugin(ep.name):
                    continue
                pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not take mxplain down
                warnings.warn(
                    f"mxplain plugin {ep.name!r} (distribution {dist!r}) failed to load: "
                    f"{type(exc).__name__}: {exc}",
                    PluginWarning,
                    stacklevel=2,
                )
                continue
            _dists[ep.name] = (dist, version)
        _pm = pm
    return _pm


def register(plugin: object, name: str | None = None, distribution: str = "local") -> None:
    """Register a plugin object (a module or class with hookimpls) at run time, e.g. from a script."""
    pm = get_plugin_manager()
    name = pm.register(plugin, name=name)
    _dists[name] = (distribution, "local")
    _invalidate()


def reset() -> None:
    """Forget every loaded plugin (the next lookup discovers entry points again)."""
    global _pm
    _pm = None
    _dists.clear()
    _invalidate()


def _invalidate() -> None:
    global _registry
    _registry = None


def registry() -> dict[str, dict[str, Entry]]:
    """kind -> name -> Entry, for every registered component."""
    global _registry
    if _registry is not None:
        return _registry
    pm = get_plugin_manager()
    reg: dict[str, dict[str, Entry]] = {k: {} for k in HOOKS}
    for kind, hook in HOOKS.items():
        for impl in getattr(pm.hook, hook).get_hookimpls():
            classes = impl.function() or []
            dist, version = _dists.get(impl.plugin_name, ("unknown", "unknown"))
            for cls in classes:
                _check_class(cls, kind, impl.plugin_name)
                if cls.name in reg[kind]:
                    other = reg[kind][cls.name]
                    raise PluginError(
                        f"duplicate {kind} name {cls.name!r}: provided by plugin "
                        f"{other.plugin!r} ({other.distribution}) and plugin "
                        f"{impl.plugin_name!r} ({dist})"
                    )
                reg[kind][cls.name] = Entry(cls.name, kind, cls, impl.plugin_name, dist, version)
    _registry = reg
    return reg


def _check_class(cls: type, kind: str, plugin: str) -> None:
    base = KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"plugin {plugin!r} returned {cls!r} as a {kind}, not a {base.__name__}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.lower():
        raise PluginError(f"plugin {plugin!r}: {cls.__name__}.name must be a lowercase string")


def available(kind: str) -> list[str]:
    return sorted(registry()[kind])


def get(kind: str, name: str) -> type:
    """The class registered as ``name`` of ``kind``; an unknown name lists the available ones."""
    if kind not in HOOKS:
        raise UserError(f"unknown component kind {kind!r}; kinds are {', '.join(HOOKS)}")
    entries = registry()[kind]
    if name not in entries:
        names = ", ".join(sorted(entries)) or "none"
        hint = difflib.get_close_matches(name, list(entries), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise PluginError(f"unknown {kind} {name!r}{extra}; available {kind}s: {names}")
    return entries[name].cls


def check_params(cls: type, params: dict, where: str) -> None:
    """Unknown keys are errors that suggest the closest valid key."""
    valid = cls.param_defaults()
    for key in params:
        if key not in valid:
            hint = difflib.get_close_matches(key, list(valid), n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            keys = ", ".join(sorted(valid)) or "none"
            raise UserError(f"unknown key {key!r} in {where}{extra} (valid keys: {keys})")


def create(kind: str, name: str, **params):
    """Instantiate a registered component from its name and parameters."""
    cls = get(kind, name)
    check_params(cls, params, f"[{kind}] {name!r}")
    return cls(**params)


def list_components() -> list[dict[str, str]]:
    """Every registered component as ``{name, kind, distribution, version}``."""
    out = []
    for kind, entries in registry().items():
        for e in sorted(entries.values(), key=lambda e: e.name):
            out.append(
                {"name": e.name, "kind": kind, "distribution": e.distribution, "version": e.version}
            )
    return out


def load_checkpoint(path, device="cpu"):
    """The component saved in ``path``, whatever its kind: its class found by the checkpoint's
    kind and name among the registered components, rebuilt without executing code from the file
    (``mxplain.load_checkpoint``). A predictor predicts, an editor edits as when it was saved."""
    from mxplain.checkpoint import load_component, read_checkpoint

    payload = read_checkpoint(path)
    return load_component(get(payload["kind"], payload["name"]), path, device)

"""The TOML run config: loading, validation (unknown keys suggest the closest valid one), defaults.

Top-level tables: ``[data]``, ``[predictor]``, ``[editor]``, ``[explain.<explainer name>]``, ``[run]``,
``[trust]`` (the trust gates' thresholds, :mod:`mxplain.trust`).
``name`` selects a registered plugin; other keys are that plugin's constructor parameters.
``checkpoint = "PATH"`` in ``[predictor]`` or ``[editor]`` loads a trained model instead of training.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
import math
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from mxplain import plugins, preflight
from mxplain.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: what ``[run] batch_size = "auto"`` means on a CPU (no memory probe there: batching gains little)
CPU_AUTO_BATCH = 64

TABLES = ("data", "predictor", "editor", "explain", "run", "trust")
# [run] keys: how the pipeline runs, independent of any plugin.
RUN_DEFAULTS: dict[str, Any] = {
    "seed": 0,  # seeds every component that has no seed of its own
    "device": "auto",  # auto | cpu | cuda | cuda:N (the CLI's --device overrides it)
    "explain_tiles": 32,  # tiles per lot that explainers and the cube cover (0: all)
    "batch_size": 256,  # batch size of gradient-free inference (prediction, reconstruction); or "auto"
    "compile": False,  # torch.compile the predictor's and editor's networks for the explain stage
    "report": True,  # write the HTML report at the end
    "editor_eval_tiles": 6,  # tiles per lot for the editor's reconstruction and fidelity checks
    "editor_realism_tiles": 512,  # tiles per class of the editor's realism test (0: off)
    "scheduler": None,  # Dask scheduler address: explain lots on its workers (--scheduler)
    "workers": None,  # explain lots on a local Dask cluster of this many processes (--workers)
    "on_unsupported": "error",  # an explainer the config cannot run: "error" or "skip" it
}
RUN_DOC = {
    "seed": "seed for every component that has no seed of its own",
    "device": "auto, cpu, cuda or cuda:N (the CLI's --device overrides it)",
    "explain_tiles": "tiles per lot that the explainers and the results cube cover (0: all)",
    "batch_size": "batch size of inference for prediction and reconstruction, an integer >= 1 or "
                  "\"auto\": on CUDA the fastest power of two that the free GPU memory holds, found by "
                  "a probe of editor decode + predictor before the explain stage (the chosen value is "
                  "in metrics.json, provenance.batch_size; the model evaluations before it use "
                  f"{CPU_AUTO_BATCH}); on the CPU \"auto\" is {CPU_AUTO_BATCH}. "
                  "`[explain.forward] batch_size = \"auto\"` takes this value",
    "compile": "torch.compile the predictor's and editor's networks for the explain stage (pays "
               "off on CUDA; a model that cannot be compiled runs eagerly, with a warning; a "
               "resumed run may switch it)",
    "report": "write the HTML report at the end of the run",
    "editor_eval_tiles": "tiles per lot for the editor's reconstruction and edit-fidelity checks",
    "editor_realism_tiles": "tiles per class (real, edited) of the editor's realism test, a "
                            "classifier two-sample test: a small CNN trained on half of the lots "
                            "tells real tiles from the editor's reconstructions and from its "
                            "+/-0.35 edits, ROC AUC on the other half (0.5: indistinguishable; "
                            "`editor.evaluation.realism` in metrics.json; docs/concepts.md); "
                            "seeded by `seed`; an integer >= 0, 0: off",
    "scheduler": "Dask scheduler address (tcp://host:8786): lots are explained on its workers, "
                 "one model copy per worker (the CLI's --scheduler overrides it; unset: this process)",
    "workers": "explain lots on a local Dask cluster of this many worker processes, one thread "
               "each (the CLI's --workers overrides it; unset: this process)",
    "on_unsupported": "what to do with an explainer whose needs (`Explainer.requirements`: a "
                      "predictor, an editor, gradients, a torch module, named attributes) the "
                      "config's predictor, editor and data do not meet, found when the config is "
                      "resolved, before anything trains: \"error\" (one line naming the explainer "
                      "and why) or \"skip\" (the run goes on without it; the reason is in "
                      "metrics.json, `explain_skipped`, and in the report). A predictor or editor "
                      "that declares gradients but returns none is found by a probe on two "
                      "tiles once it is trained, and treated the same way (with \"skip\": as not "
                      "differentiable, `gradient_probe` in its metrics)",
}
MODEL_EXTRA_KEYS = ("name", "checkpoint")
#: [run] keys and what they take (the rest: the type of their default); checked by _check_run
RUN_RULES: dict[str, tuple[str, ...]] = {
    "seed": ("int", ">=0"), "device": ("str",), "explain_tiles": ("int", ">=0"),
    "editor_eval_tiles": ("int", ">=1"), "editor_realism_tiles": ("int", ">=0"),
    "report": ("bool",),
}  # scheduler and workers: mxplain.distributed.check_options, before the run folder is made

#: Rules for keys that mean the same in every component's table, applied to numbers only (after the
#: type check): (pattern on the key, the annotation types it applies to, the rule, what it means).
COMMON_RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (r"lr|lr_\w+|\w+_lr", ("float",), ">0"),  # learning rates (lr, lr_latent, classifier_warmup_lr)
    (r"epochs", ("int",), ">=1"),
    (r"\w+_epochs", ("int",), ">=0"),  # warm-up epochs: 0 = none
    (r"batch_size", ("int",), ">=1"),
    (r"seed", ("int",), ">=0"),
    (r"max_tiles_per_lot|max_tiles", ("int",), ">=0"),
    (r"(\w+_)?dropout", ("float",), "[0,1)"),
    (r"max_iter|(\w+_)?steps|tiles_per_lot|n_lots", ("int",), ">=1"),
)
_RULE_TEXT = {">0": "> 0", ">=0": ">= 0", ">=1": ">= 1", "[0,1)": "in [0, 1)"}
_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "list": "a list", "tuple": "a list", "dict": "a table",
               "None": "unset"}


def quickstart_path() -> Path:
    return Path(str(resources.files("mxplain") / "data" / "quickstart.toml"))


def load(path: str | Path | None) -> dict:
    """Read and validate a config file; ``None`` gives the packaged quickstart."""
    path = quickstart_path() if path is None else Path(path)
    if not path.is_file():
        raise UserError(f"config {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config {str(path)!r} is not valid TOML: {exc}") from None
    base = path.parent
    return resolve(raw, where=str(path), base=base)


def _suggest(key: str, valid) -> str:
    hint = difflib.get_close_matches(key, list(valid), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"{where}: [{key}] must be a table")
    return value


_KNOWN_TYPES = {"int", "float", "bool", "str", "list", "tuple", "dict", "None"}


def param_types(cls, key: str) -> frozenset[str] | None:
    """The types constructor parameter ``key`` of ``cls`` takes, from its annotation (``int``,
    ``float | None``, ``list[str]``, ``Optional[int]``) or else from its default's type; ``None``
    where that says nothing checkable (no annotation and a ``None`` default, ``Any``, a class)."""
    try:
        p = inspect.signature(cls.__init__).parameters[key]
    except (KeyError, TypeError, ValueError):
        return None
    ann = p.annotation
    if ann is not inspect.Parameter.empty:
        text = ann if isinstance(ann, str) else getattr(ann, "__name__", None) or str(ann)
        text = text.strip().strip("'\"")  # a quoted annotation under `from __future__ import`
        text = re.sub(r"(typing\.)?Optional\[(.*)\]$", r"\2 | None", text.strip())
        names = {re.sub(r"\[.*$", "", t.strip()).removeprefix("typing.") for t in text.split("|")}
        names = {"None" if n == "NoneType" else n for n in names}
        names = {n.lower() if n in ("List", "Tuple", "Dict") else n for n in names}
        return frozenset(names) if names <= _KNOWN_TYPES else None
    default = p.default
    if default is inspect.Parameter.empty or default is None:
        return None
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"),
                    ((list, tuple), "list"), (dict, "dict")):
        if isinstance(default, t):
            return frozenset({name} | ({"float"} if name == "float" else set()))
    return None


def _type_ok(value: Any, types: frozenset[str]) -> bool:
    if isinstance(value, bool):
        return "bool" in types
    if isinstance(value, int):
        return bool({"int", "float"} & types)
    if isinstance(value, float):
        return "float" in types
    if isinstance(value, (list, tuple)):
        return bool({"list", "tuple"} & types)
    for t, name in ((str, "str"), (dict, "dict")):
        if isinstance(value, t):
            return name in types
    return value is None and "None" in types


def _show(value: Any) -> str:
    """A config value as TOML would spell it (true, nan, "text")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # a TOML basic string (JSON's escapes): one line whatever it holds
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', str(k)) else _show(str(k))}"
                               f" = {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _needs(types) -> str:
    order = ("int", "float", "bool", "str", "list", "tuple", "dict", "None")
    names = [_TYPE_NAMES[t] for t in order if t in types and t != "None"]
    if "int" in types and "float" in types:
        names.remove("an integer")
    names = list(dict.fromkeys(names))
    return " or ".join(names) if names else "unset"


def _nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_nonfinite(v) for v in value)
    if isinstance(value, dict):
        return any(_nonfinite(v) for v in value.values())
    return False


def _rule_ok(value: Any, rule: str) -> bool:
    if rule == ">0":
        return value > 0
    if rule == ">=0":
        return value >= 0
    if rule == ">=1":
        return value >= 1
    if rule == "[0,1)":
        return 0 <= value < 1
    raise ValueError(f"unknown rule {rule!r}")  # pragma: no cover


def check_value(table: str, key: str, value: Any, types: frozenset[str] | None,
                allow_nonfinite: bool = False) -> None:
    """One config value: no NaN/Inf (unless allowed), the right type, the common rules of its key
    (:data:`COMMON_RULES`); a :class:`UserError` naming ``[table] key`` otherwise."""
    head = f"[{table}] {key} = {_show(value)}"
    if not allow_nonfinite and _nonfinite(value):
        raise UserError(f"{head}: NaN and Inf are not allowed here")
    if types is not None and not _type_ok(value, types):
        raise UserError(f"{head}: needs {_needs(types)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or types is None:
        return
    for pattern, applies, rule in COMMON_RULES:
        if re.fullmatch(pattern, key) and set(applies) & types and not _rule_ok(value, rule):
            raise UserError(f"{head}: must be {_RULE_TEXT[rule]}")


def _check_component(cls, table: str, user: dict, params: dict) -> None:
    """Types and common rules of the keys the user set, then the component's own ranges."""
    for key, value in user.items():
        check_value(table, key, value, param_types(cls, key), key in cls.nonfinite_params)
    try:
        cls.check_params(dict(params))
    except UserError as exc:
        msg = str(exc)
        raise UserError(msg if msg.startswith("[") else f"[{table}] {msg}") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:  # a check
        # tripping over a value it did not expect
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"[{table}] ({cls.name!r}) parameters refused: {type(exc).__name__}: "
                        f"{first}") from None


def _component(raw: dict, kind: str, table: str, where: str, base: Path) -> dict | None:
    cfg = _table(raw, table, where)
    if not cfg:
        return None
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"{where}: [{table}] needs name = \"<registered {kind} name>\"")
    cls = plugins.get(kind, name)
    checkpoint = cfg.pop("checkpoint", None)
    valid = set(cls.param_defaults())
    for key in cfg:
        if key not in valid:
            extra = _suggest(key, valid | ({"checkpoint"} if kind != "dataset" else set()))
            raise UserError(f"{where}: unknown key {key!r} in [{table}] ({kind} {name!r}){extra}")
    params = {**{k: v for k, v in cls.param_defaults().items()}, **cfg}
    try:
        _check_component(cls, table, cfg, params)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    out = {"name": name, **params}
    if checkpoint is not None:
        if kind == "dataset":
            raise UserError(f"{where}: [data] takes no checkpoint")
        if not isinstance(checkpoint, str):
            raise UserError(f"{where}: [{table}] checkpoint must be a path string")
        fixed = sorted(set(cfg) - set(cls.inference_params))
        if fixed:
            may = ", ".join(sorted(cls.inference_params)) or "none"
            raise UserError(f"{where}: [{table}] {', '.join(fixed)}: fixed by the checkpoint, "
                            f"which was trained with its own values (keys that may be set next "
                            f"to a checkpoint: {may}); drop them, or drop checkpoint to train")
        out = {"name": name, **cfg}
        out["checkpoint"] = (checkpoint if checkpoint.startswith("package:")  # mxplain.resources
                             else str((base / checkpoint) if not Path(checkpoint).is_absolute()
                                      else Path(checkpoint)))
    return out


def resolve(raw: dict, where: str = "config", base: Path | None = None) -> dict:
    """Validate a parsed config and fill in defaults; returns a new dict."""
    base = base or Path.cwd()
    raw = copy.deepcopy(raw)
    for key in raw:
        if key not in TABLES:
            raise UserError(f"{where}: unknown table [{key}]{_suggest(key, TABLES)}")
    out: dict[str, Any] = {}
    data = _component(raw, "dataset", "data", where, base)
    if data is None:
        raise UserError(f"{where}: [data] is required (e.g. name = \"synthetic\")")
    out["data"] = data
    for kind, table in (("predictor", "predictor"), ("editor", "editor")):
        comp = _component(raw, kind, table, where, base)
        if comp is not None:
            out[table] = comp
    explain = _table(raw, "explain", where)
    out["explain"] = {}
    for ename, ecfg in explain.items():
        if not isinstance(ecfg, dict):
            raise UserError(f"{where}: [explain.{ename}] must be a table")
        ecfg = dict(ecfg)
        if "name" in ecfg and ecfg.pop("name") != ename:
            raise UserError(f"{where}: [explain.{ename}] selects its explainer by the table name; "
                            f"remove its name key")
        comp = _component({f"explain.{ename}": {"name": ename, **ecfg}}, "explainer",
                          f"explain.{ename}", where, base)
        comp = dict(comp)
        comp.pop("name")
        out["explain"][ename] = comp
    run = _table(raw, "run", where)
    for key in run:
        if key not in RUN_DEFAULTS:
            raise UserError(f"{where}: unknown key {key!r} in [run]{_suggest(key, RUN_DEFAULTS)}")
    out["run"] = {**RUN_DEFAULTS, **run}
    _check_run(out["run"], where)
    from mxplain.trust import resolve_trust  # thresholds of the trust gates

    out["trust"] = resolve_trust(_table(raw, "trust", where), where)
    _check_requirements(out, where)
    return out


def _check_run(run: dict, where: str) -> None:
    for key, value in run.items():
        if key in ("batch_size", "compile"):  # their own checks and messages, below
            continue
        rules = RUN_RULES.get(key)
        if rules is None:  # a key without its own rule: the type of its default
            default = RUN_DEFAULTS.get(key)
            rules = () if default is None else (type(default).__name__,)
        types = frozenset(r for r in rules if r in _KNOWN_TYPES) or None
        try:
            check_value("run", key, value, types)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        for rule in rules:
            if rule in _RULE_TEXT and value is not None and not _rule_ok(value, rule):
                raise UserError(f"{where}: [run] {key} = {_show(value)}: must be "
                                f"{_RULE_TEXT[rule]}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", run["device"].strip().lower()):
        raise UserError(f"{where}: [run] device = {_show(run['device'])}: use auto, cpu, cuda or "
                        f"cuda:N")
    bs = run["batch_size"]
    if not (bs == "auto" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1)):
        raise UserError(f'{where}: [run] batch_size = {bs!r}; needs an integer >= 1 or "auto"')
    if not isinstance(run["compile"], bool):
        raise UserError(f"{where}: [run] compile = {run['compile']!r}; needs true or false")
    if run["on_unsupported"] not in ("error", "skip"):
        raise UserError(f"{where}: [run] on_unsupported = {_show(run['on_unsupported'])}: use "
                        f"\"error\" or \"skip\"")


def fixed_batch_size(run: dict) -> int:
    """``[run] batch_size`` as an integer where no probe is run (``"auto"``: the CPU value)."""
    bs = run["batch_size"]
    return CPU_AUTO_BATCH if bs == "auto" else int(bs)


def _check_requirements(cfg: dict, where: str) -> None:
    """Every explainer's needs against the config (:func:`mxplain.preflight.check_requirements`):
    an error unless ``[run] on_unsupported = "skip"``."""
    preflight.check_requirements(cfg, where)


def to_toml(cfg: dict) -> str:
    """The resolved config as TOML (keys whose value is None are left out: TOML has no null)."""
    import tomli_w

    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if v is not None}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    return tomli_w.dumps(clean(cfg))

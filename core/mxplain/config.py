"""The TOML run config: loading, validation (unknown keys suggest the closest valid one), defaults.

Top-level tables: ``[data]``, ``[predictor]``, ``[editor]``, ``[explain.<explainer name>]``, ``[run]``.
``name`` selects a registered plugin; other keys are that plugin's constructor parameters.
``checkpoint = "PATH"`` in ``[predictor]`` or ``[editor]`` loads a trained model instead of training.
"""

from __future__ import annotations

import copy
import difflib
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from mxplain import plugins
from mxplain.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: what ``[run] batch_size = "auto"`` means on a CPU (no memory probe there: batching gains little)
CPU_AUTO_BATCH = 64

TABLES = ("data", "predictor", "editor", "explain", "run")
# [run] keys: how the pipeline runs, independent of any plugin.
RUN_DEFAULTS: dict[str, Any] = {
    "seed": 0,  # seeds every component that has no seed of its own
    "device": "auto",  # auto | cpu | cuda | cuda:N (the CLI's --device overrides it)
    "explain_tiles": 32,  # tiles per lot that explainers and the cube cover (0: all)
    "batch_size": 256,  # batch size of gradient-free inference (prediction, reconstruction); or "auto"
    "compile": False,  # torch.compile the predictor's and editor's networks for the explain stage
    "report": True,  # write the HTML report at the end
    "editor_eval_tiles": 6,  # tiles per lot for the editor's reconstruction and fidelity checks
    "scheduler": None,  # Dask scheduler address: explain lots on its workers (--scheduler)
    "workers": None,  # explain lots on a local Dask cluster of this many processes (--workers)
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
    "scheduler": "Dask scheduler address (tcp://host:8786): lots are explained on its workers, "
                 "one model copy per worker (the CLI's --scheduler overrides it; unset: this process)",
    "workers": "explain lots on a local Dask cluster of this many worker processes, one thread "
               "each (the CLI's --workers overrides it; unset: this process)",
}
MODEL_EXTRA_KEYS = ("name", "checkpoint")


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
    out = {"name": name, **params}
    if checkpoint is not None:
        if kind == "dataset":
            raise UserError(f"{where}: [data] takes no checkpoint")
        if not isinstance(checkpoint, str):
            raise UserError(f"{where}: [{table}] checkpoint must be a path string")
        out["checkpoint"] = str((base / checkpoint) if not Path(checkpoint).is_absolute()
                                else Path(checkpoint))
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
        comp = _component({"t": {"name": ename, **ecfg}}, "explainer", "t", where, base)
        comp = dict(comp)
        comp.pop("name")
        out["explain"][ename] = comp
    run = _table(raw, "run", where)
    for key in run:
        if key not in RUN_DEFAULTS:
            raise UserError(f"{where}: unknown key {key!r} in [run]{_suggest(key, RUN_DEFAULTS)}")
    out["run"] = {**RUN_DEFAULTS, **run}
    _check_run(out["run"], where)
    _check_requirements(out, where)
    return out


def _check_run(run: dict, where: str) -> None:
    bs = run["batch_size"]
    if not (bs == "auto" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1)):
        raise UserError(f'{where}: [run] batch_size = {bs!r}; needs an integer >= 1 or "auto"')
    if not isinstance(run["compile"], bool):
        raise UserError(f"{where}: [run] compile = {run['compile']!r}; needs true or false")


def fixed_batch_size(run: dict) -> int:
    """``[run] batch_size`` as an integer where no probe is run (``"auto"``: the CPU value)."""
    bs = run["batch_size"]
    return CPU_AUTO_BATCH if bs == "auto" else int(bs)


def _check_requirements(cfg: dict, where: str) -> None:
    for ename in cfg["explain"]:
        cls = plugins.get("explainer", ename)
        if cls.requires_editor and "editor" not in cfg:
            raise UserError(f"{where}: [explain.{ename}] needs an [editor]")
        if "predictor" not in cfg:
            raise UserError(f"{where}: [explain.{ename}] needs a [predictor]")


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

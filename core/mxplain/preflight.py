"""Checks of a resolved config against the machine and the files it names, before anything is
written: what every explainer needs of the run (:func:`check_requirements`: its
:meth:`~mxplain.interfaces.Explainer.requirements` against the predictor's and the editor's
declared capabilities and the data's attribute names), checkpoints (a file, an mxplain checkpoint
of the right kind, trained on the tile size and the attributes the data has) and sizes (every
component's :meth:`~mxplain.interfaces.Component.footprint` against the memory of the host or the
GPU and the free disk space where the output goes).

The estimates are rough (within a factor of a few): only what cannot fit is refused, with one line
naming the config keys that set the size.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mxplain import plugins
from mxplain.errors import UserError
from mxplain.interfaces import NEEDS, DataShape, Footprint

TABLES = (("dataset", "data"), ("predictor", "predictor"), ("editor", "editor"))


def gib(n: float) -> str:
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.1f} KiB"


def host_memory() -> int | None:
    """Physical memory of this machine in bytes (``None`` where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def device_memory(device_spec: str | None) -> tuple[int | None, str]:
    """Memory of the device a run with ``device_spec`` computes on, and its name: the GPU's total
    memory for a CUDA device, the host's otherwise (also when the spec cannot be resolved here)."""
    try:
        import torch

        from mxplain.device import resolve_device

        dev = resolve_device(device_spec)
        if dev.type == "cuda":
            return int(torch.cuda.get_device_properties(dev).total_memory), f"GPU {dev}"
    except (UserError, RuntimeError, ImportError):
        pass
    return host_memory(), "this machine"


def free_disk(path: Path) -> tuple[int | None, Path]:
    """Free bytes on the file system that ``path`` (or its nearest existing parent) is on."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free), p
    except OSError:
        return None, p


def data_shape(cfg: dict) -> DataShape | None:
    """The tile store's shape as ``[data]`` sets it (``None`` where not known before building)."""
    data = cfg["data"]
    cls = plugins.get("dataset", data["name"])
    return cls.data_shape({k: v for k, v in data.items() if k != "name"})


def _offered(cfg: dict, kind: str) -> tuple[str, frozenset[str]] | None:
    """``(name, capabilities)`` of the config's predictor or editor (``None``: the config has
    none), from its class: a checkpoint holds a model of the configured class."""
    comp = cfg.get(kind)
    if not comp:
        return None
    cls = plugins.get(kind, comp["name"])
    params = {k: v for k, v in comp.items() if k not in ("name", "checkpoint")}
    return comp["name"], frozenset(cls.capabilities({**cls.param_defaults(), **params}))


def _unmet(need: str, predictor, editor, attributes) -> str | None:
    """Why ``need`` is not met by the config, or ``None`` when it is (or cannot be known yet)."""
    if need in ("predictor", "gradients", "torch_module") and predictor is None:
        return "needs a [predictor]"
    if need in ("editor", "editor_gradients") and editor is None:
        return "needs an [editor]"
    if need in ("gradients", "torch_module") and predictor is not None \
            and need not in predictor[1]:
        why = ("is not (differentiable = False)" if need == "gradients" else
               "has none (its class does not override torch_module())")
        return f"needs {NEEDS[need]}; [predictor] {predictor[0]!r} {why}"
    if need == "editor_gradients" and need not in editor[1]:
        return f"needs {NEEDS[need]}; [editor] {editor[0]!r} is not (differentiable = False)"
    if need == "attributes" and attributes is not None and not attributes:
        return f"needs {NEEDS[need]}; [data] names none"
    return None


def unsupported(cfg: dict) -> dict[str, str]:
    """``{explainer: why}`` for every ``[explain.<name>]`` whose
    :meth:`~mxplain.interfaces.Explainer.requirements` the config does not meet (the first unmet
    need, in the order of :data:`~mxplain.interfaces.NEEDS`)."""
    predictor, editor = _offered(cfg, "predictor"), _offered(cfg, "editor")
    explain = cfg.get("explain", {})
    shape = data_shape(cfg) if explain and "data" in cfg else None
    attributes = None if shape is None else shape.attributes
    out = {}
    for ename, params in explain.items():
        cls = plugins.get("explainer", ename)
        needs = frozenset(cls.requirements({**cls.param_defaults(), **params}))
        unknown = sorted(needs - set(NEEDS))
        if unknown:
            raise UserError(f"explainer {ename!r} declares unknown requirements {unknown} (known: "
                            f"{', '.join(NEEDS)})")
        for need in (n for n in NEEDS if n in needs):
            why = _unmet(need, predictor, editor, attributes)
            if why is not None:
                out[ename] = why
                break
    return out


def check_requirements(cfg: dict, where: str = "config") -> dict[str, str]:
    """What :func:`unsupported` finds: with ``[run] on_unsupported = "error"`` (the default) the
    first is a :class:`UserError`; with ``"skip"`` they are returned, ``{explainer: why}``, for
    the run to skip and record."""
    skipped = unsupported(cfg)
    if skipped and cfg.get("run", {}).get("on_unsupported", "error") != "skip":
        ename, why = next(iter(skipped.items()))
        raise UserError(f"{where}: [explain.{ename}] {why}; remove [explain.{ename}] or set "
                        f"[run] on_unsupported = \"skip\"")
    return skipped


def _keys_text(table: str, keys: tuple[str, ...], params: dict) -> str:
    shown = [f"{k} = {params[k]!r}" for k in keys if params.get(k) is not None]
    return f"[{table}] " + ", ".join(shown) if shown else f"[{table}]"


def check_sizes(cfg: dict, out: Path | None, device_spec: str | None = None,
                check_disk: bool = True, where: str = "config") -> None:
    """Refuse a config whose components cannot fit in memory or on disk (:class:`UserError`)."""
    shape = data_shape(cfg)
    host = host_memory()
    dev_mem, dev_name = device_memory(device_spec or cfg["run"].get("device"))
    disk, disk_at = free_disk(out) if (out is not None and check_disk) else (None, None)
    items: list[tuple[str, dict, Any]] = []
    for kind, table in TABLES:
        if table in cfg:
            items.append((table, cfg[table], plugins.get(kind, cfg[table]["name"])))
    for ename, params in cfg.get("explain", {}).items():
        items.append((f"explain.{ename}", params, plugins.get("explainer", ename)))
    for table, comp, cls in items:
        params = {k: v for k, v in comp.items() if k not in ("name", "checkpoint")}
        if "checkpoint" in comp and table in ("predictor", "editor"):
            continue  # nothing is trained; the loaded model's size is the checkpoint's
        for fp in cls.footprint(params, shape) or []:
            _compare(fp, table, params, host, dev_mem, dev_name, disk, disk_at, where)


def _compare(fp: Footprint, table, params, host, dev_mem, dev_name, disk, disk_at, where) -> None:
    keys = _keys_text(table, fp.keys, params)
    limit, name = (dev_mem, dev_name) if fp.on_device else (host, "this machine")
    if limit is not None and fp.memory > limit:
        raise UserError(f"{where}: {keys}: {fp.what} would need ~{gib(fp.memory)} of memory, "
                        f"{name} has {gib(limit)}; lower these values")
    if disk is not None and fp.disk > disk:
        raise UserError(f"{where}: {keys}: {fp.what} would need ~{gib(fp.disk)} on disk, "
                        f"{str(disk_at)!r} has {gib(disk)} free; lower these values or choose "
                        f"another --out")


def check_disk(nbytes: int, out: Path, what: str, hint: str = "") -> None:
    """Refuse writing ~``nbytes`` at ``out`` when its file system has less free space."""
    disk, at = free_disk(out)
    if disk is not None and nbytes > disk:
        raise UserError(f"{what} would need ~{gib(nbytes)} on disk, {str(at)!r} has {gib(disk)} "
                        f"free{hint}")


def check_checkpoints(cfg: dict, where: str = "config") -> None:
    """Every ``checkpoint = PATH``: a file, an mxplain checkpoint (read without executing code,
    :func:`mxplain.checkpoint.read_checkpoint`) of the configured kind and name, trained on the
    data's tile size."""
    from mxplain.checkpoint import read_checkpoint

    shape = None
    for kind in ("predictor", "editor"):
        comp = cfg.get(kind)
        if not comp or "checkpoint" not in comp:
            continue
        path = _checkpoint_path(comp["checkpoint"])
        if path is None:
            continue
        head = f"{where}: [{kind}] checkpoint {str(path)!r}"
        if path.is_dir():
            raise UserError(f"{head} is a directory, not a file")
        if not path.exists():
            raise UserError(f"{head} does not exist")
        payload = read_checkpoint(path)  # no code executed; kind, name, params, state checked
        if (payload["kind"], payload["name"]) != (kind, comp["name"]):
            raise UserError(f"{head} holds a {payload['kind']} {payload['name']!r}, not the "
                            f"{kind} {comp['name']!r} of [{kind}]")
        trained = payload["state"].get("tile_size")
        if isinstance(trained, int) and not isinstance(trained, bool) and trained > 0:
            shape = shape or data_shape(cfg)
            if shape is not None and shape.tile_size != trained:
                raise UserError(f"{head} was trained on {trained} px tiles, the data's are "
                                f"{shape.tile_size} px; train one on this data (remove the "
                                f"checkpoint key) or use tiles of {trained} px")
        if kind == "editor":
            shape = shape or data_shape(cfg)
            _check_editor_attributes(payload["state"].get("attributes"), shape, head)


def _check_editor_attributes(edited, shape: DataShape | None, head: str) -> None:
    """An editor checkpoint that edits other attributes than the data's (where both are known)."""
    if not isinstance(edited, (list, tuple)) or not all(isinstance(a, str) for a in edited):
        return
    data = None if shape is None else shape.attributes
    if data is not None and tuple(edited) != tuple(data):
        raise UserError(f"{head} edits the attributes {list(edited)}, the data's are "
                        f"{list(data)}; train an editor on this data (remove the checkpoint key)")


def _checkpoint_path(ref: str) -> Path | None:
    """A checkpoint's file; ``package:<package>/<path>`` through :mod:`mxplain.resources` where
    that module exists (``None`` otherwise: left to the loader)."""
    if not str(ref).startswith("package:"):
        return Path(ref)
    try:
        from mxplain.resources import resolve_checkpoint
    except ImportError:
        return None
    return resolve_checkpoint(ref)


def check_scheduler(scheduler: str | None, workers: int | None = None) -> None:
    """``--scheduler`` / ``--workers`` (or ``[run]``'s) as :func:`mxplain.distributed.check_options`
    checks them, and a scheduler address that does not parse (no port, an unknown scheme) refused
    here, before the run folder is made (connecting is left to the run)."""
    from mxplain.distributed import check_options

    scheduler, _ = check_options(scheduler, workers)
    if scheduler is None:
        return
    try:
        from distributed.comm import get_address_host_port, parse_address
    except ImportError:
        return  # the run says that distributed is missing
    try:
        if parse_address(scheduler)[0] != "inproc":
            get_address_host_port(scheduler)
    except ValueError as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "not an address"
        raise UserError(f"cannot reach the Dask scheduler {scheduler!r}: {msg}") from None


def check(cfg: dict, out: Path | None, device_spec: str | None = None, resume: bool = False,
          where: str = "config", scheduler: str | None = None,
          workers: int | None = None) -> None:
    """All of the above: the Dask options, checkpoints, then sizes (disk only for a fresh
    output). ``scheduler`` / ``workers``: the CLI's, else ``[run]``'s."""
    if scheduler is None and workers is None:
        scheduler, workers = cfg["run"].get("scheduler"), cfg["run"].get("workers")
    check_scheduler(scheduler, workers)
    check_checkpoints(cfg, where)
    check_sizes(cfg, out, device_spec, check_disk=not resume, where=where)

"""The explain stage on Dask distributed: lots go to workers, each worker writes its lots' regions.

``mxplain run --scheduler ADDRESS`` (or ``[run] scheduler``) connects to a running Dask scheduler;
``--workers N`` (or ``[run] workers``) starts a :class:`distributed.LocalCluster` of N worker
processes with one thread each. The main process trains (or loads) the models and saves them in the
run folder as usual, creates the results cube template, then submits one task per lot still to
explain. A worker loads one copy of the predictor and editor the first time it gets a lot of a run
(kept in a per-process cache keyed by run folder, config hash and model files), builds the
explainers (:func:`mxplain.components.build_explainers`: in the main process's order, producers of
declared reads first; each reads the lot's earlier results as there), explains the lot and
writes its region of ``results.zarr`` plus its ``lot_done`` flag
(one chunk per lot: writers never share a chunk, and region writes leave the metadata alone). The
main process then summarizes, scores and reports as in a single-process run.

A lot's values depend on nothing but the lot and the run's seed (the generators are reseeded per lot,
:func:`mxplain.components.explain_lot_values`), so the cube is the one a single-process run writes.
Workers compute with one torch thread each and the main process with as many as it has cores; a
search that turns last-bit differences into different iterates fixes its own thread count for the
lot (``[explain.backward] threads``, default 1), so that torch splits its float reductions alike in
both places (``tests/core/test_distributed.py`` compares the 64 px backward cubes bit for bit).

GPUs: one worker per GPU. Give each worker its own ``CUDA_VISIBLE_DEVICES`` (dask-cuda's
``LocalCUDACluster``, one Slurm job per GPU, ...); with ``--workers N`` on a node of several GPUs and
device ``auto``/``cuda``, worker ``i`` takes ``cuda:(i mod GPUs)``. The workers need mxplain and the
plugins of the config installed and the run folder on a file system they share with the main process.

``distributed`` is an optional dependency: ``pip install 'mxplain[dask]'``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxplain.errors import UserError
from mxplain.resources import resolve_checkpoint

#: how long ``--scheduler`` waits for the scheduler to answer
CONNECT_TIMEOUT_S = 10.0


def _require_distributed():
    try:
        import distributed
    except ImportError:
        raise UserError("--scheduler / --workers need the Dask 'distributed' package: "
                        "pip install 'mxplain[dask]'") from None
    return distributed


def check_options(scheduler: Any = None, workers: Any = None) -> tuple[str | None, int | None]:
    """Validate ``scheduler`` / ``workers`` (CLI or ``[run]``); both unset: ``(None, None)``."""
    if scheduler is not None and scheduler != "":
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise UserError(f"scheduler must be an address string such as 'tcp://host:8786', "
                            f"got {scheduler!r}")
        scheduler = scheduler.strip()
    else:
        scheduler = None
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise UserError(f"workers must be an integer >= 1, got {workers!r}")
        if workers < 1:
            raise UserError(f"workers must be >= 1, got {workers}")
    if scheduler is not None and workers is not None:
        raise UserError("give either a scheduler address (connect to a cluster) or workers "
                        "(start a local cluster), not both")
    return scheduler, workers


@dataclass
class LotJob:
    """Everything a worker needs to explain lots of one run (small, pickled into every task)."""

    cfg: dict
    folder: str
    store_path: str
    cube_path: str
    device_spec: str
    ctx: Any  # an ExplainContext without models
    variables: dict
    sizes: dict
    n_tiles: int
    model_stamp: tuple = field(default_factory=tuple)

    def cache_key(self) -> tuple:
        from mxplain.components import config_hash

        return (self.folder, config_hash(self.cfg), self.device_spec, self.model_stamp)


def _model_paths(cfg: dict, folder: Path) -> dict[str, Path]:
    """The checkpoint each worker loads: the config's (a path or a ``package:`` resource, see
    :mod:`mxplain.resources`) or the run's own ``models/<kind>.pt``."""
    out = {}
    for kind in ("predictor", "editor"):
        if kind in cfg:
            ref = cfg[kind].get("checkpoint")
            out[kind] = resolve_checkpoint(ref) if ref else folder / "models" / f"{kind}.pt"
    return out


def _stamp(paths: dict[str, Path]) -> tuple:
    out = []
    for kind, p in sorted(paths.items()):
        try:
            st = p.stat()
            out.append((kind, str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((kind, str(p), 0, 0))
    return tuple(out)


# ---- worker side ------------------------------------------------------------------------------
_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()  # one lot at a time per worker process: one model copy, bounded memory


@dataclass
class _WorkerState:
    store: Any
    ctx: Any
    explainers: dict
    writer: Any


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):
        return None


def worker_device(spec: str, worker_name=None):
    """The device of a worker: ``spec`` resolved on the worker's machine; with several visible GPUs
    and ``auto``/``cuda``, worker ``i`` of a local cluster takes ``cuda:(i mod GPUs)``."""
    import torch

    from mxplain.device import resolve_device

    dev = resolve_device(spec)
    s = (spec or "auto").strip().lower()
    if (dev.type == "cuda" and s in ("auto", "cuda") and isinstance(worker_name, int)
            and torch.cuda.device_count() > 1):
        dev = torch.device(f"cuda:{worker_name % torch.cuda.device_count()}")
    return dev


def _load_state(job: LotJob) -> _WorkerState:
    from mxplain import plugins
    from mxplain.components import build_explainers, checkpoint_params
    from mxplain.cube import CubeWriter
    from mxplain.store import TileStore

    device = worker_device(job.device_spec, _worker_name())
    ctx = copy.copy(job.ctx)
    ctx.device = device
    ctx.progress = False
    for kind, path in _model_paths(job.cfg, Path(job.folder)).items():
        cls = plugins.get(kind, job.cfg[kind]["name"])
        setattr(ctx, kind, cls.load(path, device=device,
                                    params=checkpoint_params(job.cfg[kind])))
    explainers = build_explainers(job.cfg["explain"])
    writer = CubeWriter.reopen(Path(job.cube_path), job.variables, job.sizes)
    return _WorkerState(TileStore.open(job.store_path), ctx, explainers, writer)


def explain_lot_task(job: LotJob, index: int) -> dict:
    """Dask task: explain lot ``index`` and write its region of the cube (everything the summaries
    and figures read is in it). Returns the seconds spent per explainer."""
    import dask

    from mxplain.components import explain_lot_values

    with _LOCK, dask.config.set(scheduler="synchronous"):
        key = job.cache_key()
        state = _CACHE.get(key)
        if state is None:
            _CACHE.clear()  # one run's models per worker at a time
            state = _CACHE[key] = _load_state(job)
        per = dict.fromkeys(state.explainers, 0.0)
        t0 = time.perf_counter()
        values = explain_lot_values(index, state.store, state.ctx, state.explainers, job.variables,
                                    job.n_tiles, per)
        state.writer.write_lot(index, values)
        return {"index": index, "seconds": per, "lot_seconds": time.perf_counter() - t0,
                "worker": str(_worker_name())}


# ---- main process side ------------------------------------------------------------------------
def _probe(address: str) -> None:
    """Connect to a ``tcp://`` scheduler once and close (ValueError for an address that does not
    parse, OSError when nothing answers within :data:`CONNECT_TIMEOUT_S`). Other schemes (tls needs
    the Client's security settings) and callers inside an event loop are left to the Client."""
    import asyncio

    from distributed.comm import connect, parse_address

    scheme, _ = parse_address(address)
    if scheme != "tcp":
        return
    try:
        asyncio.get_running_loop()
        return
    except RuntimeError:
        pass

    async def once():
        comm = await connect(address, timeout=CONNECT_TIMEOUT_S)
        await comm.close()

    asyncio.run(once())


class DaskExplain:
    """A Dask client (to a scheduler, or to a local cluster it starts) that explains lots."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None,
                 device_spec: str = "auto"):
        scheduler, workers = check_options(scheduler, workers)
        if scheduler is None and workers is None:
            raise UserError("the Dask explain stage needs a scheduler address or workers")
        distributed = _require_distributed()
        self.device_spec = device_spec
        self.cluster = None
        if workers is not None:
            self.cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.address = self.cluster.scheduler_address
        else:
            try:
                _probe(scheduler)  # before a Client: one that fails hangs 20 s at exit (__del__)
                self.client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S,
                                                 set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else \
                    type(exc).__name__
                raise UserError(f"cannot reach the Dask scheduler {scheduler!r}: {msg}") from None
            self.address = scheduler

    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def explain(self, cfg: dict, folder: Path, store, ctx, variables: dict,
                sizes: dict, n_tiles: int, cube_path: Path, lots: list[int],
                per_explainer: dict, bar=None) -> dict:
        """Explain ``lots`` on the workers, each writing its lots' regions of the cube. Returns
        ``{worker: lots explained}``."""
        from distributed import as_completed

        job_ctx = copy.copy(ctx)
        job_ctx.predictor = None
        job_ctx.editor = None
        folder = Path(folder)
        job = LotJob(cfg=cfg, folder=str(folder), store_path=str(store.path),
                     cube_path=str(cube_path), device_spec=self.device_spec, ctx=job_ctx,
                     variables=variables, sizes=sizes, n_tiles=int(n_tiles),
                     model_stamp=_stamp(_model_paths(cfg, folder)))
        futures = [self.client.submit(explain_lot_task, job, i, pure=False,
                                      key=f"mxplain-lot-{i}-{id(job):x}-{time.time_ns()}")
                   for i in lots]
        by_worker: dict[str, int] = {}
        try:
            for fut in as_completed(futures, loop=self.client.loop):
                res = fut.result()  # a worker's exception (UserError included) is raised here
                for name, sec in res["seconds"].items():
                    per_explainer[name] = per_explainer.get(name, 0.0) + sec
                by_worker[res["worker"]] = by_worker.get(res["worker"], 0) + 1
                if bar is not None:
                    bar.update(1)
        except BaseException:
            self.client.cancel(futures)
            raise
        return by_worker

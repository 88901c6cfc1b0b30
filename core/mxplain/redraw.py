"""The explainers' figures drawn again from a finished run folder alone (``mxplain report RUN``).

Everything an explainer's summary and figures read is in the results cube (its example tiles and
their edits included), so the explainers of the run's ``config.toml``, given the cube and a context
built from the run folder (attribute and property names, the dataset's knowledge; no predictor or
editor), draw what the run drew: the same bytes. Figures are drawn into a temporary folder and then
moved into ``figures/``, each only where mxplain may write it (:func:`mxplain.runfolder.may_write`:
a file mxplain did not write is never replaced), and recorded as written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from mxplain.errors import UserError


def explain_context(run_dir: Path, cfg: dict, out_dir: Path):
    """The :class:`~mxplain.interfaces.ExplainContext` a run's summaries had, rebuilt from the run
    folder (``cfg``: its resolved config) without models, figures going to ``out_dir/figures``."""
    from mxplain import config as config_mod
    from mxplain.components import build_components, dataset_knowledge
    from mxplain.interfaces import ExplainContext
    from mxplain.store import TileStore

    run_cfg = cfg["run"]
    ctx = ExplainContext(out_dir=out_dir, seed=int(run_cfg["seed"]), progress=False,
                         batch_size=config_mod.fixed_batch_size(run_cfg))
    dataset = build_components({k: v for k, v in cfg.items() if k == "data"})["dataset"]
    store_path = run_dir / "tiles.zarr"
    if not store_path.exists():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        store_path = Path(metrics.get("data", {}).get("tile_store", store_path))
    dataset_knowledge(ctx, dataset, TileStore.open(store_path))
    return ctx


def redraw_figures(run_dir: str | Path) -> list[str]:
    """Draw every explainer's figures of the run at ``run_dir`` again from its cube; returns the
    figures (paths relative to the run folder) written. A run without a cube or explainers draws
    nothing."""
    from mxplain import config as config_mod
    from mxplain.components import build_explainers, summarize_all
    from mxplain.cube import open_results

    run_dir = Path(run_dir)
    if not (run_dir / "results.zarr").exists() or not (run_dir / "config.toml").is_file():
        return []
    metrics = json.loads((run_dir / "metrics.json").read_text())
    done = set(metrics.get("explain") or {})
    cfg = config_mod.load(run_dir / "config.toml")
    explainers = build_explainers({e: p for e, p in cfg.get("explain", {}).items() if e in done})
    if not explainers:
        return []
    cube = open_results(run_dir)
    with tempfile.TemporaryDirectory(prefix="mxplain-redraw-") as tmp:
        ctx = explain_context(run_dir, cfg, Path(tmp))
        ctx.figures_dir.mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the run already said what its figures lacked
            summarize_all(explainers, cube, ctx)
        return _move_into(run_dir, ctx.figures_dir)


def _move_into(run_dir: Path, drawn: Path) -> list[str]:
    """Move the files drawn into ``run_dir/figures`` where mxplain may write them, under the run
    folder's lock, and record them as written."""
    from mxplain.review import locked
    from mxplain.runfolder import may_write, read_state, record_written

    names = sorted(p.name for p in drawn.iterdir() if p.is_file())
    target = run_dir / "figures"
    moved = []
    refused = []
    with contextlib.nullcontext() if _held_here(run_dir) else locked(run_dir):
        target.mkdir(exist_ok=True)
        for name in names:
            rel = f"figures/{name}"
            if not may_write(run_dir, rel):
                refused.append(rel)
                continue
            tmp = target / f".{name}.redraw"
            shutil.copyfile(drawn / name, tmp)
            os.replace(tmp, target / name)
            moved.append(rel)
        if moved and read_state(run_dir) is not None:
            record_written(run_dir, moved)
    if refused:
        raise UserError(f"{', '.join(refused)} in {str(run_dir)!r} exist(s) and were not written "
                        "by mxplain; move them away (mxplain never replaces a file it did not "
                        "write)")
    return moved


def _held_here(run_dir: Path) -> bool:
    """Whether this process already holds the run folder's lock (``mxplain review --import``
    writes the report under it)."""
    from mxplain.runfolder import LOCK

    try:
        return int((run_dir / LOCK).read_text().strip() or 0) == os.getpid()
    except (OSError, ValueError):
        return False

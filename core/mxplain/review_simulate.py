"""``mxplain review RUN --simulate``: a simulated reviewer for data whose dataset measures
attributes from images (synthetic lots): answers from the measurement, wrong with probability
``error_rate``, in the format of the page's download (:mod:`mxplain.review`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mxplain.errors import UserError
from mxplain.review import (
    DEFAULT_DELTA,
    DEFAULT_PAIRS,
    FORMAT,
    ReviewRun,
    Writes,
    check_options,
    locked,
    read_key,
    render_pairs,
    set_id,
)
from mxplain.runfolder import write_atomic


def simulated_answers(left: np.ndarray, right: np.ndarray, pairs: list[dict], measure,
                      error_rate: float, rng: np.random.Generator) -> list[str]:
    """A reviewer who sees what the dataset's measurement sees: for each pair the side whose tile
    measures more of the attribute (``cant_tell`` where the measurement ties, fails (NaN) or does
    not cover the attribute); a decided answer goes to the other side with probability
    ``error_rate``."""
    from mxplain.editor_eval import DEFAULT_MEASURE_ATTRIBUTES

    cols = {name: i for i, name in enumerate(DEFAULT_MEASURE_ATTRIBUTES)}
    m_left = np.asarray(measure(left), dtype=np.float64)
    m_right = np.asarray(measure(right), dtype=np.float64)
    flips = rng.random(len(pairs)) < error_rate
    out = []
    for r, p in enumerate(pairs):
        c = cols.get(p["attribute"])
        a, b = (m_left[r, c], m_right[r, c]) if c is not None else (np.nan, np.nan)
        if not (np.isfinite(a) and np.isfinite(b)) or a == b:
            out.append("cant_tell")
            continue
        side = "left" if a > b else "right"
        if flips[r]:
            side = "right" if side == "left" else "left"
        out.append(side)
    return out


def simulate(run_dir, n_pairs: int = DEFAULT_PAIRS, seed: int = 0, delta: float = DEFAULT_DELTA,
             error_rate: float = 0.0, reviewer: str = "simulated", out=None,
             device: str = "cpu") -> Path:
    """Answer the page of ``n_pairs``/``seed``/``delta`` as :func:`simulated_answers` does and
    write the answers (the page's download format) to ``out`` (default
    ``review/simulated-<reviewer>-<set>.json`` in the run folder)."""
    from mxplain.device import resolve_device

    check_options(n_pairs, seed, delta)
    if isinstance(error_rate, bool) or not isinstance(error_rate, (int, float)) or \
            not 0 <= error_rate <= 1:
        raise UserError(f"--error-rate = {error_rate!r}: needs a number in [0, 1]")
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise UserError("--reviewer needs a name")
    run = ReviewRun(run_dir)
    measure = run.measure()
    if measure is None:
        raise UserError(f"the run's dataset {run.cfg['data']['name']!r} measures no attributes "
                        f"from images; a simulated reviewer needs one that does (synthetic lots)")
    with locked(run.path):
        rid = run.run_id()
        key = read_key(run.path, rid)
        sid = set_id(rid, n_pairs, seed, float(delta))
        if sid not in key["sets"]:
            raise UserError(f"run {str(run.path)!r} has no review page of --pairs {n_pairs} "
                            f"--seed {seed} --delta {delta:g}; write it first with `mxplain "
                            f"review {run.path} --pairs {n_pairs} --seed {seed}`")
        entry = key["sets"][sid]
        pairs = [{"id": pid, **entry["pairs"][pid]} for pid in entry["order"]]
        left, right = render_pairs(run.editor(resolve_device(device)), run.store, pairs)
        name_seed = int.from_bytes(hashlib.sha256(reviewer.encode()).digest()[:4], "little")
        rng = np.random.default_rng([int(seed), name_seed, 4242])
        answers = simulated_answers(left, right, pairs, measure, float(error_rate), rng)
        doc = {"format": FORMAT, "version": 1, "run_id": rid, "set_id": sid,
               "reviewer": reviewer.strip(), "pair_ids": entry["order"],
               "answers": [{"pair": p["id"], "answer": a, "seconds": None, "answered_at": None}
                           for p, a in zip(pairs, answers)],
               "simulated": {"error_rate": float(error_rate), "measurement":
                             f"the {run.cfg['data']['name']!r} dataset's measure"}}
        return _write_answers(run.path, out, json.dumps(doc, indent=1), reviewer.strip(), sid)


def _write_answers(run: Path, out, text: str, reviewer: str, sid: str) -> Path:
    """Simulated answers to ``out``: in the run folder recorded as mxplain's (default
    ``review/simulated-<reviewer>-<set>.json``), elsewhere only a new path or a file written so
    before."""
    from mxplain.outputs import is_within

    if out is None or is_within(out, run):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in reviewer)
        rel = (f"review/simulated-{safe}-{sid}.json" if out is None
               else Path(out).resolve().relative_to(Path(run).resolve()).as_posix())
        if out is not None and not rel.startswith("review/"):
            raise UserError(f"--out {str(out)!r}: inside the run folder, answers go below "
                            f"{str(Path(run) / 'review')!r}")
        writes = Writes(run)
        target = writes.write(rel, text)
        writes.record()
        return target
    return _write_outside(Path(out), text)


def _write_outside(target: Path, text: str) -> Path:
    """A simulated answers file outside the run folder: new, or one written here before."""
    from mxplain.outputs import check_path_text

    target = check_path_text(target, "--out")
    if target.is_dir() or target.is_symlink():
        raise UserError(f"--out {str(target)!r} is a folder or a link; give a file path")
    if target.exists():
        try:
            old = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            old = None
        if not (isinstance(old, dict) and old.get("format") == FORMAT and "simulated" in old):
            raise UserError(f"--out {str(target)!r} exists and is not a simulated answers file "
                            f"mxplain wrote; choose a new path")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    return target

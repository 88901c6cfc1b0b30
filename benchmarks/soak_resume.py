"""Soak test of ``mxplain run --resume``: SIGKILL a tiny run at random moments, resume, repeat.

One uninterrupted reference run first; then rounds: each round starts a fresh run folder, kills the
run after a random delay (uniform between ``--min-delay`` and the reference run's duration), resumes
it with ``--resume``, kills again, ... until it finishes, and compares the finished results cube
(every variable, exactly, NaN equal to NaN), the trained models and the tile store with the
reference. Rounds go on until ``--kills`` kills landed. Prints the stage each kill hit and::

    kills survived: K, differences: D

A kill counts as survived when the next ``--resume`` on that folder did not fail; a difference is a
cube variable, model tensor or tile store array that differs from the reference (0 is the target).

Then two fixed phases: a kill at each exact point of store and cube creation (``MXPLAIN_KILL_AT``,
:mod:`mxplain.failpoints`: template written but not renamed, renamed but no lot written), each
resumed; and each damage case of a finished run (a deleted or truncated cube chunk, a truncated
``zarr.json``, a deleted tile chunk), each resumed. Both print ``survived / differences`` lines.

    python benchmarks/soak_resume.py --kills 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from mxplain import zarrio
from mxplain.checkpoint import state_differences
from mxplain.cube import open_results
from mxplain.store import TileStore

CONFIG = """
[data]
name = "synthetic"
n_lots = 4
tiles_per_lot = 8
tile_size = 32
seed = 5
[predictor]
name = "wideresnet"
depth = 10
widen = 1
epochs = 3
batch_size = 8
dropout = 0.1
[editor]
name = "texturevae"
latent_dim = 8
dec_dim = 4
epochs = 3
batch_size = 8
max_tiles_per_lot = 4
figures = false
[explain.forward]
steps = 3
[explain.gradcam]
[run]
explain_tiles = 4
report = false
editor_eval_tiles = 2
"""
CLI = [sys.executable, "-m", "mxplain", "run"]


def stage_of(out: Path) -> str:
    """Where a killed run stood, from what its folder holds."""
    if (out / "metrics.json").exists():
        return "finished"
    tiles = out / "tiles.zarr"
    try:
        if not zarrio.read_attrs(tiles).get("complete"):
            return "data"
    except Exception:
        return "startup" if not tiles.exists() else "data"
    try:
        done = json.loads((out / "state.json").read_text()).get("done", [])
    except (OSError, ValueError):
        done = []
    for kind in ("predictor", "editor"):
        if kind not in done:
            return f"{kind} training" + (" (epoch checkpoint)" if (
                out / "models" / f"{kind}.training.pt").exists() else "")
    cube = out / "results.zarr"
    try:
        flags = zarrio.lots_done(cube, "lot_done")
    except Exception:
        return "evaluation"
    return "explain / cube write" if not flags.all() else "summaries"


def differences(ref: Path, out: Path) -> list[str]:
    diffs = []
    a, b = open_results(ref).load(), open_results(out).load()
    for name in sorted(set(a.variables) | set(b.variables)):
        if name not in a.variables or name not in b.variables:
            diffs.append(f"cube variable {name} missing")
            continue
        x, y = a[name].values, b[name].values
        same = x.shape == y.shape and (np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f"
                                       else np.array_equal(x, y))
        if not same:
            diffs.append(f"cube variable {name}")
    for kind in ("predictor", "editor"):
        sa = torch.load(ref / "models" / f"{kind}.pt", weights_only=True)["state"]
        sb = torch.load(out / "models" / f"{kind}.pt", weights_only=True)["state"]
        diffs += [f"{kind} {k}" for k in state_differences(sa, sb)]
    ta, tb = TileStore.open(ref / "tiles.zarr"), TileStore.open(out / "tiles.zarr")
    for i in range(ta.n_lots):
        if not np.array_equal(ta.tiles(i), tb.tiles(i)):
            diffs.append(f"tiles of lot {i}")
    return diffs


CREATION_POINTS = ("create:tiles.zarr", "created:tiles.zarr", "create:results.zarr",
                   "created:results.zarr")


def _chunk(store: Path, var: str, lot: int) -> Path:
    return max((p for p in (store / var / "c" / str(lot)).rglob("*") if p.is_file()),
               key=lambda p: len(p.parts))


DAMAGE = {
    "deleted prediction chunk": lambda o: _chunk(o / "results.zarr", "prediction", 1).unlink(),
    "truncated forward_prediction chunk": lambda o: _chunk(
        o / "results.zarr", "forward_prediction", 2).write_bytes(b"\x00" * 7),
    "truncated results zarr.json": lambda o: (o / "results.zarr" / "zarr.json").write_text("{"),
    "deleted tile chunk": lambda o: _chunk(o / "tiles.zarr", "tiles", 3).unlink(),
}


def fixed_phases(cfg: Path, ref: Path, work: Path, env: dict) -> tuple[int, int, int]:
    """Kills at every point of store/cube creation, then the damage cases; (cases, survived,
    differences)."""
    cases = survived = n_diffs = 0
    out = work / "fixed"
    for point in CREATION_POINTS:
        cases += 1
        _fresh(out)
        killed = subprocess.run(CLI + [str(cfg), "--out", str(out), "--quiet"],
                                env={**env, "MXPLAIN_KILL_AT": point}, capture_output=True)
        ok = killed.returncode == -signal.SIGKILL and _resume(cfg, out, env)
        diffs = differences(ref, out) if ok else ["resume failed"]
        survived += ok
        n_diffs += len(diffs)
        print(f"  kill at {point}: {'resumed' if ok else 'FAILED'}, {len(diffs)} differences",
              flush=True)
    _fresh(out)
    subprocess.run(CLI + [str(cfg), "--out", str(out), "--quiet"], env=env, check=True,
                   capture_output=True)
    for what, damage in DAMAGE.items():
        cases += 1
        damage(out)
        ok = _resume(cfg, out, env)
        diffs = differences(ref, out) if ok else ["resume failed"]
        survived += ok
        n_diffs += len(diffs)
        print(f"  damage, {what}: {'recomputed' if ok else 'FAILED'}, {len(diffs)} differences",
              flush=True)
    return cases, survived, n_diffs


def _fresh(out: Path) -> None:
    """Remove a soak run folder, which this script made (mxplain's run state marks it)."""
    if out.exists():
        if not (out / "state.json").is_file():
            raise SystemExit(f"error: {out} is not a run folder of this soak; not deleting it")
        shutil.rmtree(out)


def _resume(cfg: Path, out: Path, env: dict) -> bool:
    return subprocess.run(CLI + [str(cfg), "--out", str(out), "--quiet", "--resume"], env=env,
                          capture_output=True).returncode == 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kills to land in all (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--config", type=Path, help="run config (default: a tiny built-in one)")
    ap.add_argument("--min-delay", type=float, default=3.0,
                    help="shortest kill delay, seconds (default 3: about the import time)")
    ap.add_argument("--threads", default="1", help="OMP_NUM_THREADS of the runs (default 1)")
    ap.add_argument("--workdir", type=Path, help="keep run folders here (default: a temp dir)")
    args = ap.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="mxplain-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = args.config or work / "soak.toml"
    if args.config is None:
        cfg.write_text(CONFIG)
    env = {**{k: v for k, v in os.environ.items() if k != "MXPLAIN_KILL_AT"},
           "OMP_NUM_THREADS": str(args.threads)}
    rng = random.Random(args.seed)

    ref = work / "reference"
    _fresh(ref)
    t0 = time.perf_counter()
    subprocess.run(CLI + [str(cfg), "--out", str(ref), "--quiet"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    duration = time.perf_counter() - t0
    print(f"reference run: {duration:.1f} s; kill delays uniform in [{args.min_delay:.1f}, "
          f"{duration:.1f}] s", flush=True)

    kills = survived = failures = 0
    n_diffs = 0
    stages: Counter = Counter()
    rounds = 0
    t_soak = time.perf_counter()
    while kills < args.kills:
        rounds += 1
        out = work / f"round{rounds:03d}"
        _fresh(out)
        resume, pending, round_kills = False, False, 0
        while True:
            cmd = CLI + [str(cfg), "--out", str(out), "--quiet"] + (["--resume"] if resume else [])
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            delay = rng.uniform(args.min_delay, max(duration, args.min_delay))
            if kills >= args.kills:
                delay = None  # enough kills: let the last resume finish
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
            if pending:  # this invocation resumed after a kill
                if proc.returncode in (0, -signal.SIGKILL):
                    survived += 1
                else:
                    failures += 1
                    print(f"  round {rounds}: resume failed (exit {proc.returncode}): "
                          f"{err.strip().splitlines()[-1] if err.strip() else ''}", flush=True)
                    break
            if proc.returncode == -signal.SIGKILL:
                kills += 1
                round_kills += 1
                stage = stage_of(out)
                stages[stage] += 1
                resume, pending = True, True
                continue
            if proc.returncode != 0:
                failures += 1
                print(f"  round {rounds}: run failed (exit {proc.returncode})", flush=True)
                break
            diffs = differences(ref, out)
            n_diffs += len(diffs)
            print(f"  round {rounds}: {round_kills} kills, finished, "
                  f"{len(diffs)} differences{': ' + ', '.join(diffs[:5]) if diffs else ''}",
                  flush=True)
            break
        if args.workdir is None and out.exists():
            shutil.rmtree(out, ignore_errors=True)
    print("kills by stage: " + ", ".join(f"{s} {n}" for s, n in sorted(stages.items())))
    print(f"rounds: {rounds}, soak time: {time.perf_counter() - t_soak:.0f} s, "
          f"failed resumes: {failures}")
    print(f"kills survived: {survived}, differences: {n_diffs}")
    cases, fixed_ok, fixed_diffs = fixed_phases(cfg, ref, work, env)
    print(f"creation kills and damage cases: {cases}, survived: {fixed_ok}, "
          f"differences: {fixed_diffs}")
    n_diffs += fixed_diffs
    failures += cases - fixed_ok
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if failures == 0 and n_diffs == 0 and survived == kills else 1


if __name__ == "__main__":
    sys.exit(main())

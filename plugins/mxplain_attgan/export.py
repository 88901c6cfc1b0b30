"""Export a trained AttGAN editor as a package-shipped checkpoint (``make quickstart-models``).

::

    python -m mxplain_attgan.export runs/quickstart-editor \\
        --out plugins/mxplain_attgan/data/quickstart_attgan.pt

reads the run folder of ``mxplain run examples/quickstart-train.toml`` and writes

* ``quickstart_attgan.pt``: an ordinary mxplain checkpoint (``mxplain.checkpoint`` format: name,
  kind, parameters, state; loads with ``torch.load(weights_only=True)``) holding the inference
  state only: the generator's EMA weights and the discriminator (its attribute classifier serves
  :meth:`~mxplain_attgan.editor.AttGANEditor.classify`), floating tensors stored as float16 (loaded
  back into float32 modules; the texture head of ``cls_pool = "stats"`` stays float32,
  :data:`FULL_PRECISION`), no optimiser state;
* its provenance, both in the file (``payload["provenance"]`` and ``state["provenance"]``) and in
  the sidecar ``quickstart_attgan.json``: the editor config and the [data] table, generator steps,
  epochs done of those planned, training wall time, device and threads, torch and mxplain versions,
  the git commit, the ``content_hash`` of the tile store it was trained on (the quickstart refuses
  the checkpoint for any other store, :mod:`mxplain.resources`), the run's own evaluation and the
  command that reproduces it.

A run stopped before its last epoch is exported from its per-epoch training checkpoint
(``models/editor.training.pt``, the last finished epoch), and the provenance says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from mxplain.errors import UserError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

COMMAND = "make quickstart-models"
MAX_BYTES = 20 * 2**20
HASH_PARTS = ("lot ids", "attributes", "tiles")  # an editor never sees the property


#: kept in float32: the texture head's standardisation (a statistic whose spread over the real
#: tiles is 1e-5 of its mean would move by tens of spreads in float16) and its small linear map
FULL_PRECISION = ("fc_cls.mean", "fc_cls.scale", "fc_cls.linear.")


def _half(value, key: str = ""):
    if isinstance(value, torch.Tensor):
        keep = key.startswith(FULL_PRECISION) or not value.is_floating_point()
        return value if keep else value.half()
    if isinstance(value, dict):
        return {k: _half(v, str(k)) for k, v in value.items()}
    return value


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True, timeout=10)
        return out.stdout.strip()
    except Exception:  # noqa: BLE001 - not a git checkout (an installed wheel)
        return "unknown"


def _trained_state(run: Path, params: dict) -> tuple[dict, dict]:
    """(editor state, training facts) from the finished model or the last training checkpoint."""
    from mxplain.checkpoint import read_checkpoint

    from .editor import AttGANEditor

    final = run / "models" / "editor.pt"
    if final.is_file():
        fit = json.loads((run / "models" / "editor_fit.json").read_text())
        state = read_checkpoint(final)["state"]
        return state, {"epochs_done": int(params["epochs"]), "finished": True,
                       "generator_steps": int(fit["generator_steps"]),
                       "train_seconds": float(fit["train_seconds"])}
    partial = run / "models" / "editor.training.pt"
    if not partial.is_file():
        raise UserError(f"{run} holds neither models/editor.pt nor a training checkpoint")
    ckpt = torch.load(partial, map_location="cpu", weights_only=True)
    editor = AttGANEditor(**{k: v for k, v in params.items() if k in AttGANEditor.param_defaults()})
    editor._build(tuple(params["attributes"]), int(params["tile_size"]))
    editor.generator_.load_state_dict(ckpt["modules"].get("G_ema", ckpt["modules"]["G"]))
    editor.discriminator_.load_state_dict(ckpt["modules"]["D"])
    editor.generator_ema_ = None
    editor.attributes = tuple(params["attributes"])
    editor.history_ = {k: [float(x) for x in v] for k, v in ckpt["extra"]["history"].items()}
    return editor.state_dict(), {"epochs_done": int(ckpt["epoch"]), "finished": False,
                                 "generator_steps": len(editor.history_["g_rec"]),
                                 "train_seconds": None}


def _evaluation(run: Path) -> dict:
    """The run's own editor evaluation (reconstruction, fidelity and its ceiling), if written."""
    path = run / "metrics.json"
    if not path.is_file():
        return {}
    ev = json.loads(path.read_text()).get("editor", {}).get("evaluation", {})
    return {k: ev[k] for k in ("reconstruction", "fidelity", "fidelity_ceiling") if k in ev}


def export_run(run: str | Path, out: str | Path, note: str = "") -> dict:
    """Write ``out`` (+ ``out.with_suffix('.json')``) from run folder ``run``; returns the
    provenance."""
    from mxplain import __version__
    from mxplain.checkpoint import FORMAT
    from mxplain.store import TileStore

    from .editor import AttGANEditor

    run, out = Path(run), Path(out)
    refuse_foreign(out)
    if not (run / "config.toml").is_file() or not (run / "tiles.zarr").is_dir():
        raise UserError(f"{run} is not an mxplain run folder (no config.toml or tiles.zarr)")
    cfg = tomllib.loads((run / "config.toml").read_text())
    store = TileStore.open(run / "tiles.zarr")
    params = {k: v for k, v in cfg["editor"].items() if k in AttGANEditor.param_defaults()}
    facts_in = {**params, "n_attributes": len(store.attributes), "tile_size": store.tile_size,
                "attributes": list(store.attributes)}
    state, facts = _trained_state(run, facts_in)
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() \
        else {}
    prov = {
        "tile_store_content_hash": store.content_hash(include_property=False),
        "tile_store_hash_parts": list(HASH_PARTS),
        "command": COMMAND,
        "training_config": "examples/quickstart-train.toml",
        "editor_config": params, "data_config": cfg["data"],
        "epochs_planned": int(params["epochs"]), **facts,
        "device": metrics.get("provenance", {}).get("device", "cpu"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),  # make sets 1 for both
        "torch_version": torch.__version__, "mxplain_version": __version__,
        "git_commit": _git_commit(),
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "storage": "float16", "evaluation": _evaluation(run), "note": note,
    }
    prov = json.loads(json.dumps(prov, default=str))  # plain data: loads with weights_only=True
    state = {**_half(state), "provenance": prov}
    payload = {"format": FORMAT, "kind": "editor", "name": "attgan", "params": params,
               "state": state, "provenance": prov}
    _write_export(out, payload, prov)
    return prov


def _is_earlier_export(path: Path) -> bool:
    """A file this command wrote before: a plain checkpoint whose provenance names the command."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return payload.get("provenance", {}).get("command") == COMMAND
    except Exception:  # noqa: BLE001 - unreadable, not a checkpoint, not ours: not replaceable
        return False


def refuse_foreign(out: Path) -> None:
    """Replace only an earlier export (and its sidecar); any other file at ``out`` is the user's."""
    side = out.with_suffix(".json")
    if out.exists() and not (out.is_file() and _is_earlier_export(out)):
        raise UserError(f"{out} exists and is not an earlier `{COMMAND}` export: mxplain does not "
                        "replace it; choose another --out or move the file")
    if side.exists() and not out.exists():
        raise UserError(f"{side} exists without its checkpoint {out.name}: mxplain does not "
                        "replace it; choose another --out or move the file")


def _write_export(out: Path, payload: dict, prov: dict) -> None:
    """Both files through temporaries and renames: an interrupted or refused export leaves the
    previous files as they were."""
    from mxplain.runfolder import write_atomic

    refuse_foreign(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        torch.save(payload, tmp)
        torch.load(tmp, map_location="cpu", weights_only=True)  # plain data only
        size = tmp.stat().st_size
        if size > MAX_BYTES:
            raise UserError(f"the export would be {size / 2**20:.1f} MB (limit 20 MB); "
                            f"{out} is left as it was")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    write_atomic(out.with_suffix(".json"), json.dumps(prov, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mxplain_attgan.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run folder of `mxplain run examples/quickstart-train.toml`")
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / "quickstart_attgan.pt"))
    ap.add_argument("--note", default="", help="a remark recorded in the provenance")
    args = ap.parse_args(argv)
    try:
        prov = export_run(args.run, args.out, args.note)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({prov['epochs_done']}/{prov['epochs_planned']} epochs, "
          f"{prov['generator_steps']} generator steps, store {prov['tile_store_content_hash'][:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

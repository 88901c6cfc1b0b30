"""The packaged quickstart at its sizes, for the explainer benchmarks: its config, lots of its
synthetic data (only the explained tiles, ``[run] explain_tiles``), the shipped AttGAN (with the
config's ``inference_params`` beside its checkpoint, as the pipeline loads it) and a
WideResNet of its depth (freshly initialised unless a trained checkpoint is given: timing does not
need a trained one), and an ``ExplainContext`` like the pipeline's."""

from __future__ import annotations

from importlib import resources as ir

import numpy as np
import tomllib
import torch

from mxplain import plugins
from mxplain.interfaces import ExplainContext, Lot
from mxplain.store import to_tensor

EDITOR = "package:mxplain_attgan/data/quickstart_attgan.pt"


def config() -> dict:
    """The packaged quickstart config (``core/mxplain/data/quickstart.toml``) as written."""
    return tomllib.loads(ir.files("mxplain").joinpath("data/quickstart.toml").read_text())


def dataset(cfg: dict):
    params = {k: v for k, v in cfg["data"].items() if k != "name"}
    params["tiles_per_lot"] = int(cfg["run"]["explain_tiles"])  # the tiles the explainers see
    return plugins.create("dataset", cfg["data"]["name"], **params)


def lots(cfg: dict, indices) -> list[Lot]:
    data = dataset(cfg)
    attrs, props = data.lot_attributes(), data.lot_properties()
    return [Lot(index=int(i), lot_id=data.lot_ids()[i], tiles=to_tensor(data.lot_tiles(int(i))),
                attributes=np.asarray(attrs[i], np.float32), property=float(props[i]))
            for i in indices]


def models(cfg: dict, device: torch.device, predictor_path: str | None = None):
    """The shipped quickstart AttGAN and a WideResNet-``depth``-``widen`` at the quickstart's tile
    size: loaded from ``predictor_path`` (a checkpoint, e.g. ``runs/quickstart/models/
    predictor.pt``) or freshly initialised (seeded)."""
    from mxplain import load_checkpoint as load
    from mxplain.components import checkpoint_params
    from mxplain.resources import resolve_checkpoint

    # as the pipeline loads it: the inference parameters beside the checkpoint (edit_mode)
    editor = plugins.get("editor", cfg["editor"]["name"]).load(
        resolve_checkpoint(EDITOR), device, params=checkpoint_params(cfg["editor"]))
    if predictor_path:
        return editor, load(predictor_path, device)
    from mxplain_wideresnet.model import WideResNet

    p = cfg["predictor"]
    torch.manual_seed(0)
    module = WideResNet(int(p["depth"]), int(p["widen"]), 0.0)
    predictor = plugins.create("predictor", "wideresnet", depth=int(p["depth"]),
                               widen=int(p["widen"]))
    predictor.load_state_dict({"model": module.state_dict(), "center": 2000.0,
                               "half_range": 400.0, "depth": int(p["depth"]),
                               "widen": int(p["widen"]), "tile_size": int(cfg["data"]["tile_size"])})
    return editor, predictor.to(device)


def context(cfg: dict, editor, predictor, device: torch.device) -> ExplainContext:
    data = dataset(cfg)
    return ExplainContext(device=device, progress=False, seed=int(cfg["run"]["seed"]),
                          batch_size=64, predictor=predictor, editor=editor,
                          attributes=tuple(editor.attributes),
                          true_sensitivity=data.true_sensitivity(), simulator=None)


def explainers(cfg: dict, names=None) -> dict:
    """The quickstart's explainers with its parameters (the pipeline's order)."""
    names = names or list(cfg["explain"])
    return {n: plugins.get("explainer", n)(**cfg["explain"].get(n, {})) for n in names}

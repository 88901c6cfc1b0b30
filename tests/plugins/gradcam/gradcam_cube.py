"""A minimal stand-in for the pipeline's cube writer: runs explainers on lots, pads, stacks."""

from __future__ import annotations

import numpy as np
import xarray as xr


def build_cube(explainers, lots, ctx, extra: dict | None = None) -> xr.Dataset:
    """Run ``explain_lot`` of each explainer on each lot and stack into an xarray Dataset with
    dims lot, tile (padded), attribute, y, x and the explainers' extra dims."""
    ntile = max(len(lot.tiles) for lot in lots)
    h, w = lots[0].tiles.shape[-2:]
    coords = {"lot": [lot.lot_id for lot in lots], "tile": np.arange(ntile),
              "attribute": list(ctx.attributes), "y": np.arange(h), "x": np.arange(w)}
    for ex in explainers:
        coords.update(ex.extra_dims())
    data = {}
    for ex in explainers:
        vars_ = ex.variables(ctx)
        per = [ex.explain_lot(lot, ctx) for lot in lots]
        for name, var in vars_.items():
            shape = [len(coords[d]) for d in var.dims]
            arr = np.full(shape, var.fill, dtype=var.dtype)
            for i, out in enumerate(per):
                v = np.asarray(out[name])
                sl = tuple([i] + [slice(0, s) for s in v.shape])
                arr[sl] = v
            data[name] = (var.dims, arr)
    mask = np.zeros((len(lots), ntile), bool)
    for i, lot in enumerate(lots):
        mask[i, : len(lot.tiles)] = True
    data["tile_mask"] = (("lot", "tile"), mask)
    data["lot_attributes"] = (("lot", "attribute"), np.stack([lot.attributes for lot in lots]))
    data["measured_property"] = (("lot",), np.array([lot.property for lot in lots]))
    for name, (dims, arr) in (extra or {}).items():
        data[name] = (dims, arr)
    return xr.Dataset(data, coords=coords)

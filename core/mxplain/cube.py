"""The results cube (``results.zarr``): the SPEC's variables, written lot by lot.

Each lot's variables are written in one region write along ``lot``, then the lot's ``lot_done`` flag;
a lot counts only once flagged, so an interrupted run resumes with the unflagged lots.
Open a finished cube with :func:`open_results` (``xarray.open_zarr``): ``cube.sel(lot=...)`` and
per-lot aggregation (``cube.prediction.where(cube.tile_mask).mean("tile")``) work directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from mxplain import outputs, zarrio
from mxplain.errors import UserError
from mxplain.interfaces import Variable

FLAG = "lot_done"
FORMAT_VERSION = 1
DIRECTIONS = ("increase", "decrease")

BASE_VARIABLES: dict[str, Variable] = {
    "tile_mask": Variable(("lot", "tile"), "bool"),
    "prediction": Variable(("lot", "tile"), "float32"),
    "example_tile": Variable(("lot", "y", "x"), "uint8", 0),
}
EDITOR_VARIABLES: dict[str, Variable] = {
    "reconstruction_prediction": Variable(("lot", "tile"), "float32"),
}
#: units and descriptions of the pipeline's own variables and lot tables; ``{p}``: the property's
#: units (the store's ``property_units``, the cube attribute of the same name)
PIPELINE_ATTRS: dict[str, tuple[str, str]] = {
    "tile_mask": ("", "true where a real tile is stored"),
    "example_tile": ("", "the lot's first tile (uint8 grey levels): the figures' example"),
    "tile_count": ("1", "real tiles covered per lot"),
    "prediction": ("{p}", "predictor on the original tile"),
    "reconstruction_prediction": ("{p}", "predictor on the editor's reconstruction at the lot's "
                                         "own attributes"),
    "lot_attributes": ("1", "the lot's attribute labels in [0, 1]"),
    "measured_property": ("{p}", "the lot's measured (or ground-truth) property"),
    "true_sensitivity": ("{p} per unit attribute", "synthetic data only: the law's effect"),
}


def cube_layout(store, n_tiles: int, ctx) -> tuple[dict, dict]:
    """The cube's own dimensions (sizes) and coordinates, before the explainers' extra ones:
    ``lot``, ``tile``, ``attribute``, ``direction``, ``y``, ``x`` and, where the dataset segments
    its tiles, ``structure`` (``ctx.structures``)."""
    sizes = {"lot": store.n_lots, "tile": n_tiles, "attribute": len(store.attributes),
             "direction": len(DIRECTIONS), "y": store.tile_size, "x": store.tile_size}
    coords = {"lot": np.array(store.lot_ids, dtype=str),
              "attribute": np.array(store.attributes, dtype=str),
              "direction": np.array(DIRECTIONS, dtype=str)}
    if ctx.structures:
        sizes["structure"] = len(ctx.structures)
        coords["structure"] = np.array(list(ctx.structures), dtype=str)
    return sizes, coords


def variable_attrs(variables: dict[str, Variable], property_units: str) -> dict[str, dict]:
    """Per cube variable its zarr/xarray attributes ``units`` and ``description`` (where known):
    the explainer's declaration (:class:`~mxplain.interfaces.Variable`) over
    :data:`PIPELINE_ATTRS`; a unit of the property where the store names none is left out."""
    out: dict[str, dict] = {}
    for name, (units, description) in PIPELINE_ATTRS.items():
        units = units.format(p=property_units) if property_units or "{p}" not in units else ""
        out[name] = {k: v for k, v in (("units", units), ("description", description)) if v}
    for name, var in variables.items():
        mine = {k: v for k, v in (("units", var.units), ("description", var.description)) if v}
        out[name] = {**out.get(name, {}), **mine}
    return {k: v for k, v in out.items() if v}


def write_variable_attrs(path: Path, attrs: dict[str, dict]) -> None:
    """Set each variable's attributes in the store at ``path`` (those it holds)."""
    import zarr

    with zarrio.quiet():
        g = zarr.open_group(str(path), mode="r+")
        for name, a in attrs.items():
            if name in g:
                g[name].attrs.update(a)
        zarr.consolidate_metadata(str(path))


class CubeWriter:
    """Creates ``results.zarr`` (or reopens it to resume) and writes one lot at a time."""

    def __init__(self, path: Path, variables: dict[str, Variable], sizes: dict[str, int],
                 coords: dict[str, np.ndarray], lot_tables: dict[str, xr.DataArray],
                 attrs: dict, resume: bool, owned: bool = False):
        """``resume``: continue the cube at ``path`` after checking every written lot against its
        digest (damaged lots are unflagged and computed again). ``owned``: ``path`` was claimed
        by this run (:meth:`mxplain.runfolder.RunFolder.claim`), so a cube whose metadata no
        longer reads is rebuilt rather than refused."""
        self.path = Path(path)
        self.variables = variables
        self.sizes = sizes
        self.repaired: list[str] = []
        for name, var in variables.items():
            unknown = [d for d in var.dims if d not in sizes]
            if var.dims[0] != "lot" or unknown:
                raise UserError(f"cube variable {name!r} has dims {var.dims}: the first must be "
                                f"'lot' and {unknown} are not cube dimensions")
        var_attrs = variable_attrs(variables, str(attrs.get("property_units") or ""))
        if resume and self._resumable(attrs, owned):
            # the attributes follow the atomic creation: a run killed between the two resumes
            # to the same cube (idempotent)
            write_variable_attrs(self.path, var_attrs)
            return
        outputs.prepare_store(self.path, "mxplain_results_cube", "results cube", resume=False)
        zarrio.create_template(
            self.path,
            {n: (v.dims, v.dtype) for n, v in variables.items()},
            sizes, coords, {"mxplain_results_cube": FORMAT_VERSION, "complete": False, **attrs},
            FLAG, chunks={"tile": sizes.get("tile", 1)}, data=lot_tables,
        )
        write_variable_attrs(self.path, var_attrs)

    def _resumable(self, attrs: dict, owned: bool) -> bool:
        if not self.path.exists():
            return False
        old = outputs.store_marker(self.path)
        if old is None or old.get("mxplain_results_cube") is None:
            if owned:
                outputs.remove_store(self.path, "results cube")  # damaged metadata: rebuilt
                self.repaired.append("metadata")
                return False
            outputs.prepare_store(self.path, "mxplain_results_cube", "results cube", resume=True)
            return False  # an empty folder (anything else was refused)
        if old.get("mxplain_config_hash") != attrs.get("mxplain_config_hash"):
            raise UserError(f"{str(self.path)!r} was written with another config; "
                            f"resume needs the same config")
        try:
            self.repaired += zarrio.verify_or_unflag(self.path, FLAG, "results cube", repair=True)
        except UserError:
            if not owned:
                raise
            outputs.remove_store(self.path, "results cube")
            self.repaired.append("metadata")
            return False
        return True

    @classmethod
    def reopen(cls, path: Path, variables: dict[str, Variable], sizes: dict[str, int]) -> CubeWriter:
        """A writer of lots into a cube another process created (a Dask worker's)."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.variables = variables
        self.sizes = sizes
        return self

    def done(self) -> np.ndarray:
        return zarrio.lots_done(self.path, FLAG)

    def write_lot(self, index: int, values: dict[str, np.ndarray]) -> None:
        """Pad the tile axis, check every declared variable is present and finite where it
        should be, write the lot's region, then flag it."""
        missing = set(self.variables) - set(values)
        if missing:
            raise RuntimeError(f"lot {index}: no values for {sorted(missing)}")
        out = {}
        for name, var in self.variables.items():
            dims = var.dims[1:]
            arr = np.asarray(values[name])
            target = tuple(self.sizes[d] for d in dims)
            if arr.shape != target:
                if "tile" not in dims:
                    raise RuntimeError(f"{name}: shape {arr.shape}, expected {target}")
                ax = dims.index("tile")
                pad = [(0, 0)] * arr.ndim
                pad[ax] = (0, target[ax] - arr.shape[ax])
                if pad[ax][1] < 0 or arr.shape[:ax] + arr.shape[ax + 1:] != \
                        target[:ax] + target[ax + 1:]:
                    raise RuntimeError(f"{name}: shape {arr.shape}, expected {target}")
                arr = np.pad(arr.astype(var.dtype), pad,
                             constant_values=zarrio.fill_for(var.dtype))
            out[name] = (dims, arr.astype(var.dtype))
        zarrio.write_lot(self.path, index, out, FLAG)

    def finish(self, attrs: dict | None = None) -> None:
        zarrio.update_attrs(self.path, {"complete": True, **(attrs or {})})


def open_results(path: str | Path, verify: bool = True) -> xr.Dataset:
    """Open a results cube (a run folder or its ``results.zarr``). ``verify``: every written lot is
    checked against its digest first (a lost, truncated or altered chunk is a
    :class:`UserError` naming the variable and the lot)."""
    path = Path(path)
    if (path / "results.zarr").exists():
        path = path / "results.zarr"
    zarrio.read_marked(path, "results cube", "mxplain_results_cube", FORMAT_VERSION)
    if verify:
        zarrio.verify_or_unflag(path, FLAG, "results cube", repair=False)
    return zarrio.open_dataset(path)

"""Components of the core itself, registered through the ``mxplain`` entry point group like any
plugin: the ``store`` dataset (an existing tile store, e.g. made by ``mxplain data ingest``)."""

from __future__ import annotations

from pathlib import Path

from mxplain import hookimpl
from mxplain.errors import UserError
from mxplain.interfaces import Dataset, DataShape, RunContext
from mxplain.review_config import check_descriptions
from mxplain.store import TileStore


class StoreDataset(Dataset):
    """Use an existing tile store (written by ``mxplain data ingest`` or ``mxplain data synth``).

    ``attribute_descriptions`` (``[data.attribute_descriptions]``, attribute -> text): the
    definition ``mxplain review`` shows with each question (``None``: built-in definitions of size,
    porosity, polydispersity and facetness)."""

    name = "store"

    def __init__(self, path: str = "", attribute_descriptions: dict | None = None):
        self.path = path
        self.attribute_descriptions = attribute_descriptions

    @classmethod
    def check_params(cls, params: dict) -> None:
        if not params.get("path"):
            raise UserError("[data] name = \"store\" needs path = \"<tile store>\"")
        check_descriptions(params.get("attribute_descriptions"))

    @classmethod
    def data_shape(cls, params: dict) -> DataShape:
        """The store's shape from its metadata; a path that is not a complete tile store is a
        :class:`UserError` here, before the run starts."""
        store = TileStore.open(params["path"])
        return DataShape(store.n_lots, store.n_tiles, int(store.counts.max()), store.tile_size,
                         attributes=tuple(store.attributes))

    def build(self, path: Path, ctx: RunContext, resume: bool = False) -> TileStore:
        if not self.path:
            raise UserError("[data] name = \"store\" needs path = \"<tile store>\"")
        return TileStore.open(self.path)


@hookimpl
def mxplain_datasets():
    return [StoreDataset]

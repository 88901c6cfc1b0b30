"""Model checkpoints shipped inside installed packages, and the data they were trained on.

A config names a checkpoint by path or, for a file shipped as package data, by
``checkpoint = "package:<package>/<path inside it>"``, e.g.
``"package:mxplain_attgan/data/quickstart_attgan.pt"``. :func:`resolve_checkpoint` finds the file
with :func:`importlib.resources.files`, so it works for editable and wheel installs alike; the core
resolves a resource of any installed package by name and never imports a plugin for it.

A shipped checkpoint records its provenance at the top level of the checkpoint payload
(``payload["provenance"]``, plain data): at least ``tile_store_content_hash`` (the
:meth:`~mxplain.store.TileStore.content_hash` of the tile store it was trained on) and ``command``
(how to reproduce it), and optionally ``tile_store_hash_parts``: the parts of the store the hash
covers, ``["lot ids", "attributes", "tiles"]`` for a model that never saw the property (an editor:
its checkpoint then serves every property law on the same tiles); absent, the hash covers the
properties too. :func:`check_trained_on` refuses, with one :class:`~mxplain.errors.UserError`
line, to use it on a tile store with another content hash: explanations would be computed with an
editor that never saw this data.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from mxplain.errors import UserError

PACKAGE_PREFIX = "package:"


def is_package_ref(ref: str | Path) -> bool:
    """Whether ``ref`` names a package resource (``package:<package>/<path>``)."""
    return isinstance(ref, str) and ref.startswith(PACKAGE_PREFIX)


def resolve_checkpoint(ref: str | Path) -> Path:
    """A checkpoint reference -> a file path; a plain path is returned as it is.

    ``package:<package>/<relative path>``: the file inside the installed package ``<package>``
    (a dotted import name), a :class:`UserError` naming what is missing when the package is not
    installed or holds no such file."""
    if not is_package_ref(ref):
        return Path(ref)
    spec = ref[len(PACKAGE_PREFIX):]
    package, _, rel = spec.partition("/")
    if not package or not rel or ".." in rel.split("/"):
        raise UserError(f"checkpoint {ref!r}: expected 'package:<package>/<path inside it>'")
    try:
        root = importlib.resources.files(package)
    except (ModuleNotFoundError, TypeError):
        raise UserError(f"checkpoint {ref!r}: no installed package {package!r}") from None
    res = root.joinpath(*rel.split("/"))
    if not res.is_file():
        raise UserError(f"checkpoint {ref!r}: package {package!r} ships no file {rel!r}")
    path = Path(str(res))
    if not path.is_file():  # a zipped install: torch.load needs a real file
        raise UserError(f"checkpoint {ref!r}: package {package!r} is not installed as files")
    return path


def checkpoint_provenance(path: str | Path) -> dict:
    """The ``provenance`` a checkpoint records (empty when it records none)."""
    from mxplain.checkpoint import read_checkpoint

    prov = read_checkpoint(path).get("provenance")
    return dict(prov) if isinstance(prov, dict) else {}


def check_trained_on(ref: str | Path, store, kind: str) -> dict:
    """Refuse a checkpoint trained on another tile store than ``store``; returns its provenance.

    Compares the recorded ``tile_store_content_hash`` with ``store.content_hash()`` (without the
    properties where ``tile_store_hash_parts`` leaves out ``"property"``); a checkpoint that
    records no hash is not checked."""
    prov = checkpoint_provenance(resolve_checkpoint(ref))
    want = prov.get("tile_store_content_hash")
    if not want:
        return prov
    parts = prov.get("tile_store_hash_parts")
    have = store.content_hash(include_property=parts is None or "property" in parts)
    if str(have) != str(want):
        how = prov.get("command") or "train it again on this data"
        raise UserError(f"{kind} checkpoint {str(ref)!r} was trained on another tile store "
                        f"(content hash {str(want)[:16]}, this run's is {str(have)[:16]}): the "
                        f"data differ; retrain it with `{how}` or remove `checkpoint` from "
                        f"[{kind}] to train it in this run")
    return prov


__all__ = ["PACKAGE_PREFIX", "is_package_ref", "resolve_checkpoint", "checkpoint_provenance",
           "check_trained_on"]

"""What mxplain may write and delete: only what it wrote itself.

Every output path (a run folder, a tile store, a results cube, a feature cache) is either new (or an
empty folder) or carries mxplain's own marker: a run folder's ``state.json`` with ``mxplain_run``,
a zarr store's root attribute (``mxplain_tile_store``, ``mxplain_results_cube``, ...). Anything
else is refused with one line naming the path and what is in it, before anything is written.

Deleting a zarr store removes only the files zarr writes (``zarr.json``, the v2 ``.z*`` metadata,
chunk files of arrays) and the folders that end up empty; a store that holds any other file is
refused first, so nothing is deleted at all. A store is created atomically: its template is written
into a sibling ``.<name>.creating`` folder (marked by :data:`CREATING` as its first file) and
renamed into place, so a kill at any moment leaves either no store or a complete template.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mxplain.errors import UserError

#: the first file of a store being created; a leftover folder with it is mxplain's to delete
CREATING = ".mxplain-creating"
ZARR_METADATA = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
_V2_CHUNK = re.compile(r"^\d+(\.\d+)*$")


def check_path_text(path, what: str) -> Path:
    """An output path given on the command line or in a config: refuse an empty one."""
    if path is None or not str(path).strip():
        raise UserError(f"{what} is empty: give a path")
    return Path(path)


def describe(path: Path, limit: int = 4) -> str:
    """``'a.txt', 'notes/' and 3 more`` for a folder's entries (for refusals)."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(path).iterdir())
    except OSError as exc:
        return f"cannot be listed ({exc.strerror})"
    if not names:
        return "nothing"
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _members(root: Path) -> set[str] | None:
    """Paths of the arrays and groups a zarr v3 store's consolidated root metadata lists (None
    where the root has none: then files are judged by zarr's names alone)."""
    try:
        doc = json.loads((root / "zarr.json").read_text(encoding="utf-8"))
        members = doc["consolidated_metadata"]["metadata"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return {str(k) for k in members} if isinstance(members, dict) else None


def _is_zarr_file(path: Path, root: Path, members: set[str] | None) -> bool:
    rel = path.relative_to(root).as_posix()
    if rel in ("zarr.json", CREATING) or path.name == CREATING:
        return True
    if members is not None:  # <member>/zarr.json and <member>/c/... of a listed member only
        head, _, tail = rel.partition("/")
        return head in members and (tail == "zarr.json" or tail.startswith("c/"))
    name = path.name
    if name in ZARR_METADATA:
        return True
    for parent in path.relative_to(root).parents:  # a v3 chunk: <array>/c/..., beside zarr.json
        folder = root / parent
        if folder.name == "c" and (folder.parent / "zarr.json").is_file():
            return True
    return bool(_V2_CHUNK.match(name)) and (path.parent / ".zarray").is_file()


def store_files(root: Path) -> tuple[list[Path], list[Path]]:
    """Files below ``root`` that zarr (or mxplain's creation marker) wrote, and all the others."""
    ours, foreign = [], []
    members = _members(Path(root))
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_symlink() or not p.is_file():
                foreign.append(p)
            else:
                (ours if _is_zarr_file(p, Path(root), members) else foreign).append(p)
    return ours, foreign


def store_marker(path: Path) -> dict | None:
    """The root attributes of a zarr v3 store at ``path`` (read without zarr: no store is opened
    for writing), or None where ``path`` is not a readable zarr group."""
    meta = Path(path) / "zarr.json"
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("node_type") != "group":
        return None
    attrs = doc.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


def remove_store(path: Path, what: str) -> None:
    """Delete a zarr store mxplain wrote: its zarr files, then its folders once empty. Refused as a
    whole (nothing deleted) when it holds any other file."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir() or path.is_symlink():
        raise UserError(f"{what} {str(path)!r} is not a folder mxplain wrote; not deleting it")
    ours = refuse_foreign(path, what)
    for p in ours:
        p.unlink()
    remove_empty_dirs(path)


def refuse_foreign(path: Path, what: str) -> list[Path]:
    """A store's own files; a :class:`UserError` naming them when it holds any other file."""
    ours, foreign = store_files(path)
    if foreign:
        rel = ", ".join(repr(str(p.relative_to(path))) for p in foreign[:3])
        raise UserError(f"{what} {str(path)!r} holds files mxplain did not write ({rel}); "
                        f"move them away first")
    return ours


def remove_empty_dirs(root: Path) -> None:
    """Remove ``root`` and the folders below it that are empty (bottom-up); keep any that is not."""
    root = Path(root)
    if not root.is_dir() or root.is_symlink():
        return
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def clear_leftover(tmp: Path) -> None:
    """A ``.creating`` folder of a killed creation: delete it if it is mxplain's (holds
    :data:`CREATING`, or nothing at all); refuse otherwise."""
    if not tmp.exists():
        return
    if tmp.is_dir() and not tmp.is_symlink() and ((tmp / CREATING).is_file()
                                                  or not any(tmp.iterdir())):
        remove_store(tmp, "leftover of an interrupted store creation")
        return
    raise UserError(f"{str(tmp)!r} is in the way of a store mxplain is creating and is not "
                    f"mxplain's (it holds {describe(tmp) if tmp.is_dir() else 'a file'}); move it")


def creating_path(path: Path) -> Path:
    return Path(path).with_name(f".{Path(path).name}.creating")


def prepare_store(path, marker: str, what: str, resume: bool, delete: bool = True) -> bool:
    """Make ``path`` ready for a zarr store with root attribute ``marker``. Returns True when an
    existing store of that kind is to be continued (``resume``), False when a new one is to be
    created there. An existing store of that kind is deleted (:func:`remove_store`) unless
    resumed; a missing path, an empty folder or a leftover creation folder are fine; anything else
    is refused, naming what is there. ``delete=False``: only check (nothing is deleted)."""
    path = check_path_text(path, what)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UserError(f"{what} {str(path)!r} exists and is not a folder; choose a new path")
    if path.is_dir():
        attrs = store_marker(path)
        if attrs is not None and attrs.get(marker) is not None:
            if resume or not delete:
                refuse_foreign(path, what)
                return resume
            remove_store(path, what)
        elif any(path.iterdir()):
            damaged = (path / "zarr.json").exists() and not store_files(path)[1]
            why = ("its zarr.json is damaged (not an mxplain store's)" if damaged else
                   f"it is not an mxplain store (it holds {describe(path)})")
            raise UserError(f"{what} {str(path)!r} exists and {why}; choose a new path or move "
                            f"it away")
    if delete:
        clear_leftover(creating_path(path))
    return False


def is_within(inner: Path, outer: Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies below it (resolved, so ``.`` and links count)."""
    try:
        a, b = Path(inner).resolve(), Path(outer).resolve()
    except (OSError, RuntimeError):
        return False
    return a == b or b in a.parents


def refuse_output_in_input(out: Path, inputs: dict[str, Path], what: str) -> None:
    """An output equal to an input or inside an input folder would destroy or re-read it."""
    for label, p in inputs.items():
        if p is not None and Path(p).exists() and is_within(out, p):
            where = "is" if Path(out).resolve() == Path(p).resolve() else "lies inside"
            raise UserError(f"{what} {str(out)!r} {where} the input {label} {str(p)!r}; choose an "
                            f"output outside it")

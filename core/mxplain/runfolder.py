"""The run folder: one run at a time (a lock), stage state for ``--resume``, atomic writes, and the
record of what mxplain wrote there (the only files ``--overwrite`` deletes).

``state.json`` is the folder's marker (``"mxplain_run": 1``). It lists the stages done, the files
mxplain wrote (``written``: every file below ``figures/``, ``models/``, ``report/`` and the top-level
``config.toml`` / ``metrics.json`` that were not there when the run started), the zarr stores it
created (``stores``, claimed *before* they are created) and the files that were there before the run
(``foreign``, never touched). A folder that is neither new, nor empty, nor marked is refused.

Commands that add to a finished run (``mxplain review``: ``review/``, ``metrics.json``, the report)
take the same lock (:func:`take_lock`), write only files that are new or recorded as mxplain's
(:func:`may_write`) and add what they wrote to ``written`` (:func:`record_written`).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from mxplain import outputs
from mxplain.errors import UserError

LOCK = ".mxplain.lock"
STATE = "state.json"
MARKER = "mxplain_run"
OUTPUTS = ("config.toml", "tiles.zarr", "models", "results.zarr", "metrics.json", "figures",
           "report", STATE)
#: folders and top-level files whose new files count as written by mxplain
WRITTEN_DIRS = ("figures", "models", "report")
WRITTEN_FILES = ("config.toml", "metrics.json")
STORES = ("tiles.zarr", "results.zarr")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_state(path: Path) -> dict | None:
    """A run folder's state, None where it has no ``state.json``; a state that is not mxplain's
    (not a JSON object, no marker) is a :class:`UserError`."""
    p = Path(path) / STATE
    if not p.exists():
        return None
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        state = None
    if not isinstance(state, dict) or not (MARKER in state or "config_hash" in state):
        raise UserError(f"{str(p)!r} is not an mxplain run state (damaged or someone else's); "
                        f"choose another --out")
    return state


def _files_below(root: Path, rel: str) -> list[str]:
    base = root / rel
    if base.is_file() and not base.is_symlink():
        return [rel]
    if not base.is_dir() or base.is_symlink():
        return []
    out = []
    for dirpath, _dirs, files in os.walk(base):
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out.append(p.relative_to(root).as_posix())
    return out


def take_lock(path: Path) -> None:
    """Take the run folder's lock (one mxplain command at a time); a live holder is a
    :class:`UserError`, a dead one's lock is taken over."""
    lock = Path(path) / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid) and pid != os.getpid():
                raise UserError(
                    f"run folder {str(path)!r} is in use by another mxplain run (pid "
                    f"{pid}); if no mxplain runs there (check with `ps -p {pid}`), delete "
                    f"{str(lock)!r}") from None
            lock.unlink(missing_ok=True)  # stale lock of a killed run
            continue
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.ENOSPC):
                raise UserError(f"cannot write in run folder {str(path)!r}: "
                                f"{exc.strerror}") from None
            raise
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise UserError(f"cannot lock run folder {str(path)!r}")


class RunFolder:
    """Open (create, resume or overwrite) a run folder; see the module docstring."""

    def __init__(self, path: Path, resume: bool, overwrite: bool, config_hash: str):
        self.path = outputs.check_path_text(path, "--out")
        self.resume = resume
        self.config_hash = config_hash
        state = self._check(resume, overwrite)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run folder {str(self.path)!r}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise UserError(f"run folder {str(self.path)!r} is not writable")
        self._lock()
        try:
            self._prepare(state, resume, overwrite)
        except BaseException:
            self.release()
            raise

    # ---- checks (nothing is written) ------------------------------------------------------------
    def _check(self, resume: bool, overwrite: bool) -> dict | None:
        p = self.path
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise UserError(f"--out {str(p)!r} exists and is not a folder")
        if not p.is_dir():
            return None
        state = read_state(p)
        if state is None:
            entries = [e for e in p.iterdir() if e.name != LOCK]
            if entries:
                raise UserError(f"--out {str(p)!r} is not an mxplain run folder (it holds "
                                f"{outputs.describe(p)}); choose a new or empty folder")
            return None
        if resume:
            if state.get("config_hash") not in (None, self.config_hash):
                raise UserError(f"run folder {str(p)!r} holds a run of another config; "
                                f"--resume needs the same config")
        elif not overwrite:
            raise UserError(f"run folder {str(p)!r} already holds a run; use --resume to "
                            f"continue it, --overwrite to replace it, or another --out")
        else:
            for store in self._stores(state):  # refuse before anything is deleted
                if (p / store).is_dir():
                    outputs.refuse_foreign(p / store, "store")
        return state

    # ---- the lock -------------------------------------------------------------------------------
    def _lock(self) -> None:
        take_lock(self.path)

    def release(self) -> None:
        (self.path / LOCK).unlink(missing_ok=True)

    # ---- state ----------------------------------------------------------------------------------
    @staticmethod
    def _stores(state: dict) -> list[str]:
        if MARKER not in state:  # a folder of an mxplain before the record: its known stores
            return list(STORES)
        return [s for s in state.get("stores", []) if s in STORES]

    def _prepare(self, state: dict | None, resume: bool, overwrite: bool) -> None:
        if state is not None and resume:
            self._state = {**state, MARKER: 1}
            self._state.setdefault("foreign", [])
            self._state.setdefault("written", [])
            self._state.setdefault("stores", self._stores(state))
            self.record()
            return
        if state is not None and overwrite:
            self._delete_written(state)
        foreign = []
        for dirpath, _dirs, files in os.walk(self.path):
            for f in files:
                rel = (Path(dirpath) / f).relative_to(self.path).as_posix()
                if rel != LOCK:
                    foreign.append(rel)
        self._state = {MARKER: 1, "config_hash": self.config_hash, "done": [],
                       "foreign": sorted(foreign), "written": [], "stores": []}
        self._save()

    def _delete_written(self, state: dict) -> None:
        """``--overwrite``: the files and stores the previous run recorded, nothing else."""
        if MARKER in state:
            written = [w for w in state.get("written", []) if isinstance(w, str)]
        else:
            written = [f for top in (*WRITTEN_DIRS, *WRITTEN_FILES)
                       for f in _files_below(self.path, top)]
        for store in self._stores(state):
            outputs.remove_store(self.path / store, "store")
        parents = set()
        for rel in written:
            p = self.path / rel
            if outputs.is_within(p, self.path) and p.is_file() and not p.is_symlink():
                p.unlink()
                parents.add(p.parent)
        for folder in sorted(parents, key=lambda q: -len(q.parts)):
            while folder != self.path and outputs.is_within(folder, self.path):
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent
        (self.path / STATE).unlink(missing_ok=True)

    def _save(self) -> None:
        write_atomic(self.path / STATE, json.dumps(self._state, indent=1))

    def state(self) -> dict:
        return dict(self._state)

    def claim(self, store: str) -> None:
        """Record a zarr store as mxplain's before it is created (so a kill during its creation
        leaves it deletable by ``--overwrite``)."""
        if store not in self._state["stores"]:
            self._state["stores"].append(store)
            self._save()

    def record(self) -> None:
        """Add the files written since the run started to ``written``."""
        foreign = set(self._state.get("foreign", []))
        written = set(self._state.get("written", []))
        for top in (*WRITTEN_DIRS, *WRITTEN_FILES):
            for rel in _files_below(self.path, top):
                if rel not in foreign and not rel.endswith(".tmp"):
                    written.add(rel)
        if written != set(self._state.get("written", [])):
            self._state["written"] = sorted(written)
            self._save()

    def mark(self, stage: str) -> None:
        self._state["config_hash"] = self.config_hash
        done = self._state.setdefault("done", [])
        if stage not in done:
            done.append(stage)
        self.record()
        self._save()

    def is_done(self, stage: str) -> bool:
        return self.resume and stage in self._state.get("done", [])


# ---- files written into a finished run by later commands (mxplain review) -----------------------
def written(path: Path) -> set[str]:
    """The files (relative paths) a run folder's state records as mxplain's."""
    state = read_state(path) or {}
    return {w for w in state.get("written", []) if isinstance(w, str)}


def may_write(path: Path, rel: str) -> bool:
    """Whether mxplain may (over)write ``rel`` in the run folder ``path``: it does not exist, or
    the state records it as written by mxplain (a file someone else put there is never replaced)."""
    target = Path(path) / rel
    if not (target.exists() or target.is_symlink()):
        return True
    return rel in written(path) and target.is_file() and not target.is_symlink()


def record_written(path: Path, files) -> None:
    """Add ``files`` (paths relative to the run folder ``path``, just written there by a command
    that runs on a finished run, such as ``mxplain review``) to the state's ``written`` record, so
    that ``mxplain run --overwrite`` deletes them and nothing else. The caller holds the lock
    (:func:`take_lock`)."""
    state = read_state(path)
    if state is None:
        raise UserError(f"{str(path)!r} has no {STATE}: not an mxplain run folder")
    have = [w for w in state.get("written", []) if isinstance(w, str)]
    new = sorted(set(have) | {Path(f).as_posix() for f in files})
    if new != sorted(have):
        state["written"] = new
        write_atomic(Path(path) / STATE, json.dumps(state, indent=1))

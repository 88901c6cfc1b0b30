"""The run folder: one run at a time (a lock), stage state for ``--resume``, atomic writes."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from mxplain.errors import UserError

LOCK = ".mxplain.lock"
STATE = "state.json"
OUTPUTS = ("config.toml", "tiles.zarr", "models", "results.zarr", "metrics.json", "figures",
           "report", STATE)


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
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunFolder:
    def __init__(self, path: Path, resume: bool, overwrite: bool, config_hash: str):
        self.path = Path(path)
        self.resume = resume
        self.config_hash = config_hash
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run folder {str(self.path)!r}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise UserError(f"run folder {str(self.path)!r} is not writable")
        self._lock()
        try:
            self._prepare(overwrite)
        except BaseException:
            self.release()
            raise

    def _lock(self) -> None:
        lock = self.path / LOCK
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid) and pid != os.getpid():
                    raise UserError(f"run folder {str(self.path)!r} is in use by another mxplain "
                                    f"run (pid {pid})") from None
                lock.unlink(missing_ok=True)  # stale lock of a killed run
                continue
            except OSError as exc:
                if exc.errno in (errno.EROFS, errno.EACCES, errno.ENOSPC):
                    raise UserError(f"cannot write in run folder {str(self.path)!r}: "
                                    f"{exc.strerror}") from None
                raise
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        raise UserError(f"cannot lock run folder {str(self.path)!r}")

    def release(self) -> None:
        (self.path / LOCK).unlink(missing_ok=True)

    def _prepare(self, overwrite: bool) -> None:
        existing = [n for n in OUTPUTS if (self.path / n).exists()]
        if self.resume:
            state = self.state()
            if existing and state.get("config_hash") not in (None, self.config_hash):
                raise UserError(f"run folder {str(self.path)!r} holds a run of another config; "
                                f"--resume needs the same config")
            return
        if existing and not overwrite:
            raise UserError(f"run folder {str(self.path)!r} already holds a run; use --resume to "
                            f"continue it, --overwrite to replace it, or another --out")
        for name in existing:
            p = self.path / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    def state(self) -> dict:
        p = self.path / STATE
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def mark(self, stage: str) -> None:
        state = self.state()
        state["config_hash"] = self.config_hash
        state.setdefault("done", [])
        if stage not in state["done"]:
            state["done"].append(stage)
        write_atomic(self.path / STATE, json.dumps(state, indent=1))

    def is_done(self, stage: str) -> bool:
        return self.resume and stage in self.state().get("done", [])

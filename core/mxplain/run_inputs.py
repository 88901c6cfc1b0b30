"""What a run reads and where it writes, checked before anything is written: the run folder may
not be or lie inside an input, ``--overwrite`` may not delete one, a checkpoint must be a file.
Steps of :func:`mxplain.pipeline.run`."""

from __future__ import annotations

from pathlib import Path

from mxplain import outputs
from mxplain.errors import UserError


def _check_input_file(path, what: str) -> None:
    p = Path(str(path))
    if str(path).startswith("package:"):
        return
    if p.is_dir():
        raise UserError(f"{what} {str(p)!r} is a folder, not a checkpoint file")
    if not p.is_file():
        raise UserError(f"{what} {str(p)!r} does not exist")


def _input_paths(cfg: dict, cfg_path: Path | None) -> dict[str, Path]:
    """The files and folders a run reads: the config file and every string in it that names an
    existing path (a store, a checkpoint, a weights file)."""
    found = {} if cfg_path is None else {"config": Path(cfg_path)}

    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where} {k}" if where else f"[{k}]")
        elif isinstance(value, str) and value.strip() and not value.startswith("package:"):
            try:
                if Path(value).exists():
                    found[where] = Path(value)
            except (OSError, ValueError):
                pass

    walk({k: v for k, v in cfg.items() if k != "run"}, "")
    return found


def check_paths(cfg: dict, cfg_path: Path | None, out: Path, overwrite: bool) -> None:
    """The run folder may not be (or lie inside) an input; with ``overwrite`` no input may lie
    inside the run folder it replaces."""
    inputs = _input_paths(cfg, cfg_path)
    outputs.refuse_output_in_input(out, inputs, "--out")
    if overwrite and out.is_dir():
        for label, p in inputs.items():
            if outputs.is_within(p, out):
                raise UserError(f"the input {label} {str(p)!r} lies inside the run folder "
                                f"{str(out)!r} that --overwrite replaces; move it out first")

"""Is the results cube of one small config with every built-in explainer the same under two versions
of the code? (issue 18: "the cube is identical before and after the redesign, or every difference
is explained").

    python tests/core/cube_identity.py run OUT             # a run of CONFIG into OUT
    python tests/core/cube_identity.py compare OLD NEW     # variable by variable

Run it once with the old code first on ``PYTHONPATH`` (``git archive OLD core plugins | tar -x -C
/tmp/old``; ``PYTHONPATH=/tmp/old/core:/tmp/old/plugins``), once with the new. ``compare`` prints
every variable of the old cube as ``identical`` or what differs, the variables only the new cube
has, and exits 1 when a shared variable differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from tiny_run import DATA, MODELS  # noqa: E402 - the tiny runs the core tests share

CONFIG = DATA + MODELS + """
[explain.forward]
steps = 3
n_boot = 50
[explain.backward]
max_iter = 10
n_boot = 50
[explain.gradcam]
[explain.compare]
max_tiles = 2
curve_steps = 4
ig_steps = 4
sweep_steps = 3
overlay_tiles = 1
[explain.latent_design]
steps = 3
max_tiles = 2
figure_lots = 1
[run]
explain_tiles = 4
report = false
editor_eval_tiles = 2
editor_realism_tiles = 0
seed = 0
"""


def _digest_names(a, b) -> str:
    old, new = [str(v) for v in a["digest_variable"].values], \
        [str(v) for v in b["digest_variable"].values]
    extra = sorted(set(new) - set(old))
    if set(old) <= set(new):
        return "covers the old variables" + (f" and the new {extra}" if extra else "")
    return f"DIFFERS: lost {sorted(set(old) - set(new))}"


#: variables whose difference follows from the new variables (checked, then explained)
EXPLAINED = {
    "digest_variable": _digest_names,
    "lot_digest": lambda a, b: "identical" if a["lot_digest"].equals(b["lot_digest"]) else (
        "a digest of each lot variable as written, the *_cost_ms timings and any new variables "
        "included, so it differs with them"),
}


def run(out: str) -> None:
    from mxplain.pipeline import run as run_pipeline

    cfg = Path(out).with_suffix(".toml")
    cfg.write_text(CONFIG)
    run_pipeline(cfg, out=out, progress=False)


def compare(old: str, new: str) -> int:
    from mxplain.cube import open_results

    a, b = open_results(old).load(), open_results(new).load()
    differ = 0
    for name in sorted(set(a.variables)):
        if name not in b.variables:
            print(f"{name}: missing in the new cube")
            differ += 1
            continue
        if name.endswith("_cost_ms"):  # wall-clock milliseconds: differ between any two runs
            print(f"{name}: a timing (not compared)")
            continue
        if name in EXPLAINED:
            print(f"{name}: {EXPLAINED[name](a, b)}")
            continue
        va, vb = a[name], b[name]
        why = []
        if va.dims != vb.dims:
            why.append(f"dims {va.dims} vs {vb.dims}")
        elif va.dtype != vb.dtype:
            why.append(f"dtype {va.dtype} vs {vb.dtype}")
        elif not np.array_equal(np.asarray(va.values), np.asarray(vb.values),
                                equal_nan=va.dtype.kind == "f"):
            why.append("values differ")
        if name != "lot_digest" and dict(va.attrs) != dict(vb.attrs):
            why.append(f"attributes {dict(va.attrs)} vs {dict(vb.attrs)}")
        print(f"{name}: {'identical' if not why else '; '.join(why)}")
        differ += bool(why)
    for name in sorted(set(b.variables) - set(a.variables)):
        print(f"{name}: new ({', '.join(b[name].dims)}, {b[name].dtype})")
    skip = {"provenance", "mxplain_version", "torch_version", "python", "config", "plugins"}
    for key in sorted((set(a.attrs) | set(b.attrs)) - skip):
        if a.attrs.get(key) != b.attrs.get(key):
            print(f"cube attribute {key}: {a.attrs.get(key)!r} vs {b.attrs.get(key)!r}")
    print(f"{differ} shared variable(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)

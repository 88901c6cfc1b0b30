"""Every issue-9 benchmark in one command, on one device, with a markdown table of the results.

    python benchmarks/run_all.py --device cuda            # paper-size models at 256 px (make bench-gpu)
    python benchmarks/run_all.py --device cuda --compile  # the same with torch.compile
    python benchmarks/run_all.py --device cpu --small     # tiny sizes, for a CPU

(a) batched forward sweep vs a naive one-edit-at-a-time loop; (b) sweep vs the model-only limit;
(c) backward counterfactual tiles/s; (d) peak memory, 10 vs 40 lots; (e) the paper-scale forward
sweep (59,690 tiles x 4 x 11 = 2.6 M edits) projected from the measured rate at the best batch size;
(f) every explainer of the packaged quickstart, at its sizes whatever ``--small`` says, against its
model-only limit measured in the same run (``explain_limits.py``; ``--repeats`` times, median and
range). The table goes to ``--out`` (default ``benchmarks/results-<device>.md``) and to stdout; the
rows of skipped benchmarks are kept from the file already there (with the date they were measured).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).parent


def _sizes(small: bool) -> dict:
    if small:
        return {"model": ["--tile-size", "32", "--layers", "3", "--dim", "16", "--depth", "10"],
                "tiles": "8", "naive": "44", "bw_tiles": "8", "bw_iter": "20",
                "mem": ["--tiles-per-lot", "8", "--tile-size", "32", "--layers", "3", "--dim", "16",
                        "--depth", "10"], "paper_tiles": "32"}
    return {"model": ["--tile-size", "256", "--layers", "5", "--dim", "64", "--depth", "28"],
            "tiles": "256", "naive": "88", "bw_tiles": "256", "bw_iter": "50",
            "mem": ["--tiles-per-lot", "64", "--tile-size", "256", "--layers", "5", "--dim", "64",
                    "--depth", "28"], "paper_tiles": "512"}


def bench_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """The table rows of (a)-(e) from their results."""
    rows = []
    if "a" in results:
        r = results["a"]
        rows.append(("(a) batched sweep vs naive loop", f"{r['batched_tiles_per_s']:.1f} vs "
                     f"{r['naive_tiles_per_s']:.1f} edits/s", f"{r['speedup']:.1f}x", ">= 20x"))
    if "b" in results:
        r = results["b"]
        rows.append(("(b) sweep vs model-only limit", f"{r['sweep_tiles_per_s']:.1f} vs "
                     f"{r['limit_tiles_per_s']:.1f} tiles/s (batch {r['best_batch']})",
                     f"{100 * r['ratio']:.1f} %", ">= 70 %"))
    if "c" in results:
        r = results["c"]
        rows.append(("(c) backward counterfactuals", f"{r['tiles']} tiles, "
                     f"{r['mean_iterations']:.1f} iterations on average",
                     f"{r['tiles_per_s']:.2f} tiles/s", ""))
    if "d" in results:
        r = results["d"]
        ra, rb = r["runs"].values()
        key = r["measure"]
        rows.append(("(d) peak memory, 10 vs 40 lots", f"{ra[key]:.0f} vs {rb[key]:.0f} MiB "
                     f"({key})", f"{r['ratio']:.3f}x", "<= 1.2x"))
    if "e" in results:
        r = results["e"]
        rows.append(("(e) paper-scale forward sweep", f"{r['paper_edits']:,} edits at "
                     f"{r['batched_tiles_per_s']:.1f} edits/s",
                     f"{r['paper_projected_s'] / 60:.1f} min (projected)", "<= 10 min"))
    return rows


def explain_rows(res: dict) -> list[tuple[str, str, str, str]]:
    """(f): one row per explainer: achieved and limit seconds, achieved / limit (median and range
    over the repeats) by the issue's definition and over every model call."""
    rows = []
    for name, s in res["summary"].items():
        ri, rf, sec = s["ratio_issue"], s["ratio_full"], s["seconds"]
        rows.append((f"(f) {name} vs model-only limit",
                     f"{sec[0]:.2f} s vs {s['limit_issue_s']:.2f} s (issue) / "
                     f"{s['limit_full_s']:.2f} s (every model call)",
                     f"{100 * ri[0]:.0f} % ({100 * ri[1]:.0f}-{100 * ri[2]:.0f}) / "
                     f"{100 * rf[0]:.0f} % ({100 * rf[1]:.0f}-{100 * rf[2]:.0f})", ">= 70 %"))
    return rows


def explain_note(res: dict) -> str:
    return (f"(f): the packaged quickstart's explainers on {res['lots']} lots x {res['tiles']} "
            f"tiles of 64 px, shipped AttGAN, predictor {res['predictor']}, "
            f"{len(res['repeats'])} repeats (median, range); {res['device']}. Times are this "
            "process's CPU seconds on a CPU (the machine is shared with other jobs; CPU time is "
            "what they disturb least), wall seconds on a GPU. Limit (issue 20): the explainer's "
            "counted model work at the batched per-row time of the models alone, measured in the "
            "same repeat; the second figure prices every model call it made. See "
            "docs/performance.md.")


def kept_rows(path: Path, skip: set[str]) -> list[tuple[str, str, str, str]]:
    """Rows of the skipped benchmarks from the table already in ``path``, dated."""
    if not skip or not path.exists():
        return []
    text = path.read_text().splitlines()
    date = next((ln.split(";")[0] for ln in text if ln[:2] == "20"), "an earlier run")
    rows = []
    for ln in text:
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0][:1] == "(" and cells[0][1:2] in skip:
            rows.append((cells[0] if "measured" in cells[0] else
                         f"{cells[0]} (measured {date.split('T')[0]})", *cells[1:]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny models and sizes (CPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile in (a), (b), (c), (e)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip", default="", help="comma-separated letters to skip, e.g. d")
    ap.add_argument("--lots", type=int, default=2, help="(f): lots each explainer explains")
    ap.add_argument("--repeats", type=int, default=3, help="(f): repeats (ratios within each)")
    ap.add_argument("--predictor", default=None, help="(f): a trained predictor checkpoint "
                    "(default: a freshly initialised WideResNet)")
    args = ap.parse_args(argv)
    import backward_counterfactual
    import explain_limits
    import explain_memory
    import forward_sweep
    import model_limit

    sz = _sizes(args.small)
    dev = ["--device", args.device]
    comp = ["--compile"] if args.compile else []
    skip = set(filter(None, args.skip.split(",")))
    rows: list[tuple[str, str, str, str]] = []
    results: dict = {}

    def step(letter, title, fn):
        if letter in skip:
            return
        print(f"\n== ({letter}) {title}", flush=True)
        t0 = time.perf_counter()
        try:
            results[letter] = fn()
        except Exception as exc:  # one failing benchmark must not lose the others' figures
            traceback.print_exc()
            rows.append((f"({letter}) {title}", "failed", f"{type(exc).__name__}: {exc}"[:120], ""))
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)

    step("a", "batched sweep vs naive loop", lambda: forward_sweep.main(
        dev + sz["model"] + comp + ["--tiles", sz["tiles"], "--naive-edits", sz["naive"],
                                    "--batch-size", "auto"]))
    step("b", "sweep vs model-only limit", lambda: model_limit.main(
        dev + sz["model"] + comp + ["--tiles", sz["tiles"]]))
    step("c", "backward counterfactuals", lambda: backward_counterfactual.main(
        dev + sz["model"] + comp + ["--tiles", sz["bw_tiles"], "--max-iter", sz["bw_iter"]]))
    step("d", "peak memory, 10 vs 40 lots", lambda: explain_memory.main(dev + sz["mem"]))
    step("e", "paper-scale forward sweep (projected)", lambda: forward_sweep.main(
        dev + sz["model"] + comp + ["--tiles", sz["paper_tiles"], "--naive-edits", "4",
                                    "--batch-size", "auto", "--paper-tiles", "59690"]))

    step("f", "explainers vs model-only limit (quickstart sizes)", lambda: explain_limits.main(
        dev + ["--lots", str(args.lots), "--repeats", str(args.repeats)]
        + (["--predictor", args.predictor] if args.predictor else [])))

    rows += bench_rows(results)
    if "f" in results:
        rows += explain_rows(results["f"])
    device = torch.device(args.device)
    out = Path(args.out or HERE / f"results-{device.type}.md")
    rows = kept_rows(out, skip) + rows
    name = (torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"CPU ({platform.processor() or platform.machine()})")
    sizes = "small" if args.small else "paper (256 px, AttGAN 5x64, WideResNet-28-1)"
    lines = [f"# mxplain benchmarks on {name}", "",
             f"{datetime.datetime.now().isoformat(timespec='seconds')}; torch {torch.__version__}; "
             f"sizes of (a)-(e): {sizes}; (f): the packaged quickstart's"
             f"{'; torch.compile' if args.compile else ''}", "",
             "| benchmark | measured | result | target |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    if "f" in results:
        lines += ["", explain_note(results["f"])]
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    print("\n" + text + f"\nwritten to {out}")
    return 0 if not any(r[1] == "failed" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

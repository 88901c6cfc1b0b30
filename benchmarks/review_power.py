"""The power of ``mxplain review``'s test (docs/review.md): how many decided answers tell an editor
whose edits reviewers see going the requested way with probability ``p`` from chance (0.5).

The test is the review's own verdict: ``pass`` where the Wilson 95 % interval of the agreement lies
wholly above 0.5 (two-sided 5 %, so a false pass at chance is at most 2.5 %). For each ``p`` and
"can't tell" share ``c``, a simulated review of ``n`` pairs draws the decided answers
(Binomial(n, 1 - c)) and the agreeing ones among them (Binomial(decided, p)), ``--reps`` times with
a fixed seed (:func:`mxplain.review_stats.power`); the table gives the smallest ``n`` whose power
is >= 0.8 and stays so for the next five sizes (the power of a discrete test saws up and down in
n), and beside it the same from the exact binomial sum (:func:`mxplain.review_stats.exact_power`)
with "stays so" checked over the next 40 sizes.

    .venv/bin/python benchmarks/review_power.py      # about 2 minutes on one core (the exact sums)
"""

from __future__ import annotations

import argparse
import time

from mxplain.review_stats import exact_power, pairs_for_power, power


def exact_pairs(p: float, cant_tell: float, target: float = 0.8, window: int = 40) -> int:
    n = 1
    while True:
        ok = [exact_power(p, m, cant_tell) >= target for m in range(n, n + window)]
        if all(ok):
            return n
        n += next(i for i, good in enumerate(ok) if not good) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print("| agreement p | can't tell | pairs for 80 % power (simulated) | exact | power at "
          "that n (simulated) | false pass at p = 0.5, same n |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in (0.6, 0.7, 0.8, 0.9):
        for c in (0.0, 0.2):
            n = pairs_for_power(p, 0.8, c, args.reps, args.seed)
            print(f"| {p:.1f} | {c:.0%} | {n} | {exact_pairs(p, c)} | "
                  f"{power(p, n, args.reps, args.seed, c):.3f} | "
                  f"{power(0.5, n, args.reps, args.seed, c):.3f} |")
    print(f"\n{args.reps} simulated reviews per size, seed {args.seed}; "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

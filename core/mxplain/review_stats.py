"""Statistics of an expert review (``mxplain review --import``): agreement with the requested edit
direction and its Wilson interval, the "can't tell" share, agreement between reviewers (Fleiss'
kappa), and the power of the protocol (how many pairs tell an editor from chance).

An *answer* is one reviewer's choice for one pair: ``left``, ``right`` or ``cant_tell``; the pair's
key says which side holds the tile with more of the attribute as requested (``more``). An answer
*agrees* when it names that side and *disagrees* when it names the other; ``cant_tell`` is neither.

* ``agreement`` = agrees / (agrees + disagrees): the share of decided answers that follow the
  requested direction (0.5: chance; a reviewer who cannot see the edit guesses). Its 95 % interval
  is Wilson's score interval (:func:`wilson`), which keeps its coverage for small counts and
  shares near 0 or 1 where the normal approximation does not.
* ``cant_tell_share`` = cant_tells / all answers.
* ``verdict``: ``pass`` where the interval lies above 0.5 (reviewers see the edits go the requested
  way), ``fail`` where it lies below 0.5 (they see them go the other way), ``warn`` otherwise (the
  review cannot tell the editor from chance: too few pairs, or edits nobody sees).
* ``kappa``: Fleiss' kappa (:func:`fleiss_kappa`) of the answers as shown (left / right / can't
  tell) on the pairs that two or more reviewers answered; for two reviewers it is Scott's pi, the
  two-rater case of Fleiss' statistic. Sides are randomised, so reviewers who guess get about 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

#: the two-sided 95 % normal quantile
Z95 = 1.959963984540054
ANSWERS = ("left", "right", "cant_tell")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a binomial share ``k / n`` (``(nan, nan)`` for ``n = 0``)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def fleiss_kappa(counts) -> float | None:
    """Fleiss' kappa of an ``(items, categories)`` table of how many raters put each item in each
    category. Items may have different numbers of raters (each at least two; items with fewer are
    left out): P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), P_e = sum_j p_j^2 with p_j the
    share of all ratings in category j, kappa = (mean P_i - P_e) / (1 - P_e). None where no item
    has two ratings or every rating is in one category (kappa is undefined)."""
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"counts must be (items, categories), got shape {table.shape}")
    n_i = table.sum(axis=1)
    table, n_i = table[n_i >= 2], n_i[n_i >= 2]
    if len(table) == 0:
        return None
    p_i = (table * (table - 1)).sum(axis=1) / (n_i * (n_i - 1))
    p_j = table.sum(axis=0) / n_i.sum()
    p_e = float((p_j ** 2).sum())
    if p_e >= 1.0 - 1e-12:
        return None
    return float((p_i.mean() - p_e) / (1.0 - p_e))


def verdict(ci: Sequence[float]) -> str:
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "warn"
    return "pass" if lo > 0.5 else ("fail" if hi < 0.5 else "warn")


def _share(k: int, n: int) -> float | None:
    return k / n if n else None


def agreement_block(records: Sequence[dict]) -> dict:
    """Counts, agreement, its Wilson interval, the can't-tell share, the verdict and the median
    seconds per answer of ``records`` (dicts with ``answer`` and ``more``; ``seconds`` optional)."""
    agree = sum(r["answer"] == r["more"] for r in records)
    cant = sum(r["answer"] == "cant_tell" for r in records)
    decided = len(records) - cant
    ci = wilson(agree, decided)
    secs = [float(r["seconds"]) for r in records if isinstance(r.get("seconds"), (int, float))]
    return {"answers": len(records), "agree": int(agree), "disagree": int(decided - agree),
            "cant_tell": int(cant), "agreement": _share(agree, decided),
            "agreement_ci": [None if math.isnan(c) else c for c in ci],
            "cant_tell_share": _share(cant, len(records)), "verdict": verdict(ci),
            "median_seconds": float(np.median(secs)) if secs else None}


def kappa_block(records: Sequence[dict]) -> dict:
    """Fleiss' kappa over the pairs of ``records`` answered by two or more reviewers."""
    by_pair: dict[str, dict[str, str]] = {}
    for r in records:
        by_pair.setdefault(r["pair"], {})[r["reviewer"]] = r["answer"]
    shared = {p: a for p, a in by_pair.items() if len(a) >= 2}
    if not shared:
        return {"kappa": None, "kappa_pairs": 0, "kappa_reviewers": 0}
    table = [[sum(v == c for v in a.values()) for c in ANSWERS] for a in shared.values()]
    reviewers = {name for a in shared.values() for name in a}
    return {"kappa": fleiss_kappa(table), "kappa_pairs": len(shared),
            "kappa_reviewers": len(reviewers)}


def summarize(records: Sequence[dict], attributes: Iterable[str]) -> dict:
    """The review's metrics: pooled and per attribute (agreement and kappa), and per reviewer
    (agreement only). ``records``: one dict per answer with ``reviewer``, ``pair``, ``attribute``,
    ``answer``, ``more`` and optionally ``seconds``."""
    attributes = list(attributes)

    def block(recs):
        return {**agreement_block(recs), **kappa_block(recs)}

    out = {"pooled": block(records),
           "attributes": {a: block([r for r in records if r["attribute"] == a])
                          for a in attributes},
           "per_reviewer": {}}
    for name in sorted({r["reviewer"] for r in records}):
        mine = [r for r in records if r["reviewer"] == name]
        out["per_reviewer"][name] = {
            **agreement_block(mine),
            "attributes": {a: agreement_block([r for r in mine if r["attribute"] == a])
                           for a in attributes}}
    return out


def power(agreement: float, n_pairs: int, reps: int = 4000, seed: int = 0,
          cant_tell: float = 0.0) -> float:
    """Monte-Carlo power of the review's test: the share of ``reps`` simulated reviews of
    ``n_pairs`` pairs whose Wilson 95 % interval lies wholly above 0.5 (the ``pass`` verdict), when
    each answer is "can't tell" with probability ``cant_tell`` and otherwise agrees with the
    requested direction with probability ``agreement``. ``agreement = 0.5`` gives the test's false
    pass rate (about 0.025: one side of a two-sided 5 % test)."""
    rng = np.random.default_rng([int(seed), 2205])
    decided = rng.binomial(n_pairs, 1.0 - cant_tell, reps)
    agree = rng.binomial(decided, agreement)
    return float(np.mean(_wilson_lower(agree, decided) > 0.5))


def _wilson_lower(k: np.ndarray, n: np.ndarray, z: float = Z95) -> np.ndarray:
    """The lower end of :func:`wilson` for arrays of counts (``-inf`` where ``n = 0``)."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    safe = np.maximum(n, 1.0)
    p, z2 = k / safe, z * z
    denom = 1.0 + z2 / safe
    lo = ((p + z2 / (2 * safe)) - z * np.sqrt(p * (1 - p) / safe + z2 / (4 * safe ** 2))) / denom
    return np.where(n > 0, lo, -np.inf)


def exact_power(agreement: float, n_pairs: int, cant_tell: float = 0.0) -> float:
    """:func:`power` computed exactly: the binomial probability, over the number of decided answers
    and of agreeing ones, that the Wilson interval lies above 0.5 (the check of the simulation)."""
    from scipy.stats import binom

    total = 0.0
    for decided in range(n_pairs + 1):
        w = binom.pmf(decided, n_pairs, 1.0 - cant_tell)
        if w < 1e-15 or decided == 0:
            continue
        k = np.arange(decided + 1)
        passing = _wilson_lower(k, np.full_like(k, decided)) > 0.5
        total += w * float(binom.pmf(k[passing], decided, agreement).sum())
    return total


def pairs_for_power(agreement: float, target: float = 0.8, cant_tell: float = 0.0,
                    reps: int = 4000, seed: int = 0, limit: int = 2000) -> int | None:
    """The smallest number of pairs whose :func:`power` reaches ``target`` and stays there for the
    next five sizes (power of a discrete test is not monotone in n); None past ``limit``."""
    run = 0
    for n in range(1, limit + 1):
        run = run + 1 if power(agreement, n, reps, seed, cant_tell) >= target else 0
        if run == 6:
            return n - 5
    return None

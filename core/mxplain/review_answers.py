"""``mxplain review RUN --import``: downloaded answer files checked against the run's key (this
run, this page's pairs, no duplicates), a copy of each kept (``review/answers/``), and the
statistics of all answers imported so far (:mod:`mxplain.review_stats`) written to
``metrics.json`` (``review``) and the report. The page and the key: :mod:`mxplain.review`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mxplain.errors import UserError
from mxplain.review import (
    ANSWERS_DIR,
    FORMAT,
    PAIRS_FILE,
    ReviewRun,
    Writes,
    locked,
    read_key,
)


def read_answers(path) -> tuple[dict, bytes]:
    """An answers file (as the page downloads it): its JSON object and raw bytes; unreadable, not
    UTF-8, not JSON (a truncated download) or not an answers file: a :class:`UserError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read answers {str(path)!r}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"answers {str(path)!r} are not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"answers {str(path)!r} are not valid JSON ({exc.msg} at line "
                        f"{exc.lineno}, column {exc.colno}): a truncated or damaged file") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} is not an answers file of an mxplain review page (no "
                        f"\"format\": \"{FORMAT}\")")
    return doc, raw


def check_answers(doc: dict, key: dict, where: str) -> list[dict]:
    """The answers of one file checked against the run's key; one record per answer (reviewer,
    set, pair, attribute, answer, the side with more, seconds)."""
    from mxplain.review_stats import ANSWERS

    if doc.get("run_id") != key.get("run_id"):
        raise UserError(f"answers {where} belong to another run (id {doc.get('run_id')!r}; this "
                        f"run's is {key.get('run_id')!r})")
    sid = doc.get("set_id")
    if not isinstance(sid, str) or sid not in key["sets"]:
        raise UserError(f"answers {where} are of a review page this run did not write "
                        f"(set {sid!r}); known sets: {', '.join(sorted(key['sets'])) or 'none'}")
    pairs = key["sets"][sid]["pairs"]
    reviewer = doc.get("reviewer")
    if not isinstance(reviewer, str) or not reviewer.strip() or len(reviewer) > 200:
        raise UserError(f"answers {where} have no reviewer name (1 to 200 characters)")
    if doc.get("pair_ids") != key["sets"][sid]["order"]:
        raise UserError(f"answers {where}: their pair ids differ from those of page {sid} "
                        f"(tampered or edited)")
    rows = doc.get("answers")
    if not isinstance(rows, list) or not rows:
        raise UserError(f"answers {where} hold no answers")
    out, seen = [], set()
    for n, row in enumerate(rows, 1):
        pid = row.get("pair") if isinstance(row, dict) else None
        if not isinstance(pid, str) or pid not in pairs:
            raise UserError(f"answers {where}: answer {n} names pair {pid!r}, which page {sid} "
                            f"does not have (tampered pair id)")
        if pid in seen:
            raise UserError(f"answers {where}: pair {pid!r} is answered twice (duplicate)")
        seen.add(pid)
        if row.get("answer") not in ANSWERS:
            raise UserError(f"answers {where}: answer {n} is {row.get('answer')!r}; one of "
                            f"{', '.join(ANSWERS)} expected")
        secs = row.get("seconds")
        ok = isinstance(secs, (int, float)) and not isinstance(secs, bool) and 0 <= secs < 1e7
        out.append({"reviewer": reviewer.strip(), "set": sid, "pair": pid,
                    "attribute": pairs[pid]["attribute"], "answer": row["answer"],
                    "more": pairs[pid]["more"], "seconds": float(secs) if ok else None})
    return out


def _stored(run: Path, key: dict) -> list[tuple[str, list[dict]]]:
    """The answers imported before: ``(review/answers/<file>, records)`` for each copy."""
    folder = Path(run) / ANSWERS_DIR
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rel = path.relative_to(run).as_posix()
        doc, _raw = read_answers(path)
        out.append((rel, check_answers(doc, key, repr(rel))))
    return out


def _no_duplicates(batches: list[tuple[str, list[dict]]]) -> None:
    """One answer per reviewer and pair over every file (imported before or now)."""
    first: dict[tuple[str, str], str] = {}
    for where, records in batches:
        for r in records:
            k = (r["reviewer"], r["pair"])
            if k in first:
                raise UserError(f"reviewer {r['reviewer']!r} answered pair {r['pair']!r} in "
                                f"both {first[k]} and {where} (duplicate answers)")
            first[k] = where


def import_answers(run_dir, files) -> dict:
    """Check ``files`` against the run's key and every earlier import, keep a copy of each, and
    write the review statistics of all answers to ``metrics.json`` and the report. Returns the
    ``review`` section. Nothing is written when any file is refused."""
    from mxplain.report import write_report
    from mxplain.review_stats import summarize

    if not files:
        raise UserError("--import needs at least one answers file")
    run = ReviewRun(run_dir)
    with locked(run.path):
        rid = run.run_id()
        key = read_key(run.path, rid)
        if not key["sets"]:
            raise UserError(f"run {str(run.path)!r} has no review page yet (no {PAIRS_FILE}); "
                            f"write one with `mxplain review {run.path}`")
        batches = _stored(run.path, key)
        known = {Path(rel).stem for rel, _ in batches}
        new = []
        for f in files:
            doc, raw = read_answers(f)
            digest = hashlib.sha256(raw).hexdigest()[:16]
            if any(rel == f"{ANSWERS_DIR}/{digest}.json" for rel, _ in new):
                raise UserError(f"answers {str(f)!r} are given twice (duplicate)")
            if digest in known:
                raise UserError(f"answers {str(f)!r} were imported before "
                                f"({ANSWERS_DIR}/{digest}.json)")
            known.add(digest)
            new.append((f"{ANSWERS_DIR}/{digest}.json", raw))
            batches.append((repr(str(f)), check_answers(doc, key, repr(str(f)))))
        _no_duplicates(batches)
        records = [r for _, recs in batches for r in recs]
        review = {"run_id": rid, "sets": {s: {k: v[k] for k in ("n_pairs", "seed", "delta")}
                                          for s, v in key["sets"].items()},
                  "files": sorted({rel for rel, _ in batches if rel.startswith(ANSWERS_DIR)} |
                                  {rel for rel, _ in new}),
                  "reviewers": sorted({r["reviewer"] for r in records}),
                  **summarize(records, run.attributes)}
        writes = Writes(run.path)
        for rel in [rel for rel, _ in new] + ["metrics.json", "report/index.html"]:
            writes.check(rel)
        for rel, raw in new:
            writes.write(rel, raw.decode("utf-8"))
        metrics = {**run.metrics, "review": review}
        writes.write("metrics.json", json.dumps(metrics, indent=1, default=float))
        write_report(run.path)
        writes.done.append("report/index.html")
        writes.record()
    return review

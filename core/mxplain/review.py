"""``mxplain review RUN``: expert review of the run's edits in the browser (seed 000's validation
protocol, §4.2, as a tool).

* :func:`write_page`: draws ``n_pairs`` pairs, stratified over lots and attributes; each is one tile
  of a lot through the run's editor twice, at the lot's own attributes (the reconstruction) and with
  one attribute moved by ``+/-delta`` (the edit), the edit on a random side. One self-contained page
  (:mod:`mxplain.review_page`) asks for each pair "which tile has more <attribute>?". The key (which
  side is the edit, which way it went) is kept in the run folder, ``review/pairs.json``, never in
  the page.
* :func:`mxplain.review_answers.import_answers`: checks downloaded answer files against the key
  (this run, this page's pairs, no duplicates), keeps a copy of each (``review/answers/``) and
  writes the statistics of all answers imported so far (:mod:`mxplain.review_stats`) to
  ``metrics.json`` (``review``) and the report (its trust section, :mod:`mxplain.review_report`).
* :func:`mxplain.review_simulate.simulate`: a simulated reviewer for data whose dataset measures
  attributes from images (synthetic lots): answers from the measurement, wrong with probability
  ``error_rate``, in the format of the page's download.

Every file is written only where it is new or recorded as mxplain's, under the run folder's lock,
and recorded (:func:`mxplain.runfolder.record_written`), so ``mxplain run --overwrite`` removes it
and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mxplain.errors import UserError
from mxplain.runfolder import read_state, write_atomic

FORMAT = "mxplain-review-answers"
PAIRS_FILE = "review/pairs.json"
PAGE_FILE = "review/index.html"
ANSWERS_DIR = "review/answers"
DEFAULT_PAIRS = 80
DEFAULT_DELTA = 0.35


# ---- the run ------------------------------------------------------------------------------------
class ReviewRun:
    """A finished run folder as the review reads it: its resolved config, metrics, tile store,
    the editor (loaded lazily, as the pipeline loads it: its ``checkpoint`` or ``models/editor.pt``)
    and the run id the pairs belong to."""

    def __init__(self, path: str | Path):
        from mxplain import config as config_mod
        from mxplain.report_html import read_metrics

        self.path = Path(path)
        if not (self.path / "metrics.json").is_file() or read_state(self.path) is None:
            raise UserError(f"{str(self.path)!r} is not a finished mxplain run (no metrics.json "
                            f"and state.json)")
        self.metrics = read_metrics(self.path / "metrics.json")
        self.cfg = config_mod.load(self.path / "config.toml")
        if "editor" not in self.cfg:
            raise UserError(f"run {str(self.path)!r} has no [editor]: there are no edits to review")
        self.store = self._open_store()
        self.attributes = list(self.store.attributes)
        self._editor = None

    def _open_store(self):
        from mxplain.store import TileStore

        own = self.path / "tiles.zarr"
        if own.is_dir():
            return TileStore.open(own)
        ref = (self.metrics.get("data") or {}).get("tile_store") or self.cfg["data"].get("path")
        if not ref:
            raise UserError(f"run {str(self.path)!r} has no tiles.zarr and names no tile store")
        return TileStore.open(ref)

    def editor_file(self) -> Path:
        from mxplain import resources

        if "checkpoint" in self.cfg["editor"]:
            return resources.resolve_checkpoint(self.cfg["editor"]["checkpoint"])
        path = self.path / "models" / "editor.pt"
        if not path.is_file():
            raise UserError(f"run {str(self.path)!r} has no trained editor (models/editor.pt)")
        return path

    def editor(self, device="cpu"):
        if self._editor is None:
            from mxplain import plugins
            from mxplain.components import checkpoint_params

            cfg = self.cfg["editor"]
            self._editor = plugins.get("editor", cfg["name"]).load(
                self.editor_file(), device=device, params=checkpoint_params(cfg))
        return self._editor

    def run_id(self) -> str:
        """What identifies the run the pairs come from: its config, its editor's weights and its
        tiles (a run of other data, another config or a retrained editor has another id)."""
        h = hashlib.sha256()
        h.update(str(read_state(self.path).get("config_hash")).encode())
        with open(self.editor_file(), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(self.store.content_hash().encode())
        return h.hexdigest()[:16]

    def measure(self):
        """The dataset's attribute measurement (``measure(uint8 tiles) -> (N, M)``), reached as the
        pipeline reaches it (a capability of the Dataset), or None."""
        from mxplain import plugins

        data = self.cfg["data"]
        dataset = plugins.get("dataset", data["name"])(
            **{k: v for k, v in data.items() if k != "name"})
        return dataset.measure if "measure" in type(dataset).provides() else None


def set_id(run_id: str, n_pairs: int, seed: int, delta: float) -> str:
    return hashlib.sha256(f"{run_id}:{n_pairs}:{seed}:{delta!r}".encode()).hexdigest()[:12]


def check_options(n_pairs, seed, delta) -> None:
    for name, value, low in (("--pairs", n_pairs, 1), ("--seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{name} = {value!r}: needs an integer >= {low}")
    if not isinstance(delta, (int, float)) or not 0 < float(delta) <= 1:
        raise UserError(f"--delta = {delta!r}: needs a number in (0, 1]")


# ---- drawing pairs ------------------------------------------------------------------------------
def draw_pairs(store, n_pairs: int, seed: int, delta: float, sid: str) -> list[dict]:
    """``n_pairs`` pair keys, stratified: attributes in turn (their counts differ by at most one),
    each pair's lot the least used one (overall, then for that attribute; ties seeded), tiles of a
    lot in a seeded order; the edit moves the attribute by a seeded ``+/-delta`` (the other sign
    where the first leaves [0, 1]; clipped where both do) and lands on a seeded side. Returned in
    a seeded display order, each with its id."""
    rng = np.random.default_rng([int(seed), 22])
    attrs = list(store.attributes)
    lots = [i for i in range(store.n_lots) if store.counts[i] > 0]
    lot_use, cell_use = dict.fromkeys(lots, 0), {}
    tile_order = {i: rng.permutation(int(store.counts[i])) for i in lots}
    out = []
    for m in range(n_pairs):
        if m % len(attrs) == 0:
            round_attrs = rng.permutation(len(attrs))
        j = int(round_attrs[m % len(attrs)])
        ranks = [(lot_use[i], cell_use.get((i, j), 0), rng.random(), i) for i in lots]
        lot = min(ranks)[3]
        tile = int(tile_order[lot][lot_use[lot] % len(tile_order[lot])])
        lot_use[lot] += 1
        cell_use[(lot, j)] = cell_use.get((lot, j), 0) + 1
        before = float(store.lot_attributes[lot, j])
        sign = float(rng.choice([-1.0, 1.0]))
        if not 0.0 <= before + sign * delta <= 1.0:
            sign = -sign
        after = float(np.clip(before + sign * delta, 0.0, 1.0))
        if after == before:  # delta larger than the room on both sides: the larger one
            sign = 1.0 if before < 0.5 else -1.0
            after = 1.0 if sign > 0 else 0.0
        edit_side = "left" if rng.random() < 0.5 else "right"
        other = "right" if edit_side == "left" else "left"
        out.append({"lot": store.lot_ids[lot], "lot_index": int(lot), "tile": tile,
                    "attribute": attrs[j], "attribute_index": j, "before": before, "after": after,
                    "direction": "increase" if after > before else "decrease",
                    "edit_side": edit_side, "more": edit_side if after > before else other})
    order = rng.permutation(n_pairs)
    for pos, m in enumerate(order):
        out[m]["id"] = "p" + hashlib.sha256(f"{sid}:{pos}".encode()).hexdigest()[:10]
    return [out[m] for m in order]


def render_pairs(editor, store, pairs: list[dict], batch_size: int = 32):
    """The two tiles of each pair as the page shows them: ``uint8`` ``(N, H, W)`` left and right."""
    import torch

    from mxplain.editing import edit_batched, encode_batched
    from mxplain.store import to_tensor

    if not pairs:
        empty = np.zeros((0, store.tile_size, store.tile_size), np.uint8)
        return empty, empty
    tiles = np.stack([store.tiles(p["lot_index"])[p["tile"]] for p in pairs])
    a0 = store.lot_attributes[[p["lot_index"] for p in pairs]].astype(np.float32)
    a1 = a0.copy()
    for r, p in enumerate(pairs):
        a1[r, p["attribute_index"]] = p["after"]
    latent = encode_batched(editor, to_tensor(tiles), batch_size)
    rec = edit_batched(editor, latent, torch.from_numpy(a0), batch_size)
    edit = edit_batched(editor, latent, torch.from_numpy(a1), batch_size)
    on_left = np.array([p["edit_side"] == "left" for p in pairs])[:, None, None]
    return np.where(on_left, edit, rec), np.where(on_left, rec, edit)


# ---- the run folder's files ---------------------------------------------------------------------
class Writes:
    """Files a review command writes into the run folder: each checked first (new, or recorded as
    mxplain's), written atomically, then recorded in the state's ``written`` list."""

    def __init__(self, run: Path):
        self.run = Path(run)
        self.done: list[str] = []

    def check(self, rel: str) -> None:
        from mxplain.runfolder import may_write

        if not may_write(self.run, rel):
            raise UserError(f"{str(self.run / rel)!r} exists and was not written by mxplain; "
                            f"move it away (mxplain never replaces a file it did not write)")

    def write(self, rel: str, text: str) -> Path:
        from mxplain.report_html import _utf8

        self.check(rel)
        target = self.run / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, _utf8(text))
        self.done.append(rel)
        return target

    def record(self) -> None:
        from mxplain.runfolder import record_written

        if self.done:
            record_written(self.run, self.done)


def locked(run: Path):
    """A context manager: the run folder's lock held (one mxplain command at a time)."""
    from contextlib import contextmanager

    from mxplain.runfolder import LOCK, take_lock

    @contextmanager
    def hold():
        take_lock(run)
        try:
            yield
        finally:
            (Path(run) / LOCK).unlink(missing_ok=True)

    return hold()


def read_key(run: Path, run_id: str | None = None) -> dict:
    """``review/pairs.json`` (a fresh one where there is none); one of another run is refused."""
    path = Path(run) / PAIRS_FILE
    if not path.exists():
        return {"mxplain_review": 1, "run_id": run_id, "sets": {}}
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{str(path)!r} is damaged (not the JSON mxplain review wrote)") from None
    if not isinstance(key, dict) or key.get("mxplain_review") != 1 or \
            not isinstance(key.get("sets"), dict):
        raise UserError(f"{str(path)!r} is not a review key mxplain wrote")
    if run_id is not None and key.get("run_id") != run_id:
        raise UserError(f"{str(path)!r} holds the pairs of another run (id {key.get('run_id')}, "
                        f"this run's is {run_id}: its editor or data changed)")
    return key


# ---- the page -----------------------------------------------------------------------------------
def _page_target(run: Path, out) -> tuple[Path, str | None]:
    """Where the page goes, and its path relative to the run folder when it lies inside it."""
    from mxplain.outputs import check_path_text, is_within

    if out is None:
        return Path(run) / PAGE_FILE, PAGE_FILE
    out = check_path_text(out, "--out")
    if is_within(out, run):
        rel = out.resolve().relative_to(Path(run).resolve()).as_posix()
        if rel.split("/")[0] in ("tiles.zarr", "results.zarr", "models", "state.json",
                                 "metrics.json", "config.toml", "figures"):
            raise UserError(f"--out {str(out)!r} lies among the run's own outputs; choose "
                            f"a path such as {str(Path(run) / PAGE_FILE)!r}")
        return out, rel
    from mxplain.review_page import is_review_page

    if out.is_dir() or (out.exists() and not is_review_page(out)):
        raise UserError(f"--out {str(out)!r} exists and is not a review page mxplain wrote; "
                        f"choose a new path")
    return out, None


def write_page(run_dir, n_pairs: int = DEFAULT_PAIRS, seed: int = 0, out=None,
               delta: float = DEFAULT_DELTA, device: str = "cpu") -> Path:
    """Draw the pairs, render them, write the page and add its key to ``review/pairs.json``."""
    from mxplain.device import resolve_device
    from mxplain.report_html import _utf8
    from mxplain.review_config import descriptions
    from mxplain.review_page import png_data_uri, render

    check_options(n_pairs, seed, delta)
    run = ReviewRun(run_dir)
    target, rel = _page_target(run.path, out)
    with locked(run.path):
        writes = Writes(run.path)
        writes.check(PAIRS_FILE)
        if rel is not None:
            writes.check(rel)
        rid = run.run_id()
        key = read_key(run.path, rid)
        sid = set_id(rid, n_pairs, seed, float(delta))
        pairs = draw_pairs(run.store, n_pairs, seed, float(delta), sid)
        left, right = render_pairs(run.editor(resolve_device(device)), run.store, pairs)
        words = descriptions(run.cfg["data"], run.attributes)
        data = {"format": FORMAT, "run_id": rid, "set_id": sid,
                "pairs": [{"id": p["id"], "lot": p["lot"], "attribute": p["attribute"],
                           "definition": words[p["attribute"]], "left": png_data_uri(a),
                           "right": png_data_uri(b)} for p, a, b in zip(pairs, left, right)]}
        page = _utf8(render(data, run.path.name))
        key["run_id"] = rid
        key["sets"][sid] = {"n_pairs": n_pairs, "seed": seed, "delta": float(delta),
                            "page": str(target), "attributes": run.attributes,
                            "pairs": {p["id"]: {k: v for k, v in p.items() if k != "id"}
                                      for p in pairs},
                            "order": [p["id"] for p in pairs]}
        if rel is not None:
            writes.write(rel, page)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, page)
        writes.write(PAIRS_FILE, json.dumps(key, indent=1))
        writes.record()
    return target

"""``mxplain review`` without a browser: stratified pairs, a page that hides the key, the simulated
reviewer (answers from the synthetic measurement), the import's checks (another run, truncated or
tampered files, duplicates: exit 2, one error line, metrics.json untouched) and what the review
writes into the run folder (recorded, so ``--overwrite`` removes it and nothing else)."""

import json
from collections import Counter

import numpy as np
import pytest

from mxplain import pipeline
from mxplain.cli import main
from mxplain.review import ReviewRun, draw_pairs, render_pairs, set_id
from mxplain.review_config import DEFAULT_DESCRIPTIONS

DATA = """[data]
name = "synthetic"
n_lots = {lots}
tiles_per_lot = 6
tile_size = 32
seed = {seed}
[data.attribute_descriptions]
size = "Size: how big the crystals are."
[editor]
name = "synthetic_oracle"
[run]
editor_eval_tiles = 2
editor_realism_tiles = 0
"""


def _oracle_run(root, name, lots=4, seed=3):
    """A run of 4 synthetic lots (32 px) with the data's own generator as the editor: no
    training, about 3 s."""
    cfg = root / f"{name}.toml"
    cfg.write_text(DATA.format(lots=lots, seed=seed))
    return pipeline.run(cfg, out=root / name, device="cpu", progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    return _oracle_run(root, "a"), _oracle_run(root, "b", lots=3, seed=4)


def _cli(capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_error(capsys, *args) -> str:
    rc, _out, err = _cli(capsys, *args)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_pairs_are_stratified_and_seeded(runs):
    store = ReviewRun(runs[0]).store
    pairs = draw_pairs(store, 16, 0, 0.35, "s")
    cells = Counter((p["lot"], p["attribute"]) for p in pairs)
    assert len(cells) == 16 and set(cells.values()) == {1}  # 4 lots x 4 attributes, once each
    pairs = draw_pairs(store, 10, 0, 0.35, "s")
    assert max(Counter(p["attribute"] for p in pairs).values()) - \
        min(Counter(p["attribute"] for p in pairs).values()) <= 1
    assert sorted(Counter(p["lot"] for p in pairs).values()) == [2, 2, 3, 3]
    for p in pairs:
        assert 0 <= p["after"] <= 1 and abs(abs(p["after"] - p["before"]) - 0.35) < 1e-9
        assert p["more"] == (p["edit_side"] if p["direction"] == "increase" else
                             {"left": "right", "right": "left"}[p["edit_side"]])
    assert pairs == draw_pairs(store, 10, 0, 0.35, "s")
    assert pairs != draw_pairs(store, 10, 1, 0.35, "s")
    assert len({p["id"] for p in pairs}) == 10


def test_page_is_self_contained_and_hides_the_key(runs, capsys):
    rc, out, _ = _cli(capsys, "review", runs[0], "--pairs", 12, "--seed", 2)
    assert rc == 0 and "review page:" in out
    html = (runs[0] / "review" / "index.html").read_text()
    key = json.loads((runs[0] / "review" / "pairs.json").read_text())
    (sid, entry), = key["sets"].items()
    block = html.split('id="mxplain-review-data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(block)
    assert data["set_id"] == sid and data["run_id"] == key["run_id"]
    assert [p["id"] for p in data["pairs"]] == entry["order"]
    assert all(set(p) == {"id", "lot", "attribute", "definition", "left", "right"}
               for p in data["pairs"])
    assert html.count("data:image/png;base64,") == 24
    for secret in ("edit_side", "increase", "decrease", '"more"', '"before"', "http://",
                   "https://"):
        assert secret not in html
    assert "default-src 'none'" in html and "<link" not in html and " src=\"" not in html
    words = {p["attribute"]: p["definition"] for p in data["pairs"]}
    assert words["size"] == "Size: how big the crystals are."  # [data.attribute_descriptions]
    assert words["porosity"] == DEFAULT_DESCRIPTIONS["porosity"]
    # the left and right tiles are the pair's reconstruction and edit, on the recorded sides
    run = ReviewRun(runs[0])
    pairs = [{"id": pid, **entry["pairs"][pid]} for pid in entry["order"]]
    left, right = render_pairs(run.editor(), run.store, pairs)
    from mxplain.review_page import png_data_uri

    assert [p["left"] for p in data["pairs"]] == [png_data_uri(t) for t in left]
    assert not np.array_equal(left, right)


def _simulate(capsys, run, reviewer, rate, out):
    rc, text, err = _cli(capsys, "review", run, "--pairs", 12, "--seed", 2, "--simulate",
                         "--error-rate", rate, "--reviewer", reviewer, "--out", out)
    assert rc == 0, err
    return out


def test_simulated_reviewers_import_and_kappa(runs, tmp_path, capsys):
    run = runs[0]
    _cli(capsys, "review", run, "--pairs", 12, "--seed", 2)
    exact = _simulate(capsys, run, "exact", 0.0, tmp_path / "exact.json")
    wrong = _simulate(capsys, run, "contrary", 1.0, tmp_path / "contrary.json")
    twin = _simulate(capsys, run, "twin", 0.0, tmp_path / "twin.json")
    a = {r["pair"]: r["answer"] for r in json.loads(exact.read_text())["answers"]}
    b = {r["pair"]: r["answer"] for r in json.loads(wrong.read_text())["answers"]}
    flip = {"left": "right", "right": "left", "cant_tell": "cant_tell"}
    assert b == {p: flip[x] for p, x in a.items()}  # error rate 1: every decided answer flipped
    rc, out, err = _cli(capsys, "review", run, "--import", exact, wrong, twin)
    assert rc == 0, err
    review = json.loads((run / "metrics.json").read_text())["review"]
    per = review["per_reviewer"]
    assert per["exact"]["agreement"] + per["contrary"]["agreement"] == pytest.approx(1.0)
    assert per["exact"]["cant_tell"] == per["contrary"]["cant_tell"]
    # measured on the oracle's 32 px tiles, seed 2: 8 of 9 decided answers follow the request
    assert (per["exact"]["agree"], per["exact"]["disagree"], per["exact"]["cant_tell"]) == \
        (8, 1, 3)
    assert per["twin"] == per["exact"]
    # three reviewers on the same 12 pairs, two identical, one contrary: 3 pairs all can't tell
    # (P_i = 1), 9 split 2:1 (P_i = 1/3), mean 0.5; ratings left / right / can't tell 15 / 12 / 9
    # of 36: P_e = (225 + 144 + 81) / 1296 = 0.34722; kappa = (0.5 - P_e) / (1 - P_e) = 0.23404
    assert review["pooled"]["kappa_pairs"] == 12 and review["pooled"]["kappa_reviewers"] == 3
    assert review["pooled"]["kappa"] == pytest.approx(0.23404, abs=1e-5)
    assert review["reviewers"] == ["contrary", "exact", "twin"]
    assert len(review["files"]) == 3
    html = (run / "report" / "index.html").read_text()
    assert "Trust: expert review" in html and "contrary" in html
    pipeline.run(run.parent / "a.toml", out=run, device="cpu", progress=False, resume=True)
    resumed = json.loads((run / "metrics.json").read_text())  # the import survives a resume
    assert resumed["review"] == review and "Trust: expert review" in (
        run / "report" / "index.html").read_text()


def test_bad_answers_are_one_error_and_leave_metrics(runs, tmp_path, capsys):
    run_a, run_b = runs
    _cli(capsys, "review", run_a, "--pairs", 12, "--seed", 2)
    _cli(capsys, "review", run_b, "--pairs", 12, "--seed", 2)
    mine = _simulate(capsys, run_a, "eve", 0.2, tmp_path / "eve.json")
    other = _simulate(capsys, run_b, "eve", 0.2, tmp_path / "other.json")
    doc = json.loads(mine.read_text())

    def variant(name, change):
        d = json.loads(json.dumps(doc))
        change(d)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(d))
        return path

    truncated = tmp_path / "truncated.json"
    truncated.write_text(mine.read_text()[:-40])
    dup = variant("dup", lambda d: d["answers"].append(dict(d["answers"][0])))
    tampered = variant("tampered", lambda d: d["answers"][3].update(pair="p0000000000"))
    reordered = variant("reordered", lambda d: d["pair_ids"].reverse())
    noname = variant("noname", lambda d: d.update(reviewer=" "))
    badanswer = variant("badanswer", lambda d: d["answers"][0].update(answer="up"))
    before = (run_a / "metrics.json").read_bytes()
    state = (run_a / "state.json").read_bytes()
    kept = sorted((run_a / "review").rglob("*"))
    cases = {other: "another run", truncated: "not valid JSON", dup: "answered twice",
             tampered: "tampered pair id", reordered: "pair ids differ", noname: "reviewer name",
             badanswer: "one of left, right, cant_tell", tmp_path / "missing.json": "cannot read"}
    for path, words in cases.items():
        assert words in _one_error(capsys, "review", run_a, "--import", path)
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(doc))  # the same answers, other bytes
    assert "duplicate answers" in _one_error(capsys, "review", run_a, "--import", mine, copy)
    assert "given twice" in _one_error(capsys, "review", run_a, "--import", mine, mine)
    assert (run_a / "metrics.json").read_bytes() == before
    assert (run_a / "state.json").read_bytes() == state
    assert sorted((run_a / "review").rglob("*")) == kept
    assert _cli(capsys, "review", run_a, "--import", mine)[0] == 0
    assert "imported before" in _one_error(capsys, "review", run_a, "--import", mine)
    assert "--import needs" in _one_error(capsys, "review", run_a, "--import")
    assert "not both" in _one_error(capsys, "review", run_a, "--import", "--simulate", mine)
    assert "--pairs" in _one_error(capsys, "review", run_a, "--pairs", 0)
    assert "no review page" in _one_error(capsys, "review", run_a, "--pairs", 5, "--simulate")


@pytest.mark.slow  # two pipeline runs (about 11 s)
def test_review_writes_only_its_own_files(tmp_path, capsys):
    run = _oracle_run(tmp_path, "own")
    (run / "review").mkdir()
    user = run / "review" / "pairs.json"
    user.write_text("my notes")
    assert "was not written by mxplain" in _one_error(capsys, "review", run, "--pairs", 4)
    assert user.read_text() == "my notes" and not (run / "review" / "index.html").exists()
    user.rename(run / "review" / "notes.txt")
    assert _cli(capsys, "review", run, "--pairs", 4)[0] == 0
    page = tmp_path / "elsewhere" / "page.html"
    assert _cli(capsys, "review", run, "--pairs", 4, "--out", page)[0] == 0
    assert _cli(capsys, "review", run, "--pairs", 4, "--out", page)[0] == 0  # its own page
    foreign = tmp_path / "foreign.html"
    foreign.write_text("<p>mine</p>")
    assert "not a review page" in _one_error(capsys, "review", run, "--out", foreign)
    assert foreign.read_text() == "<p>mine</p>"
    sim = _cli(capsys, "review", run, "--pairs", 4, "--simulate")[1].split(": ", 1)[1].strip()
    written = json.loads((run / "state.json").read_text())["written"]
    assert {"review/index.html", "review/pairs.json"} <= set(written)
    assert any(w.startswith("review/simulated-") for w in written) and sim.endswith(".json")
    assert "review/notes.txt" not in written
    # --overwrite: the review's files go with the run, the user's note stays
    pipeline.run(tmp_path / "own.toml", out=run, device="cpu", progress=False, overwrite=True)
    assert sorted(p.name for p in (run / "review").iterdir()) == ["notes.txt"]
    assert page.exists()  # outside the run folder: never deleted by the run


def test_set_ids_differ_by_options():
    assert len({set_id("r", n, s, d) for n in (4, 5) for s in (0, 1) for d in (0.3, 0.35)}) == 8

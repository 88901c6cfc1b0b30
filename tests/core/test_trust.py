"""Issue 19 item 1: trust gates that need no ground truth (mxplain.trust, mxplain.probe).

Toy lots of 32 px tiles whose mean grey follows attribute 0 and horizontal stripes attribute 1
(attribute 2 is drawn but never rendered): the probe must recover the first two leave-lots-out and
refuse to judge the third; an editor that renders the toy law exactly passes the probe gate, an
identity editor and one that ignores its attributes fail it. Then thresholds, config validation,
and a tiny pipeline run whose metrics, cube and report carry the verdicts. One thread."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from mxplain import config, hookimpl, plugins, trust
from mxplain.cli import main
from mxplain.errors import UserError
from mxplain.interfaces import Editor, NoLearnedState, Predictor
from mxplain.probe import FEATURE_NAMES, fit_probe, probe_edits, tile_features
from mxplain.store import LotTable, TileStore

ATTRS = ("grey", "stripes", "hidden")
SIZE, N_LOTS, PER_LOT = 32, 8, 12
STRIPES = np.sin(2 * np.pi * np.arange(SIZE) / 8.0)[:, None] * np.ones((1, SIZE))


def render(a, n, rng):
    img = 0.2 + 0.6 * a[0] + 0.15 * a[1] * STRIPES + rng.normal(0, 0.03, (n, SIZE, SIZE))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    vals = np.stack([rng.permutation((np.arange(N_LOTS) + 0.5) / N_LOTS) for _ in ATTRS], 1)
    path = tmp_path_factory.mktemp("trust") / "tiles.zarr"
    TileStore.create(path, LotTable([f"L{i}" for i in range(N_LOTS)], ATTRS, vals,
                                    np.arange(N_LOTS, dtype=float)), [PER_LOT] * N_LOTS, SIZE)
    for i in range(N_LOTS):
        TileStore.write_lot(path, i, render(vals[i], PER_LOT, rng), PER_LOT)
    TileStore.mark_complete(path)
    return TileStore.open(path)


class Identity(NoLearnedState, Editor):
    name = "trust-identity"
    attributes = ATTRS

    def encode(self, tiles):
        return tiles

    def decode(self, latent, attributes):
        return latent


class Ignores(Identity):
    """Blurs every tile alike whatever it is asked: changes the tile, never the attribute."""

    name = "trust-ignores"

    def decode(self, latent, attributes):
        return torch.nn.functional.avg_pool2d(latent, 3, 1, 1, count_include_pad=False)


class ToyLaw(Identity):
    """Renders the toy law exactly: the tile's mean and row profile replaced by the requested
    ones (attribute 2 is not rendered by the data, so not by the editor either)."""

    name = "trust-law"

    def decode(self, latent, attributes):
        a = attributes.float()
        rows = latent.mean(dim=3, keepdim=True)
        stripes = torch.as_tensor(STRIPES, dtype=torch.float32)[None, None]
        out = latent - rows + (0.2 + 0.6 * a[:, 0])[:, None, None, None] \
            + 0.15 * a[:, 1][:, None, None, None] * stripes
        return out.clamp(0, 1)


def test_features_are_fixed_and_finite(store):
    tiles, _ = store.all_tiles()
    f = tile_features(tiles[:5])
    assert f.shape == (5, len(FEATURE_NAMES)) and np.isfinite(f).all()
    np.testing.assert_array_equal(f, tile_features(tiles[:5]))


def test_probe_recovers_the_rendered_attributes_leave_lots_out(store):
    probe, info = fit_probe(store, n_tiles_per_lot=8, seed=0)
    rho = {a: info["attributes"][a]["heldout_spearman"] for a in ATTRS}
    assert rho["grey"] > 0.9 and rho["stripes"] > 0.6, rho
    assert rho["hidden"] < 0.5, rho  # not rendered: the probe must not see it
    assert info["folds"] == N_LOTS and info["n_lots"] == N_LOTS  # leave-one-lot-out
    grey = info["attributes"]["grey"]
    assert grey["resolution"] > 0.9, grey
    # held-out readings move with the label as the refitted probe's own do: it does not overfit
    assert 0.7 < grey["calibration_slope"] / grey["reading_slope"] < 1.5, grey
    assert len(grey["features"]) <= 4 and set(grey["features"]) <= set(FEATURE_NAMES)
    again = fit_probe(store, n_tiles_per_lot=8, seed=0)[1]
    assert again["attributes"] == info["attributes"]  # deterministic
    assert probe.measure(store.all_tiles()[0][:3]).shape == (3, len(ATTRS))


class Faint(ToyLaw):
    """Moves the tile a fifth of the way to what ToyLaw renders: every edit goes the requested
    way, but by a fifth of a real lot difference (the shortcut a direction share cannot see)."""

    name = "trust-faint"

    def decode(self, latent, attributes):
        return latent + 0.2 * (super().decode(latent, attributes) - latent)


def test_probe_of_some_attributes(store):
    probe, info = fit_probe(store, n_tiles_per_lot=6, seed=1, attributes=("stripes", "other"))
    assert probe.attributes == ("stripes",) and list(info["attributes"]) == ["stripes"]
    assert info["attributes"]["stripes"]["heldout_spearman"] > 0.5
    assert fit_probe(store, attributes=("other",)) == (
        None, {"skipped": "none of the editor's attributes is a label of the tile store"})


@pytest.mark.parametrize("editor,want", [(ToyLaw(), "pass"), (Identity(), "fail"),
                                         (Ignores(), "fail"), (Faint(), "fail")])
def test_probe_gate_judges_edits(store, editor, want):
    probe, info = fit_probe(store, n_tiles_per_lot=8, seed=0)
    ev = {"probe": probe_edits(editor, store, probe, info, n_tiles_per_lot=3, seed=0,
                               intervals=True)}
    gate = trust.probe_gate(ev, trust.resolve_trust(None))
    assert gate["verdict"] == want, gate
    assert "effect_ratio_ci" not in probe_edits(editor, store, probe, info, n_tiles_per_lot=2,
                                                seed=0)["attributes"]["grey"]
    for a in ("grey", "stripes"):
        g = gate["attributes"][a]
        assert g["judged"] and g["verdict"] == want, g
        ratio = ev["probe"]["attributes"][a]["effect_ratio"]
        row = ev["probe"]["attributes"][a]
        assert set(row["response"]) == set(probe.attributes)
        assert row["response"][a] == pytest.approx(row["effect"], nan_ok=True)
        lo, hi = ev["probe"]["attributes"][a]["effect_ratio_ci"]
        assert lo <= ratio <= hi and hi - lo < 0.5, (lo, ratio, hi)
        if isinstance(editor, Faint):  # the right way, but a fraction of the change
            assert g["parts"]["direction_share"]["verdict"] == "pass", g
            assert 0.15 < ratio < 0.25, ratio  # a fifth of the change: 0.2
        elif isinstance(editor, ToyLaw):
            assert 0.7 < ratio < 1.5, ratio
    hidden = gate["attributes"]["hidden"]
    assert not hidden["judged"] and hidden["verdict"] == "warn"
    assert hidden["reason"].startswith("unknown: the probe cannot see hidden")


def test_verdict_thresholds_inclusive():
    v = trust.verdict
    assert [v(x, 0.70, 0.85, False) for x in (0.5, 0.70, 0.71, 0.85, 0.86)] == \
        ["pass", "pass", "warn", "warn", "fail"]
    assert [v(x, 0.75, 0.6, True) for x in (0.9, 0.75, 0.74, 0.6, 0.59)] == \
        ["pass", "pass", "warn", "warn", "fail"]
    assert v(float("nan"), 0.7, 0.85, False) == "warn" and v(None, 0.7, 0.85, False) == "warn"
    assert trust.worst(["pass", "fail", "warn"]) == "fail" and trust.worst([]) == "pass"


def test_trust_defaults_documented():
    cfg = trust.resolve_trust(None)
    assert cfg["realism_auc_pass"] == 0.70 and cfg["realism_auc_warn"] == 0.85
    assert cfg["shift_percent_pass"] == 1.5 and cfg["shift_percent_warn"] == 5.0
    assert cfg["probe_share_ratio_pass"] == 0.9 and cfg["probe_share_ratio_warn"] == 0.75
    assert cfg["probe_min_resolution"] == 0.6 and cfg["probe_min_spearman"] == 0.0
    assert cfg["probe_effect_pass"] == 0.5 and cfg["probe_effect_warn"] == 0.33
    assert cfg["reached_share_pass"] == 0.9 and cfg["reached_share_warn"] == 0.6
    assert set(cfg) == set(trust.TRUST_DOC)


@pytest.mark.parametrize("table,needle", [
    ({"realism_auc_pass": 0.9, "realism_auc_warn": 0.8}, "realism_auc_warn = 0.8 must be >="),
    ({"probe_share_ratio_pass": 0.5}, "probe_share_ratio_warn = 0.75 must be <="),
    ({"probe_share_pass": 0.75}, "probe_share_pass was renamed: use probe_share_ratio_pass"),
    ({"probe_min_resolution": 1.2}, "probe_min_resolution = 1.2: needs a number in [0, 1]"),
    ({"probe_effect_pass": 0.2}, "probe_effect_warn = 0.33 must be <="),
    ({"probe_effect_warn": -0.1}, "probe_effect_warn = -0.1: needs a number in [0, 10]"),
    ({"shift_percent_pass": -1}, "shift_percent_pass = -1: needs a number"),
    ({"reached_share_warn": "high"}, "reached_share_warn = 'high'"),
    ({"probe_share_ratio_pass": float("nan")}, "probe_share_ratio_pass = nan"),
    ({"probe_tiles": 2.5}, "probe_tiles = 2.5: needs an integer"),
    ({"realism_auc": 0.7}, "unknown key 'realism_auc' in [trust]; did you mean"),
])
def test_bad_thresholds_refused(table, needle):
    raw = {"data": {"name": "synthetic", "n_lots": 3, "tiles_per_lot": 4, "tile_size": 32},
           "trust": table}
    with pytest.raises(UserError) as err:
        config.resolve(raw, where="c.toml")
    assert needle in str(err.value), str(err.value)


def test_bad_threshold_one_error_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nn_lots = 3\ntiles_per_lot = 4\ntile_size = 32\n'
                   "[trust]\nprobe_share_ratio_pass = 2.5\n")
    code = main(["run", str(cfg), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "[trust] probe_share_ratio_pass = 2.5" in lines[0]
    assert not (tmp_path / "r").exists()


def _metrics(probe_share=0.9, rho=0.8, auc=0.6, shift=1.0, reached=0.95, ratio=0.9):
    return {"editor": {"evaluation": {
        "realism": {"reconstruction": {"auc": auc}, "edits": {
            "auc": auc, "by_attribute": {"a": auc, "b": 0.95}}},
        "reconstruction_prediction_shift": {"mean_abs_percent": shift},
        "probe": {"attributes": {"a": {"heldout_spearman": rho, "direction_share": probe_share,
                                       "effect_ratio": ratio, "resolution": 0.9},
                                 "b": {"heldout_spearman": 0.1, "direction_share": 0.9,
                                       "effect_ratio": 1.0, "resolution": 0.52}}}}},
        "explain": {"forward": {}, "backward": {"reached_share": {"increase": reached,
                                                                   "decrease": 1.0}},
                    "gradcam": {}}}


def test_gates_and_explanation_verdicts():
    cfg = trust.resolve_trust(None)
    out = trust.trust_gates(_metrics(), cfg, ("a", "b"), ("forward", "backward"),
                            [("loss falls", "pass", "fine")])
    g = out["gates"]
    assert g["editor_realism"]["attributes"]["a"]["verdict"] == "pass"
    assert g["editor_realism"]["attributes"]["b"]["verdict"] == "fail"
    assert g["reconstruction_shift"]["verdict"] == "pass"
    assert g["attribute_probe"]["attributes"]["a"]["verdict"] == "pass"
    assert g["attribute_probe"]["attributes"]["b"]["judged"] is False
    assert g["backward_convergence"]["verdict"] == "pass" and g["editor_health"]["verdict"] == "pass"
    assert out["attributes"]["a"]["trust"] == "trusted"
    assert out["attributes"]["b"]["trust"] == "untrusted"
    assert any("editor_realism" in r for r in out["attributes"]["b"]["reasons"])
    assert out["explanations"]["forward"]["attributes"]["a"]["trust"] == "trusted"
    assert out["explanations"]["forward"]["trust"] == "untrusted"
    assert out["explanations"]["gradcam"]["trust"] == "not gated"
    assert out["verdict"] == "untrusted"
    json.dumps(out)  # metrics.json-able
    low = trust.trust_gates(_metrics(reached=0.7, shift=3.0), cfg, ("a",), ("forward", "backward"))
    assert low["gates"]["backward_convergence"]["verdict"] == "warn"
    assert low["explanations"]["forward"]["attributes"]["a"]["trust"] == "caution"
    bw = low["explanations"]["backward"]["attributes"]["a"]
    assert bw["trust"] == "caution" and any("backward_convergence" in r for r in bw["reasons"])
    bad = trust.trust_gates(_metrics(probe_share=0.3), cfg, ("a",), ("forward",),
                            [("classifier learns", "fail", "never beats the floor")])
    assert bad["gates"]["editor_health"]["verdict"] == "fail"
    assert bad["gates"]["attribute_probe"]["verdict"] == "fail"
    assert bad["explanations"]["forward"]["trust"] == "untrusted"
    faint = trust.trust_gates(_metrics(ratio=0.1), cfg, ("a",), ("forward",))
    probe_a = faint["gates"]["attribute_probe"]["attributes"]["a"]
    assert probe_a["verdict"] == "fail" and probe_a["value"] == 0.9  # share passes, effect fails
    assert "fraction of a real lot difference" in probe_a["reason"]
    assert faint["explanations"]["forward"]["attributes"]["a"]["trust"] == "untrusted"


# ---- a tiny pipeline run: identity editor, the verdicts in metrics, cube and report -------------
class Mean(NoLearnedState, Predictor):
    name = "trust-mean"
    differentiable = False

    def forward(self, tiles):
        return tiles.float().mean(dim=(1, 2, 3)) * 1000 + 100


class RunIdentity(Identity):
    name = "trust-run-identity"
    attributes = ()

    def fit(self, store, ctx):
        self.attributes = tuple(store.attributes)
        return {}

    def state_dict(self):
        return {"attributes": list(self.attributes)}

    def load_state_dict(self, state):
        self.attributes = tuple(state["attributes"])


@pytest.fixture
def fakes():
    plugins.reset()
    mod = types.SimpleNamespace(mxplain_predictors=hookimpl(lambda: [Mean]),
                                mxplain_editors=hookimpl(lambda: [RunIdentity]))
    plugins.register(mod, name="trust-fakes")
    yield
    plugins.reset()


def test_pipeline_marks_a_weak_editor(tmp_path, fakes):
    from mxplain import pipeline
    from mxplain.cube import open_results

    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nn_lots = 5\ntiles_per_lot = 6\ntile_size = 32\n'
                   'seed = 3\n[predictor]\nname = "trust-mean"\n[editor]\n'
                   'name = "trust-run-identity"\n[explain.forward]\nsteps = 3\n'
                   "[run]\nexplain_tiles = 2\neditor_realism_tiles = 0\neditor_eval_tiles = 2\n"
                   "[trust]\nprobe_tiles = 6\nprobe_min_spearman = -1.0\n"
                   "probe_min_resolution = 0.0\n")
    run = pipeline.run(cfg, out=tmp_path / "run", progress=False)
    m = json.loads((run / "metrics.json").read_text())
    t = m["trust"]
    assert t["gates"]["attribute_probe"]["verdict"] == "fail"  # identity: no edit moves anything
    assert t["gates"]["reconstruction_shift"]["verdict"] == "pass"  # and reconstructs exactly
    assert t["explanations"]["forward"]["trust"] == "untrusted" and t["verdict"] == "untrusted"
    assert "editor_probe" in m["timings_seconds"]
    cube = open_results(run)
    assert cube.attrs["trust_verdict"] == "untrusted"
    assert set(cube.trust_attribute_verdict.values.tolist()) == {"untrusted"}
    html = (run / "report" / "index.html").read_text()
    assert "<h2>Trust gates</h2>" in html and "Run verdict: untrusted" in html
    assert html.index("Trust gates") < html.index("<img")  # the gates before any figure
    assert "class='untrusted'" in html  # the forward numbers greyed, with the reason
    assert "forward fails its trust gates for" in html


def test_probe_gate_reason_separates_failing_from_unseen_attributes():
    cfg = trust.resolve_trust(None)
    block = {"heldout_spearman": 0.9, "direction_share": 0.95, "effect_ratio": 0.9,
             "resolution": 0.9}
    ev = {"probe": {"attributes": {"size": block, "roughness": {**block, "resolution": 0.52},
                                   "density": {**block, "effect_ratio": 0.1}}}}
    gate = trust.probe_gate(ev, cfg)
    assert gate["verdict"] == "fail"
    assert gate["reason"] == ("2 of 3 attributes judged by the probe; not passing: density; "
                              "not judged (the probe cannot see them): roughness")
    ev["probe"]["attributes"]["density"] = block
    gate = trust.probe_gate(ev, cfg)
    assert gate["verdict"] == "pass" and "every judged one passes" in gate["reason"]
    assert "not passing" not in gate["reason"]
    missing = trust._judge(None, cfg, "reached_share", True, "lowest reached share")
    assert missing["verdict"] == "warn"
    assert missing["reason"] == "lowest reached share: not measured, nothing to judge by"

"""The benchmarks' limit arithmetic (benchmarks/_limits.py, run_all.py) and backward_solvers'
solvers, on fake models with known call counts: no timing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import _limits  # noqa: E402
import run_all  # noqa: E402

#: seconds per row of each model-only measurement (made up, exact in binary)
RATES = {"enc": 0.125, "dp": 0.5, "dpb": 2.0, "p": 0.25, "pb": 1.0}
W = torch.tensor([2.0, -1.0, 0.0])  # the fake prediction's slope per attribute


class FakeEditor:
    kind, name = "editor", "fake"
    device = torch.device("cpu")
    attributes = ("a", "b", "c")

    def encode(self, tiles):
        return (tiles.mean(dim=(1, 2, 3))[:, None],)

    def decode(self, latent, attributes):
        level = latent[0] + (attributes * W).sum(1, keepdim=True) / 10
        return level[:, :, None, None].expand(-1, 1, 4, 4)

    def edit(self, tiles, attributes):
        return self.decode(self.encode(tiles), attributes)


class FakePredictor:
    kind, name = "predictor", "fake"
    device = torch.device("cpu")

    def forward(self, tiles):
        return 100.0 * tiles.mean(dim=(1, 2, 3))

    def predict(self, tiles, batch_size=4):
        return torch.cat([self.forward(tiles[i : i + batch_size])
                          for i in range(0, len(tiles), batch_size)]).numpy()


# fake explainers: their names are phases of _limits.PHASES
def perturbation_curves(predictor, n):
    return predictor.predict(torch.rand(n, 1, 4, 4), batch_size=4)


def _attribute_part(editor, predictor, n):
    with torch.no_grad():
        lat = editor.encode(torch.rand(n, 1, 4, 4))
        return predictor.forward(editor.decode(lat, torch.rand(n, 3)))


def _step(editor, predictor, n):
    x = torch.rand(n, 3, requires_grad=True)
    lat = editor.encode(torch.rand(n, 1, 4, 4))
    p = predictor.forward(editor.decode(lat, x))
    return torch.autograd.grad(p.sum(), x)


@pytest.fixture
def counted():
    editor, predictor, counter = FakeEditor(), FakePredictor(), _limits.Counter()
    _limits.instrument(editor, predictor, counter)
    counter.active = True
    return editor, predictor, counter


def test_counts_phases_rows_and_grad_mode(counted):
    editor, predictor, counter = counted
    perturbation_curves(predictor, 10)  # 3 predictor calls: 4 + 4 + 2 rows
    _attribute_part(editor, predictor, 5)
    for _ in range(3):
        _step(editor, predictor, 6)
    editor.edit(torch.rand(7, 1, 4, 4), torch.rand(7, 3))  # outside any phase
    assert dict(counter.rows) == {
        ("perturbation_curves", "forward", True): 10,
        ("_attribute_part", "encode", False): 5, ("_attribute_part", "decode", False): 5,
        ("_attribute_part", "forward", False): 5,
        ("_step", "encode", True): 18, ("_step", "decode", True): 18,
        ("_step", "forward", True): 18,
        ("other", "encode", True): 7, ("other", "decode", True): 7}
    assert counter.calls[("perturbation_curves", "forward", True)] == 3
    assert counter.calls[("_step", "decode", True)] == 3
    counter.active = False
    perturbation_curves(predictor, 10)  # not counted while inactive
    assert counter.rows[("perturbation_curves", "forward", True)] == 10


def test_nested_calls_count_once():
    class SelfCalling(FakeEditor):
        def decode(self, latent, attributes):  # an editor that encodes inside decode
            self.encode(torch.zeros(len(attributes), 1, 4, 4))
            return super().decode(latent, attributes)

    editor, predictor, counter = SelfCalling(), FakePredictor(), _limits.Counter()
    _limits.instrument(editor, predictor, counter)
    counter.active = True
    editor.decode((torch.zeros(3, 1),), torch.rand(3, 3))
    assert dict(counter.rows) == {("other", "decode", True): 3}


def test_limit_arithmetic_gives_the_known_ratio(counted):
    editor, predictor, counter = counted
    with torch.no_grad():
        perturbation_curves(predictor, 12)
        _attribute_part(editor, predictor, 4)
    for _ in range(5):
        _step(editor, predictor, 2)
    rows = dict(counter.rows)
    # compare's limit (issue 20): its curves' predictor rows x predict time
    lim = _limits.limits("compare", rows, RATES)
    assert lim["issue"] == 12 * 0.25
    # every call: curves 12 p; attribute sweep 4 enc + 4 decode (dp - p) + 4 p;
    # _step 10 enc + 10 decode+grad (dpb - pb) + 10 predict+grad (pb)
    full = 12 * 0.25 + 4 * 0.125 + 4 * 0.25 + 4 * 0.25 + 10 * 0.125 + 10 * 1.0 + 10 * 1.0
    assert lim["full"] == pytest.approx(full)
    # backward's limit: every decode under grad x (decode + predict + backward)
    assert _limits.limits("backward", rows, RATES)["issue"] == 10 * 2.0
    assert _limits.ratios({"issue": 3.0, "full": full}, 6.0) == {"issue": 0.5, "full": full / 6}
    assert _limits.needed("compare", rows) == {"enc", "dp", "dpb", "p", "pb"}
    assert _limits.needed("gradcam", {("gradcam", "forward", True): 3}) == {"pb"}


def test_decoder_share_never_negative():
    assert _limits.per_row("dp-p", {"dp": 0.1, "p": 0.3}) == 0.0
    assert _limits.per_row("dpb-pb", RATES) == 1.0


def test_run_all_rows_and_kept_rows(tmp_path):
    summary = {"backward": {"ratio_issue": (0.5, 0.25, 0.75), "ratio_full": (0.8, 0.7, 0.9),
                            "seconds": (4.0, 3.0, 5.0), "limit_issue_s": 2.0,
                            "limit_full_s": 3.2}}
    (row,) = run_all.explain_rows({"summary": summary})
    assert row == ("(f) backward vs model-only limit",
                   "4.00 s vs 2.00 s (issue) / 3.20 s (every model call)",
                   "50 % (25-75) / 80 % (70-90)", ">= 70 %")
    old = tmp_path / "results-cpu.md"
    old.write_text("# t\n\n2026-11-22T04:55:37; torch 2\n\n| a | b | c | d |\n| --- | --- | --- | --- |\n"
                   "| (a) sweep | 1 vs 2 | 6.1x | >= 20x |\n| (f) old | x | y | z |\n")
    assert run_all.kept_rows(old, {"a"}) == [("(a) sweep (measured 2026-11-22)", "1 vs 2", "6.1x",
                                              ">= 20x")]
    assert run_all.kept_rows(old, set()) == []
    assert run_all.bench_rows({"b": {"sweep_tiles_per_s": 30.0, "limit_tiles_per_s": 40.0,
                                     "best_batch": 32, "ratio": 0.75}}) == [
        ("(b) sweep vs model-only limit", "30.0 vs 40.0 tiles/s (batch 32)", "75.0 %", ">= 70 %")]


def test_solvers_reach_a_linear_target_and_keep_a_dead_attribute():
    from backward_solvers import adam, lbfgs

    editor, predictor = FakeEditor(), FakePredictor()
    latent = editor.encode(torch.full((2, 1, 4, 4), 0.5))
    a = torch.full((2, 3), 0.5)
    p0 = 100 * (0.5 + (a * W).sum(1) / 10)  # 60
    target = p0 + torch.tensor([10.0, -10.0])
    scale = target.abs()
    lam, thr = 1 / (0.01 * scale) ** 2, 0.01 * scale
    for solve in (adam, lbfgs):
        x, pred, conv, iters = solve(editor, predictor, latent, a, target, lam, thr, 50)
        assert conv.all(), solve.__name__
        assert ((pred - target).abs() <= thr).all()
        assert np.allclose(x[:, 2].numpy(), 0.5), solve.__name__  # no effect: never moved
        assert (iters > 0).all()
    x, *_ = adam(editor, predictor, latent, a, target, lam, thr, 50)
    assert x[0, 0] > 0.5 and x[1, 0] < 0.5  # the strongest attribute, the target's way


def test_fused_proximal_gives_the_explainers_iterates_with_one_pass_an_iteration():
    from backward_solvers import fused

    from mxplain_attribute.backward import BackwardCounterfactual

    editor, predictor, counter = FakeEditor(), FakePredictor(), _limits.Counter()
    bw = BackwardCounterfactual(max_iter=30)
    latent = editor.encode(torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1)))
    a = torch.full((4, 3), 0.5)
    target = 100 * (latent[0][:, 0] + 0.05) + torch.tensor([8.0, -6.0, 3.0, -9.0])
    scale = target.abs()
    lam, thr = 1 / (bw.tol * scale) ** 2, bw.tol * scale
    x0, p0, c0, i0 = bw.optimize(editor, predictor, latent, a, target, "gradient")
    _limits.instrument(editor, predictor, counter)
    counter.active = True
    x1, p1, c1, i1 = fused(editor, predictor, latent, a, target, lam, thr, 30, bw.lr)
    assert torch.allclose(x0, x1, atol=1e-6) and torch.equal(c0, c1) and torch.equal(i0, i1)
    assert c1.all() and (i1 > 1).all()  # several steps a row
    grad_rows = sum(r for (_, op, g), r in counter.rows.items() if op == "decode" and g)
    assert grad_rows == 4 + int(i1.sum())  # the start, then one pass a row and iteration
    assert not any(op == "decode" and not g for (_, op, g) in counter.rows)


def test_backward_results_dump_never_replaces_a_file(tmp_path, capsys):
    """``dump`` refuses an existing path before any work (exit 2, the file untouched), also when
    named without its ``.npz`` suffix; ``publish`` writes a new file whole, keeps one that
    appeared meanwhile, and leaves no partial file either way."""
    import backward_results

    mine = tmp_path / "mine.npz"
    mine.write_bytes(b"the user's own file")
    for name in (mine, tmp_path / "mine"):
        with pytest.raises(SystemExit) as exc:
            backward_results.dump(str(name), 1, None, ["backward"])
        assert exc.value.code == 2
        assert "error: " in capsys.readouterr().err
    assert mine.read_bytes() == b"the user's own file"

    new = tmp_path / "new.npz"
    backward_results.publish(new, {"backward_reachable": np.array([True, False])})
    assert np.load(new)["backward_reachable"].tolist() == [True, False]
    with pytest.raises(SystemExit) as exc:
        backward_results.publish(mine, {"backward_reachable": np.array([True])})
    assert exc.value.code == 2 and mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.npz", "new.npz"]

"""A third-party explainer is first class (issue 18 item 5): a throw-away explainer defined here,
found the way an installed plugin is (a distribution's ``entry_points.txt`` in the ``mxplain``
group, on ``PYTHONPATH``), explains lots on two Dask workers and appears in the run's report with
its own section: its name, its summary's numbers rounded, its figure."""

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_run import DATA, MODELS

from mxplain import hookimpl, plugins
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable
from mxplain.report_html import sig

HERE = Path(__file__).resolve().parent


class Throwaway(Explainer):
    """Each lot's mean prediction times ``scale``."""

    name = "throwaway"

    def __init__(self, scale: float = 2.0):
        self.scale = scale

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        return {"throwaway_mean": Variable(("lot",), units=ctx.property_units)}

    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        pred = ctx.predictor.predict(lot.tiles, batch_size=ctx.batch_size)
        return {"throwaway_mean": np.float32(self.scale * pred.mean())}

    def summarize(self, cube, ctx: ExplainContext) -> dict:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from mxplain.figures import save_figure

        values = cube["throwaway_mean"].values.astype(float)
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.bar(np.arange(len(values)), values)
        save_figure(fig, ctx.figures_dir / "throwaway_bars.png", dpi=60)
        return {"mean_over_lots": float(values.mean()), "lots": int(len(values))}


@hookimpl
def mxplain_explainers():
    return [Throwaway]


def install(root: Path) -> Path:
    """A distribution ``mxplain-throwaway`` whose ``mxplain`` entry point is this module."""
    info = root / "mxplain_throwaway-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mxplain-throwaway\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mxplain]\nthrowaway = {Path(__file__).stem}\n")
    return root


@pytest.fixture
def installed(tmp_path, monkeypatch):
    site = install(tmp_path / "site")
    path = [str(site), str(HERE)]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path + [p for p in [os.environ.get(
        "PYTHONPATH")] if p]))  # what the Dask workers find
    for p in reversed(path):
        monkeypatch.syspath_prepend(p)
    plugins.reset()
    yield
    plugins.reset()


def test_the_entry_point_registers_the_explainer(installed):
    entry = plugins.registry()["explainer"]["throwaway"]
    assert entry.distribution == "mxplain-throwaway" and entry.plugin == "throwaway"
    assert entry.cls.param_defaults() == {"scale": 2.0}


@pytest.mark.slow
def test_a_plugin_explainer_survives_dask_and_has_its_report_section(installed, tmp_path):
    from mxplain.cube import open_results
    from mxplain.pipeline import run
    from mxplain.report import write_report

    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + MODELS + "[explain.throwaway]\nscale = 3.0\n[run]\nexplain_tiles = 2\n"
                   "editor_eval_tiles = 2\n")
    out = run(cfg, out=tmp_path / "run", device="cpu", progress=False, workers=2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["explain_dask"]["lots_by_worker"]) == 2  # both workers explained lots
    cube = open_results(out).load()
    pred = cube["prediction"].where(cube["tile_mask"]).mean("tile").values
    np.testing.assert_allclose(cube["throwaway_mean"].values, 3.0 * pred, rtol=1e-5)
    block = metrics["explain"]["throwaway"]
    assert block["lots"] == 4
    assert block["mean_over_lots"] == pytest.approx(float(np.mean(3.0 * pred)), rel=1e-5)
    for page in (out / "report" / "index.html", write_report(out)):  # the run's, then again
        html = page.read_text(encoding="utf-8")
        section = html[html.index("<h2>throwaway</h2>"):]
        section = section[:section.index("<h2>", 4)]
        assert (f"<tr><th>mean_over_lots</th><td>{sig(block['mean_over_lots'])}</td></tr>"
                in section)
        assert "<tr><th>lots</th><td>4</td></tr>" in section
        assert re.search(r'<img alt="throwaway_bars" src="data:image/png;base64,', section)


@pytest.mark.slow
def test_the_conformance_command_checks_the_installed_plugin(installed):
    """``python -m mxplain.conformance DISTRIBUTION`` in a fresh process finds the plugin through
    its entry point: constructor, explain_lot, and a small real run with each fitting predictor
    (no editor: it needs none) through summarize and report_section."""
    import subprocess

    from mxplain.conformance import model_pairs

    assert model_pairs("throwaway") == [(p, None) for p in plugins.available("predictor")]
    done = subprocess.run([sys.executable, "-m", "mxplain.conformance", "mxplain-throwaway"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-2:] == ["ok   explainer throwaway",
                                             "1 of 1 components conform"]

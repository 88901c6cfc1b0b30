"""The report a materials scientist reads top-down (issue 19 item 3): answers first (per lot,
effects in the property's units with bootstrap intervals; what change reaches a target, converged
tiles only), then the trust gates, the evidence, the references, the raw metrics collapsed;
rounded numbers with units, no nested tables, no empty rows, titles from the components used, no
seed numbers; ``--compare`` on its own recorded page; checked in headless Chromium at 1280 px."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mxplain.report import write_report

UNROUNDED = 380.3104553222656


def _figures(run, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (run / "figures").mkdir(parents=True, exist_ok=True)
    for name in names:
        fig, ax = plt.subplots(figsize=(4, 2.5))
        ax.plot(np.arange(5), np.arange(5) ** 2)
        fig.savefig(run / "figures" / name)
        plt.close(fig)


def _cube(run, lots=("L0", "L1", "L2")):
    import xarray as xr

    from mxplain.cube import FORMAT_VERSION

    attrs, n, t = ["grain_size", "roughness"], len(lots), 3
    sens = np.array([[-58.0, 80.0], [-20.0, 81.2345], [-30.0, 79.0]][:n], np.float32)
    ci = np.stack([sens - 5.0, sens + 5.0], -1)
    change = np.full((n, 2, 2), 0.1234567, np.float32)
    change[:, 1] *= -1
    reached = np.ones((n, 2), np.float32)
    reached[1, :] = 0.0  # lot L1: no counterfactual reached its target in either direction
    converged = np.ones((n, t, 2), bool)
    converged[1] = False
    change[1] = 0.0
    ds = xr.Dataset(
        {"sensitivity": (("lot", "attribute"), sens),
         "sensitivity_ci": (("lot", "attribute", "bound"), ci),
         "sensitivity_sign_stability": (("lot", "attribute"), np.full((n, 2), 0.97, np.float32)),
         "tile_mask": (("lot", "tile"), np.ones((n, t), bool)),
         "prediction": (("lot", "tile"), np.full((n, t), UNROUNDED, np.float32)),
         "lot_attributes": (("lot", "attribute"), np.full((n, 2), 0.5, np.float32)),
         "measured_property": (("lot",), np.full(n, UNROUNDED, np.float32)),
         "backward_mean_change": (("lot", "direction", "attribute"), change),
         "backward_change_ci": (("lot", "direction", "attribute", "bound"),
                                np.stack([change - 0.01, change + 0.01], -1)),
         "backward_reached_share": (("lot", "direction"), reached),
         "backward_converged": (("lot", "tile", "direction"), converged),
         "backward_target": (("lot", "tile", "direction"),
                             np.stack([np.full((n, t), UNROUNDED + 10, np.float32),
                                       np.full((n, t), UNROUNDED - 10, np.float32)], -1))},
        coords={"lot": list(lots), "attribute": attrs, "direction": ["increase", "decrease"],
                "bound": ["low", "high"]},
        attrs={"mxplain_results_cube": FORMAT_VERSION, "property_units": "HV"})
    ds.to_zarr(run / "results.zarr", mode="w")


def tiny_run(root: Path, editor="attgan", trust=True) -> Path:
    run = root / "run"
    _figures(run, ["predictor_per_lot.png", "forward_fig5_attribute_panel.png",
                   "latent_design_traits.png", "editor_grid.png"])
    metrics = {
        "data": {"lots": 3, "tiles": 9, "property": "hardness", "units": "HV",
                 "attributes": ["grain_size", "roughness"]},
        "predictor": {"val_mape": UNROUNDED, "note": "a \u2014 dash",
                      "per_lot": {"L0": {"rmse": 3.0, "deep": {"deeper": {"x": 1.23456}}}}},
        "explain": {"forward": {"sign_agreement_overall": 0.95}, "gradcam": {},
                    "latent_design": {"tiles": 4}},
        "provenance": {"mxplain_version": "0.1.0", "config": {
            "data": {"name": "store"}, "predictor": {"name": "wideresnet"},
            "editor": {"name": editor}, "explain": {"forward": {}, "gradcam": {}}}}}
    if trust:
        gate = {"value": 0.4, "verdict": "fail", "threshold": {"pass": ">= 0.75", "warn": ">= 0.6"},
                "reason": "1 of 2 attributes judged by the probe; not passing: grain_size"}
        metrics["trust"] = {"verdict": "untrusted", "gates": {"attribute_probe": gate},
                            "explanations": {
            "forward": {"trust": "untrusted", "attributes": {
                "grain_size": {"trust": "untrusted", "reasons": [
                    "attribute_probe: probe: share of grain_size edits moving the requested way "
                    "0.40: outside the pass threshold (>= 0.75), beyond warn (>= 0.6)"]},
                "roughness": {"trust": "trusted", "reasons": []}}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    _cube(run)
    return run


def test_answers_first_then_trust_evidence_references_raw(tmp_path):
    html = write_report(tiny_run(tmp_path)).read_text(encoding="utf-8")
    order = [html.index(s) for s in ("<h2>Answers", "<h2>Trust", "<h2>Evidence",
                                     "<h2>References", "<h2>Raw metrics")]
    assert order == sorted(order), order
    raw = html[html.index("<h2>Raw metrics"):]
    assert raw.index("<details>") < raw.index("predictor.val_mape")
    assert "Liu et al. 2020" in html and "Sardeshmukh et al. 2021" in html


def test_numbers_rounded_with_units_and_intervals(tmp_path):
    html = write_report(tiny_run(tmp_path)).read_text(encoding="utf-8")
    assert str(UNROUNDED) not in html and "380.31" not in html
    assert "380 HV" in html  # measured and predicted, 3 significant digits, units
    answers = html[html.index("<h2>Answers"):html.index("<h2>Trust")]
    assert "HV per unit attribute" in answers
    assert "+81.2 [76.2, 86.2], sign 97 %" in answers  # the slope, its interval, stability
    assert "+0.123 [0.113, 0.133]" in answers  # the backward mean change and interval
    assert "+10.0 HV" in answers  # the requested change of the property
    assert "\\u2014" not in html and "\u2014 dash" in html  # unicode written as text


def test_lot_where_no_counterfactual_converged_gives_no_numbers(tmp_path):
    html = write_report(tiny_run(tmp_path)).read_text(encoding="utf-8")
    rows = [r for r in re.findall(r"<tr>.*?</tr>", html) if "<th>L1</th>" in r and "crease" in r]
    assert len(rows) == 2
    for row in rows:
        assert "no advice" in row and "0 of 3" in row
        assert not re.search(r"[+-]0\.\d", row), row


def test_untrusted_answers_greyed_with_reason(tmp_path):
    html = write_report(tiny_run(tmp_path)).read_text(encoding="utf-8")
    answers = html[html.index("<h2>Answers"):html.index("<h2>Trust")]
    greyed = re.findall(r"<td class='untrusted' title='([^']*)'>", answers)
    assert len(greyed) == 3  # grain_size of each lot
    assert all("independent attribute probe" in t for t in greyed)
    assert "Untrusted, not advice" in answers and "attribute_probe" not in answers
    trusted = write_report(tiny_run(tmp_path / "t", trust=False)).read_text(encoding="utf-8")
    assert "class='untrusted'" not in trusted


def test_no_empty_rows_nested_tables_or_seed_numbers(tmp_path):
    html = write_report(tiny_run(tmp_path)).read_text(encoding="utf-8")
    assert "<td></td>" not in html and "<th>gradcam</th>" not in html
    assert "explain.gradcam" not in html  # an explainer with no metrics: no row
    assert not re.search(r"<td>[^<]*<table", html)  # no table inside a cell
    assert "predictor.per_lot.L0.deep.deeper.x" in html and "<td>1.23</td>" in html
    assert not re.search(r"seed 00\d", html)


def test_section_names_from_the_components_used(tmp_path):
    html = write_report(tiny_run(tmp_path)).read_text(encoding="utf-8")
    assert "TextureVAE" not in html.split("<h2>References")[0]
    assert "Latent design in the attgan latent space" in html and "Editor: attgan" in html
    assert "Predictor accuracy: wideresnet" in html
    vae = write_report(tiny_run(tmp_path / "v", editor="texturevae")).read_text(encoding="utf-8")
    assert "TextureVAE and latent design" in vae


def test_compare_writes_its_own_recorded_page(tmp_path):
    from mxplain.errors import UserError
    from mxplain.runfolder import STATE

    run = tiny_run(tmp_path / "a")
    other = tiny_run(tmp_path / "b")
    own = write_report(run)
    before = own.read_bytes()
    (run / STATE).write_text(json.dumps({"mxplain_run": 1, "written": ["report/index.html"],
                                         "foreign": [], "stores": [], "done": []}))
    page = write_report(run, compare=other)
    assert page == run / "report" / "compare-run.html" and own.read_bytes() == before
    html = page.read_text(encoding="utf-8")
    assert "Compared with" in html and "lots where the runs agree in sign" in html
    state = json.loads((run / STATE).read_text())
    assert "report/compare-run.html" in state["written"]
    assert not (run / ".mxplain.lock").exists()
    write_report(run, compare=other)  # its own file: rewritten
    (run / "report" / "compare-run.html").unlink()
    state["written"] = ["report/index.html"]
    (run / STATE).write_text(json.dumps(state))
    (run / "report" / "compare-run.html").write_text("someone's notes")
    with pytest.raises(UserError, match="not written by mxplain"):
        write_report(run, compare=other)
    assert (run / "report" / "compare-run.html").read_text() == "someone's notes"


def _browser():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from cdp import Browser, chromium

    return Browser, chromium


#: the text of table cells outside the raw-number tables that a word break split (a cell drawn on
#: more lines than it has words)
BROKEN_WORDS = """Array.from(document.querySelectorAll('td,th')).filter(c => {
  const r = document.createRange(); r.selectNodeContents(c);
  const lines = new Set(Array.from(r.getClientRects()).map(x => Math.round(x.top))).size;
  return c.innerText.trim() !== '' && !c.closest('table.numbers')
    && lines > c.innerText.trim().split(/\\s+/).length; }).map(c => c.innerText)"""


def check_in_chromium(page: Path, profile: Path, shot: Path | None = None,
                      width: int = 1280) -> dict:
    """Load ``page`` at ``width`` px: the page's scroll width, images and decoded images; with
    ``shot``, a PNG screenshot of the top of the page."""
    import base64

    Browser, _ = _browser()
    b = Browser(profile, width=width, height=1000)
    try:
        b.call("Page.enable")
        b.call("Emulation.setDeviceMetricsOverride", width=width, height=1000,
               deviceScaleFactor=1, mobile=False)
        b.load(page.as_uri())
        b.evaluate("Promise.all(Array.from(document.images).map(i => i.decode()))")
        out = {"scroll_width": b.evaluate("document.documentElement.scrollWidth"),
               "images": b.evaluate("document.images.length"),
               "decoded": b.evaluate("Array.from(document.images).filter(i => i.complete && "
                                     "i.naturalWidth > 0).length"),
               "broken_words": b.evaluate(BROKEN_WORDS)}
        if shot is not None:
            data = b.call("Page.captureScreenshot", format="png")["data"]
            shot.write_bytes(base64.b64decode(data))
        return out
    finally:
        b.close()


def test_every_table_scrolls_in_its_own_box(tmp_path):
    html = write_report(tiny_run(tmp_path)).read_text(encoding="utf-8")
    assert html.count("<table") == html.count("<div class='wide'><table") > 3, \
        "a table outside a scroll box widens the page"


@pytest.mark.skipif(_browser()[1]() is None, reason="Chromium is not installed (.ci/run installs "
                    "the Debian package 'chromium'; it could not be installed here)")
def test_report_fits_1280_px_and_every_image_decodes(tmp_path):
    run = tiny_run(tmp_path)
    page = write_report(run)
    res = check_in_chromium(page, tmp_path / "profile", tmp_path / "top.png")
    assert res["scroll_width"] <= 1280, res
    assert res["broken_words"] == [], res
    assert res["images"] == 4 and res["decoded"] == 4, res
    # squeezed, a table scrolls in its own box rather than splitting lot names and words
    narrow = check_in_chromium(page, tmp_path / "profile", width=480)
    assert narrow["broken_words"] == [] and narrow["scroll_width"] <= 480, narrow
    assert (tmp_path / "top.png").stat().st_size > 10_000


def test_run_without_attribute_explanations_still_lists_lots(tmp_path):
    run = tiny_run(tmp_path)
    import xarray as xr

    cube = xr.open_zarr(run / "results.zarr").load()
    keep = ["tile_mask", "prediction", "measured_property", "lot_attributes"]
    cube[keep].to_zarr(run / "results2.zarr", mode="w")
    import shutil

    shutil.rmtree(run / "results.zarr")
    (run / "results2.zarr").rename(run / "results.zarr")
    html = write_report(run).read_text(encoding="utf-8")
    answers = html[html.index("<h2>Answers"):]
    assert "No attribute explanations in this run" in answers
    assert "Per lot: measured and predicted" in answers and "<th>L2</th>" in answers

"""The report: self-contained, escapes every user string, and loads cleanly in headless Chromium
(console free of errors, every image decoded, a screenshot saved)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from mxplain.report import write_report

EVIL = "<script>alert('x')</script>"


def make_run(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    for name in ("predictor_per_lot.png", "forward_fig5_attribute_panel.png"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(np.arange(5), np.arange(5) ** 2)
        ax.set_title(EVIL)
        fig.savefig(run / "figures" / name)
        plt.close(fig)
    metrics = {"data": {"lots": 2, "lot_ids": [EVIL, "ok"]},
               "predictor": {"val_mape": 2.1, "per_lot": {EVIL: {"rmse": 3.0}}},
               "explain": {"forward": {"sign_agreement_overall": 0.95}},
               "provenance": {"mxplain_version": "0.1.0", "config": {"data": {"name": EVIL}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_report_escapes_and_embeds(tmp_path):
    path = write_report(make_run(tmp_path))
    html = path.read_text()
    assert EVIL not in html and "&lt;script&gt;" in html
    assert "<script" not in html.lower()
    assert html.count("data:image/png;base64,") == 2
    assert "src=\"http" not in html and "src='http" not in html  # self-contained


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHECK = """<!doctype html><html><body><iframe id="r" src="{src}" width="1200" height="900"></iframe>
<script>
document.getElementById("r").onload = function () {{
  const d = this.contentDocument;
  const imgs = Array.from(d.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const text = d.body.innerText.includes("<script>alert('x')<\\/script>");
  const scripts = d.querySelectorAll("script").length;
  document.body.setAttribute("data-result", JSON.stringify({{images: imgs.length, loaded: ok,
    evil_shown_as_text: text, scripts: scripts}}));
}};
</script></body></html>"""


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (.ci/run installs the "
                    "Debian package 'chromium'; it could not be installed here)")
def test_report_in_headless_chromium(tmp_path):
    report = write_report(make_run(tmp_path))
    check = tmp_path / "check.html"
    check.write_text(CHECK.format(src=report.as_uri()))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
             "--virtual-time-budget=5000"]
    env = {**os.environ, "HOME": str(tmp_path)}
    res = subprocess.run([_chromium(), *flags, "--enable-logging=stderr", "--v=0", "--dump-dom",
                          check.as_uri()], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    marker = 'data-result="'
    assert marker in res.stdout, res.stdout[-2000:]
    raw = res.stdout.split(marker, 1)[1].split('"', 1)[0].replace("&quot;", '"')
    result = json.loads(raw)
    assert result == {"images": 2, "loaded": 2, "evil_shown_as_text": True, "scripts": 0}
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    shot = tmp_path / "report.png"
    res = subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,1600",
                          report.as_uri()], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]


def _cube(run, sens, truth, lots=("L0", "L1", "L2", "L3")):
    import xarray as xr

    from mxplain.cube import FORMAT_VERSION

    attrs = ["size", "porosity"]
    n = len(lots)
    ds = xr.Dataset({"sensitivity": (("lot", "attribute"), np.asarray(sens, np.float32)),
                     "true_sensitivity": (("lot", "attribute"), np.asarray(truth, np.float32)),
                     "tile_mask": (("lot", "tile"), np.ones((n, 2), bool)),
                     "prediction": (("lot", "tile"), np.full((n, 2), 2000.0, np.float32)),
                     "lot_attributes": (("lot", "attribute"), np.full((n, 2), 0.5, np.float32)),
                     "measured_property": (("lot",), np.full(n, 2000.0, np.float32))},
                    coords={"lot": list(lots), "attribute": attrs},
                    attrs={"mxplain_results_cube": FORMAT_VERSION})
    ds.to_zarr(run / "results.zarr", mode="w")


def test_compare_two_runs_side_by_side(tmp_path):
    from mxplain.errors import UserError
    from mxplain.report import sensitivity_comparison

    truth = [[-300.0, 75.0]] * 4
    this = make_run(tmp_path / "a")
    _cube(this, [[-90, 5], [-80, -4], [-70, 3], [-60, 2]], truth)
    other = make_run(tmp_path / "b")
    _cube(other, [[-50, -1], [-40, -2], [10, 3], [-20, -4]], truth, lots=("L0", "L1", "L2", "L9"))
    comp = sensitivity_comparison(this, other)
    assert comp["lots"] == 3  # L0..L2 are shared
    size, poro = comp["attributes"]["size"], comp["attributes"]["porosity"]
    assert size["truth_sign_agreement_this"] == 1.0
    assert size["truth_sign_agreement_other"] == pytest.approx(2 / 3)
    assert size["sign_agreement_between_runs"] == pytest.approx(2 / 3)
    assert poro["truth_sign_agreement_this"] == pytest.approx(2 / 3)
    assert poro["sign_agreement_between_runs"] == pytest.approx(2 / 3)
    assert comp["mean_truth_sign_agreement_this"] == pytest.approx(5 / 6)
    page = write_report(this, compare=other)
    assert page.name == "compare-run.html"  # its own page; the run's report is not replaced
    html = page.read_text()
    assert "Compared with" in html and "lots where the runs agree in sign" in html
    assert html.count("data:image/png;base64,") == 3  # the two run figures + the comparison
    with pytest.raises(UserError, match="no forward sensitivities|no results.zarr"):
        sensitivity_comparison(this, make_run(tmp_path / "c"))

"""The documented examples work as written: the custom predictor package installs, registers and
runs through `mxplain run`; examples/api.py runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_custom_predictor_package(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(site),
                    str(ROOT / "examples" / "custom_predictor")], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    cli = [sys.executable, "-m", "mxplain"]
    rows = json.loads(subprocess.run(cli + ["plugins", "--json"], env=env, check=True,
                                     capture_output=True, text=True).stdout)
    assert {"name": "tinycnn", "kind": "predictor", "distribution": "mxplain-tinycnn",
            "version": "0.1.0"} in rows
    out = tmp_path / "run"
    res = subprocess.run(cli + ["run", str(ROOT / "examples" / "custom_predictor" / "config.toml"),
                                "--out", str(out), "--quiet"], env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    from mxplain.cube import open_results

    cube = open_results(out)
    assert cube.gradcam.shape == (6, 4, 32, 32)
    report = (out / "report" / "index.html").read_text()
    assert "Per lot" in report and "lot000" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["plugins"]["predictor:tinycnn"] == "mxplain-tinycnn 0.1.0"
    # the conformance suite from the installed mxplain, as a plugin author runs it (issue 19)
    res = subprocess.run([sys.executable, "-m", "mxplain.conformance", "tinycnn"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines() == ["ok   predictor tinycnn", "1 of 1 components conform"]


def test_api_example(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "api.py")], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "gradcam maps:" in res.stdout

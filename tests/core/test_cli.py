"""Every CLI error path: exit 2, exactly one `error:` line on stderr, no traceback."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mxplain.cli import main


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def make_folder(tmp_path, lots=("L1", "L2"), n=3, size=32, csv_rows=None, mode="L"):
    root = tmp_path / "tiles"
    rng = np.random.default_rng(0)
    for lot in lots:
        (root / lot).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            arr = rng.integers(0, 255, (size, size), dtype=np.uint8)
            img = Image.fromarray(arr)
            img.convert(mode).save(root / lot / f"t{j}.png")
    labels = tmp_path / "labels.csv"
    rows = csv_rows or ["lot,size,porosity,property", "L1,0.2,0.3,1000", "L2,0.8,0.1,1200"]
    labels.write_text("\n".join(rows) + "\n")
    return root, labels


def test_ingest_ok(tmp_path, capsys):
    root, labels = make_folder(tmp_path)
    code, out, err = run_cli(["data", "ingest", str(root), "--labels", str(labels), "--out",
                              str(tmp_path / "s.zarr"), "--units", "psi"], capsys)
    assert code == 0, err
    from mxplain.store import TileStore

    s = TileStore.open(tmp_path / "s.zarr")
    assert s.lot_ids == ["L1", "L2"] and s.attributes == ("size", "porosity")
    assert s.tiles("L2").shape == (3, 32, 32) and s.property_units == "psi"


@pytest.mark.parametrize("case,needles", [
    ("rgb", ["t0.png", "not grayscale"]),
    ("wrong_size", ["t1.png", "expected 32x32"]),
    ("corrupt", ["bad.png", "not a readable image"]),
    ("truncated", ["t2.png", "not a readable image"]),
    ("empty_lot", ["lot 'L2'", "no PNG or TIFF"]),
    ("dup_lot", ["duplicate lot id 'L1'"]),
    ("missing_label", ["lot 'L2'", "no 'porosity' value"]),
    ("nan_label", ["lot 'L2'", "'size'"]),
    ("out_of_range", ["lot 'L2'", "outside [0, 1]"]),
    ("text_property", ["lot 'L1'", "'property'", "is not a number"]),
    ("no_folder_for_lot", ["lot 'L3'", "has no folder"]),
    ("no_row_for_folder", ["lot folder 'L2'", "no row"]),
    ("no_property_column", ["no 'property' column"]),
    ("missing_labels_file", ["labels file", "does not exist"]),
    ("float_tiff", ["t0.tif", "dtype float"]),
])
def test_ingest_errors(tmp_path, capsys, case, needles):
    rows = None
    if case == "dup_lot":
        rows = ["lot,size,porosity,property", "L1,0.2,0.3,1000", "L1,0.8,0.1,1200"]
    elif case == "missing_label":
        rows = ["lot,size,porosity,property", "L1,0.2,0.3,1000", "L2,0.8,,1200"]
    elif case == "nan_label":
        rows = ["lot,size,porosity,property", "L1,0.2,0.3,1000", "L2,nan,0.1,1200"]
    elif case == "out_of_range":
        rows = ["lot,size,porosity,property", "L1,0.2,0.3,1000", "L2,1.8,0.1,1200"]
    elif case == "text_property":
        rows = ["lot,size,porosity,property", "L1,0.2,0.3,high", "L2,0.8,0.1,1200"]
    elif case == "no_folder_for_lot":
        rows = ["lot,size,porosity,property", "L1,0.2,0.3,1000", "L2,0.8,0.1,1200",
                "L3,0.5,0.5,1100"]
    elif case == "no_row_for_folder":
        rows = ["lot,size,porosity,property", "L1,0.2,0.3,1000"]
    elif case == "no_property_column":
        rows = ["lot,size,porosity,stress", "L1,0.2,0.3,1000", "L2,0.8,0.1,1200"]
    root, labels = make_folder(tmp_path, csv_rows=rows)
    if case == "rgb":
        colour = np.zeros((32, 32, 3), np.uint8)
        colour[..., 0] = 200  # a red tile: grey RGB (equal channels) is accepted, colour is not
        Image.fromarray(colour).save(root / "L1" / "t0.png")
    elif case == "wrong_size":
        Image.fromarray(np.zeros((16, 32), np.uint8)).save(root / "L1" / "t1.png")
    elif case == "corrupt":
        (root / "L2" / "bad.png").write_bytes(b"not an image at all")
    elif case == "truncated":
        p = root / "L2" / "t2.png"
        p.write_bytes(p.read_bytes()[:60])
    elif case == "empty_lot":
        for f in (root / "L2").iterdir():
            f.unlink()
    elif case == "missing_labels_file":
        labels.unlink()
    elif case == "float_tiff":
        import tifffile

        for f in (root / "L1").iterdir():
            f.unlink()
        tifffile.imwrite(root / "L1" / "t0.tif", np.zeros((32, 32), np.float32))
    out_store = tmp_path / "s.zarr"
    code, out, err = run_cli(["data", "ingest", str(root), "--labels", str(labels), "--out",
                              str(out_store)], capsys)
    assert_user_error(code, err, *needles)
    assert not out_store.exists()
    assert not (tmp_path / "s.zarr.partial").exists()


def test_config_errors(tmp_path, capsys):
    code, _, err = run_cli(["run", str(tmp_path / "none.toml"), "--out", str(tmp_path / "r")],
                           capsys)
    assert_user_error(code, err, "none.toml", "does not exist")
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nname = "synthetic"\nn_lotz = 4\n')
    code, _, err = run_cli(["run", str(bad), "--out", str(tmp_path / "r")], capsys)
    assert_user_error(code, err, "n_lotz", "did you mean 'n_lots'")
    bad.write_text('[data]\nname = "synthetik"\n')
    code, _, err = run_cli(["run", str(bad), "--out", str(tmp_path / "r")], capsys)
    assert_user_error(code, err, "synthetik", "available datasets")


def test_usage_errors_and_device(tmp_path, capsys):
    code, _, err = run_cli(["frobnicate"], capsys)
    assert_user_error(code, err, "frobnicate")
    code, _, err = run_cli(["run", "--device", "tpu", "--out", str(tmp_path / "r")], capsys)
    assert_user_error(code, err, "unknown device 'tpu'")


def test_report_and_store_errors(tmp_path, capsys):
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert_user_error(code, err, "not a finished mxplain run")
    import zarr

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nname = "store"\npath = "{tmp_path / "foreign.zarr"}"\n')
    code, _, err = run_cli(["run", str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert_user_error(code, err, "foreign.zarr", "not an mxplain tile store")


def test_run_folder_in_use_and_existing(tmp_path, capsys, small_store):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nname = "store"\npath = "{small_store.path}"\n[run]\nreport = false\n')
    out = tmp_path / "r"
    code, _, err = run_cli(["run", str(cfg), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["run", str(cfg), "--out", str(out), "--quiet"], capsys)
    assert_user_error(code, err, "already holds a run", "--resume")
    # a live process holding the lock
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / ".mxplain.lock").write_text(str(sleeper.pid))
        code, _, err = run_cli(["run", str(cfg), "--out", str(out), "--resume", "--quiet"], capsys)
        assert_user_error(code, err, "in use by another mxplain run", str(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
    # a stale lock (dead pid) is taken over
    code, _, err = run_cli(["run", str(cfg), "--out", str(out), "--resume", "--quiet"], capsys)
    assert code == 0, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_out(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run_cli(["run", "--out", str(ro / "r")], capsys)
    assert_user_error(code, err, "ro")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker_file",))


def test_pickled_checkpoint_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import torch

    torch.save({"format": "mxplain-checkpoint-1", "evil": _Evil()}, tmp_path / "evil.pt")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nn_lots = 2\ntiles_per_lot = 2\ntile_size = 32\n'
                   '[predictor]\nname = "wideresnet"\ncheckpoint = "evil.pt"\n'
                   '[run]\nreport = false\n')
    code, _, err = run_cli(["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert_user_error(code, err, "evil.pt", "refused")
    assert not (tmp_path / "pwned_marker_file").exists()
    assert pickle  # the payload above is a real pickle that would run a command


def test_nan_training_loss_is_one_error_line_and_keeps_the_checkpoint(tmp_path, capsys,
                                                                      monkeypatch):
    import torch

    from mxplain_wideresnet.model import WideResNet

    calls = {"validated": False, "n": 0}
    scaled = WideResNet.scaled

    def nan_in_epoch_2(self, x):  # a loss that turns NaN in the second epoch, as a bad lr would
        out = scaled(self, x)
        if not self.training:
            calls["validated"] = True
        elif calls["validated"]:
            out = out * float("nan")
        return out

    monkeypatch.setattr(WideResNet, "scaled", nan_in_epoch_2)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nn_lots = 3\ntiles_per_lot = 6\ntile_size = 32\n'
                   '[predictor]\nname = "wideresnet"\ndepth = 10\nepochs = 3\nbatch_size = 8\n'
                   '[run]\nreport = false\n')
    out = tmp_path / "r"
    code, _, err = run_cli(["run", str(cfg), "--out", str(out), "--quiet"], capsys)
    kept = out / "models" / "predictor.training.pt"
    assert_user_error(code, err, "wideresnet: training loss is NaN at epoch 2, step 1",
                      f"last good checkpoint kept at {str(kept)!r} (epoch 1)")
    assert torch.load(kept, weights_only=True)["epoch"] == 1
    assert not (out / "models" / "predictor.pt").exists() and not (out / "metrics.json").exists()


def test_full_disk_is_one_error_line_and_nothing_looks_complete(tmp_path, capsys, small_store,
                                                                 monkeypatch):
    import errno

    import mxplain.pipeline as pipeline

    real = pipeline.write_atomic

    def no_space_for_metrics(path, text):
        if path.name == "metrics.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text)

    monkeypatch.setattr(pipeline, "write_atomic", no_space_for_metrics)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nname = "store"\npath = "{small_store.path}"\n[run]\nreport = false\n')
    out = tmp_path / "r"
    code, _, err = run_cli(["run", str(cfg), "--out", str(out), "--quiet"], capsys)
    assert_user_error(code, err, "No space left on device", "metrics.json", "--resume")
    assert not (out / "metrics.json").exists() and not (out / "report").exists()
    assert not list(out.glob("*.tmp")) and not (out / ".mxplain.lock").exists()

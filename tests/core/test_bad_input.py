"""Bad input of every kind (issue 16, items 12-17): one ``error:`` line and exit 2, found when the
config is resolved (before anything is written or trained) wherever the config alone shows it; or
a correct result (a note for what is skipped)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_run import DATA, MODELS

from mxplain.cli import main

BASE = DATA + MODELS + "[explain.forward]\nsteps = 3\n[explain.backward]\nmax_iter = 2\n[run]\n"


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def with_key(text: str, table: str, line: str) -> str:
    """Config ``text`` with the TOML ``line`` set in ``[table]`` (replacing the key if there)."""
    import tomli_w

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    raw = tomllib.loads(text)
    t = raw
    for part in table.split("."):
        t = t.setdefault(part, {})
    t.update(tomllib.loads(line))
    return tomli_w.dumps(raw)


# ---- item 12 / 16: wrong types and values, refused at resolution, nothing written -------------
CONFIG_CASES = [
    ("predictor", 'epochs = "many"', ["[predictor] epochs", "integer"]),
    ("run", 'seed = "abc"', ["[run] seed", "integer"]),
    ("run", "seed = -1", ["[run] seed = -1", ">= 0"]),
    ("run", "seed = 1.5", ["[run] seed = 1.5", "integer"]),
    ("predictor", "seed = 1.5", ["[predictor] seed = 1.5", "integer"]),
    ("run", "device = 5", ["[run] device = 5", "string"]),
    ("run", 'device = "tpu"', ["[run] device", "cuda:N"]),
    ("run", 'explain_tiles = "all"', ["[run] explain_tiles", "integer"]),
    ("run", "explain_tiles = -3", ["[run] explain_tiles = -3", ">= 0"]),
    ("run", 'editor_eval_tiles = "x"', ["[run] editor_eval_tiles", "integer"]),
    ("run", 'report = "no"', ["[run] report", "true or false"]),
    ("editor", "lr = -0.001", ["[editor] lr = -0.001", "> 0"]),
    ("editor", 'thres_int = "half"', ["[editor] thres_int", "number"]),
    ("editor", "epochs = 0", ["[editor] epochs = 0", ">= 1"]),
    ("predictor", "lr = inf", ["[predictor] lr = inf", "NaN and Inf"]),
    ("predictor", "dropout = 1.0", ["[predictor] dropout", "[0, 1)"]),
    ("predictor", "leave_lots_out_eval = 1", ["[predictor] leave_lots_out_eval", "true or false"]),
    ("predictor", "widen = 0", ["[predictor] widen", ">= 1"]),
    ("explain.backward", "lr = nan", ["[explain.backward] lr = nan", "NaN and Inf"]),
    ("explain.backward", "targets = [nan, nan]", ["[explain.backward] targets", "NaN and Inf"]),
    ("explain.backward", 'max_iter = "10"', ["[explain.backward] max_iter", "integer"]),
    ("explain.forward", "stepz = 3", ["unknown key 'stepz' in [explain.forward]", "'steps'"]),
    ("data", "tiles_per_lot = 1e8", ["[data] tiles_per_lot", "integer"]),
    ("data", "n_lots = 1", ["[data] n_lots = 1"]),
    ("data", "law = {size = nan}", ["[data] law", "NaN and Inf"]),
]


@pytest.mark.parametrize("table,line,needles", CONFIG_CASES,
                         ids=[f"{t}:{ln}" for t, ln, _ in CONFIG_CASES])
def test_bad_config_values_are_one_line_before_anything_is_written(tmp_path, capsys, table, line,
                                                                    needles):
    cfg = tmp_path / "c.toml"
    cfg.write_text(with_key(BASE, table, line))
    out = tmp_path / "run"
    code, _, err = run_cli(["run", cfg, "--out", out, "--quiet"], capsys)
    assert_one_error(code, err, "c.toml", *needles)
    assert not out.exists()


def test_store_path_of_the_wrong_type(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "store"\npath = 5\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "run"], capsys)
    assert_one_error(code, err, "[data] path = 5", "string")
    assert not (tmp_path / "run").exists()


def test_good_values_still_resolve():
    from mxplain import config

    raw = {"data": {"name": "synthetic", "tile_size": 32, "property_mean": 2000},  # int for float
           "predictor": {"name": "wideresnet", "max_tiles_per_lot": 0, "lr": 1},
           "editor": {"name": "attgan", "thres_int": 1},
           "explain": {"forward": {"batch_size": "auto"}, "backward": {"targets": [0.2, -0.2]}},
           "run": {"seed": 3, "explain_tiles": 0, "report": False, "device": "CPU"}}
    cfg = config.resolve(raw)
    assert cfg["predictor"]["lr"] == 1 and cfg["explain"]["backward"]["targets"] == [0.2, -0.2]


def test_types_come_from_annotations_and_defaults():
    from mxplain.config import param_types

    def init(self, a=1, b=None, c=(1, 2), d=None, e=0, f=None, g=None):
        pass

    init.__annotations__ = {"a": "int", "b": "'float | None'", "e": "Any",
                            "f": "Optional[str]", "g": "list[str] | None"}
    C = type("C", (), {"__init__": init})

    assert param_types(C, "a") == {"int"}
    assert param_types(C, "b") == {"float", "None"}
    assert param_types(C, "c") == {"list"}
    assert param_types(C, "d") is None and param_types(C, "e") is None
    assert param_types(C, "f") == {"str", "None"}
    assert param_types(C, "g") == {"list", "None"}


# ---- item 13: sizes that cannot fit ----------------------------------------------------------
@pytest.mark.parametrize("table,line,needle", [
    ("data", "tile_size = 100000", "tile_size = 100000"),
    ("data", "tiles_per_lot = 10000000000", "tiles_per_lot = 10000000000"),  # 10 TiB
    ("predictor", "widen = 4000", "widen = 4000"),
    ("predictor", "batch_size = 10000000", "batch_size = 10000000"),
])
def test_sizes_that_cannot_fit_are_refused_before_allocating(tmp_path, capsys, table, line,
                                                              needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(with_key(BASE, table, line))
    out = tmp_path / "run"
    t0 = time.perf_counter()
    code, _, err = run_cli(["run", cfg, "--out", out, "--quiet", "--device", "cpu"], capsys)
    msg = assert_one_error(code, err, needle, "would need ~")
    assert "memory" in msg or "disk" in msg
    assert time.perf_counter() - t0 < 30 and not out.exists()


def test_synth_refuses_a_store_larger_than_the_disk(tmp_path, capsys, monkeypatch):
    import shutil

    from mxplain import preflight

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(preflight.shutil, "disk_usage",
                        lambda p: usage._replace(free=10_000))  # 10 kB free
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA)
    code, _, err = run_cli(["data", "synth", cfg, "--out", tmp_path / "s.zarr"], capsys)
    assert_one_error(code, err, "[data] n_lots = 4, tiles_per_lot = 6, tile_size = 32",
                     "on disk", "free")
    assert not (tmp_path / "s.zarr").exists()


def test_footprints_are_rough_but_not_absurd():
    from mxplain.interfaces import DataShape
    from mxplain_synthetic.dataset import SyntheticLots
    from mxplain_wideresnet.model import WideResNet
    from mxplain_wideresnet.predictor import WideResNetPredictor

    net = WideResNet(16, 2)
    assert WideResNetPredictor.n_weights(16, 2) == pytest.approx(
        sum(p.numel() for p in net.parameters()), rel=0.02)
    shape = SyntheticLots.data_shape({"n_lots": 16, "tiles_per_lot": 96, "tile_size": 64})
    assert shape == DataShape(16, 16 * 96, 96, 64)
    quick = WideResNetPredictor.footprint({"depth": 10, "batch_size": 32}, shape)
    assert all(fp.memory < 2 ** 30 for fp in quick)  # the quickstart: well under 1 GiB


# ---- item 14: user strings reach matplotlib literally; non-UTF-8 folder names -------------------
def test_dollar_signs_in_figure_text_are_literal(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mxplain.figures import literal, save_figure

    assert literal("a $x$ \\$ b") == "a \\$x\\$ \\$ b"
    fig, axes = plt.subplots(1, 3)
    axes[0].set_title("lot $\\frac$")  # unbalanced mathtext: a ValueError when drawn
    axes[0].set_ylabel("peak stress ($^$)")
    axes[1].bar(["$a$", "$\\b"], [1.0, 2.0])  # categorical tick labels
    axes[2].set_xticks([0, 1], labels=["$\\q", "x$_$"])
    axes[2].plot([1, 2], [1, 10], label="$\\bad$")
    axes[2].legend()
    axes[2].set_yscale("log")  # matplotlib's own math in tick labels stays math
    save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


def make_tiles(tmp_path, lots=("L1", "L2"), n=3, size=32, rows=None, header=None):
    root = tmp_path / "tiles"
    rng = np.random.default_rng(0)
    for lot in lots:
        (root / lot).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(
                root / lot / f"t{j}.png")
    labels = tmp_path / "labels.csv"
    header = header or "lot,size,porosity,property"
    rows = rows or [f"{lots[0]},0.2,0.3,1000", f"{lots[1]},0.8,0.1,1200"]
    labels.write_text("\n".join([header, *rows]) + "\n")
    return root, labels


@pytest.mark.slow
def test_dollars_and_a_non_utf8_run_folder_go_through_run_and_report(tmp_path, capsys):
    root, labels = make_tiles(tmp_path, lots=("$L1$", "L2"), n=4,
                              header="lot,$size$,porosity,property")
    store = tmp_path / "s.zarr"
    code, _, err = run_cli(["data", "ingest", root, "--labels", labels, "--out", store,
                            "--units", "$psi$"], capsys)
    assert code == 0, err
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nname = "store"\npath = "{store}"\n' + MODELS +
                   "[explain.forward]\nsteps = 3\n[explain.backward]\nmax_iter = 2\n"
                   "[explain.gradcam]\nig_steps = 2\n[explain.compare]\nmax_tiles = 2\n"
                   "curve_steps = 2\nig_steps = 2\nsweep_steps = 2\n")
    out = tmp_path / os.fsdecode(b"run$x$\xff")
    code, _, err = run_cli(["run", cfg, "--out", out, "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    page = out / "report" / "index.html"
    assert page.is_file() and "$psi$" in page.read_text(encoding="utf-8")
    assert not list(out.rglob("*.tmp"))
    figures = {p.name.split("_")[0] for p in (out / "figures").glob("*.png")}
    assert {"predictor", "editor", "forward", "backward", "compare"} <= figures, figures


# ---- item 15: tracebacks become one line ------------------------------------------------------
def _checkpoint(path: Path, **changes):
    import torch

    from mxplain.checkpoint import FORMAT
    from mxplain_wideresnet.model import WideResNet
    from mxplain_wideresnet.predictor import WideResNetPredictor

    p = WideResNetPredictor(depth=10)
    p._module, p.tile_size_ = WideResNet(10, 1).eval(), 64
    payload = {"format": FORMAT, "kind": "predictor", "name": "wideresnet",
               "params": p.get_params(), "state": p.state_dict(), **changes}
    for k, v in changes.items():
        if v is None:
            payload.pop(k)
    torch.save(payload, path)
    return path


CHECKPOINT_CASES = [
    ({"kind": None}, ["is damaged", "'kind'", "missing"]),
    ({"params": [1, 2]}, ["is damaged", "'params'", "list"]),
    ({"state": "x"}, ["is damaged", "'state'"]),
    ({"kind": "editor", "name": "attgan"}, ["holds a editor 'attgan'"]),
    ({}, ["trained on 64 px tiles", "32 px"]),  # a 64 px checkpoint on 32 px tiles (item 16)
]


@pytest.mark.parametrize("changes,needles", CHECKPOINT_CASES,
                         ids=["no-kind", "params-list", "state-str", "other-kind", "64px-on-32px"])
def test_bad_checkpoints_are_one_line_before_the_run(tmp_path, capsys, changes, needles):
    ckpt = _checkpoint(tmp_path / "p.pt", **changes)
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + f'[predictor]\nname = "wideresnet"\ncheckpoint = "{ckpt}"\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "run", "--quiet"], capsys)
    assert_one_error(code, err, "p.pt", *needles)
    assert not (tmp_path / "run").exists()


def test_checkpoint_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + '[predictor]\nname = "wideresnet"\ncheckpoint = "ckpt"\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "run"], capsys)
    assert_one_error(code, err, "ckpt", "is a directory, not a file")
    assert not (tmp_path / "run").exists()


def _ingest(tmp_path, capsys, root, labels, *extra):
    out = tmp_path / "s.zarr"
    code, _, err = run_cli(["data", "ingest", root, "--labels", labels, "--out", out, *extra],
                           capsys)
    return code, err, out


@pytest.mark.parametrize("header,rows,needles", [
    ("lot,size,porosity,property", ["L1,0.2,0.3,1000,7", "L2,0.8,0.1,1200"],
     ["line 2", "5 fields", "header has 4"]),
    ("lot,size,size,property", ["L1,0.2,0.3,1000", "L2,0.8,0.1,1200"],
     ["column 'size' appears 2 times"]),
    ("lot,size,,property", ["L1,0.2,0.3,1000", "L2,0.8,0.1,1200"], ["column 3", "no name"]),
], ids=["extra-field", "duplicate-column", "empty-column"])
def test_bad_csv_headers_and_rows(tmp_path, capsys, header, rows, needles):
    root, labels = make_tiles(tmp_path, header=header, rows=rows)
    code, err, out = _ingest(tmp_path, capsys, root, labels)
    assert_one_error(code, err, "labels.csv", *needles)
    assert not out.exists()


@pytest.mark.parametrize("content,needles", [
    (b"[]", ["holds a JSON list"]),
    (b'{"provenance": \xff}', ["not UTF-8"]),
    (b"{nope", ["not valid JSON"]),
], ids=["list", "not-utf8", "not-json"])
def test_report_on_a_bad_metrics_file(tmp_path, capsys, content, needles):
    (tmp_path / "metrics.json").write_bytes(content)
    code, _, err = run_cli(["report", tmp_path], capsys)
    assert_one_error(code, err, "metrics.json", *needles)
    assert not (tmp_path / "report" / "index.html").exists()


def test_report_on_metrics_with_wrong_shapes_still_renders(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(json.dumps({"provenance": [1], "explain": "x",
                                                       "data": 3, "predictor": [1, 2]}))
    code, _, err = run_cli(["report", tmp_path], capsys)
    assert code == 0, err
    assert (tmp_path / "report" / "index.html").is_file()


def test_state_json_that_is_not_an_object(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_text("[1, 2]")
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA)
    code, _, err = run_cli(["run", cfg, "--out", out, "--resume", "--quiet"], capsys)
    assert_one_error(code, err, "state.json")


def test_ingest_out_empty_string(tmp_path, capsys):
    root, labels = make_tiles(tmp_path)
    code, _, err = run_cli(["data", "ingest", root, "--labels", labels, "--out", ""], capsys)
    assert_one_error(code, err, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "tiles"]


@pytest.mark.slow
def test_scheduler_that_is_not_an_address_exits_promptly(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + "[run]\nreport = false\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mxplain", "run", str(cfg), "--out",
                           str(tmp_path / "run"), "--quiet", "--scheduler", "not a url"],
                          capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Dask scheduler"), lines
    assert elapsed < 18, elapsed  # the failed Client's __del__ used to wait 20 s at exit
    assert not (tmp_path / "run").exists()  # the address does not parse: refused before the run


def test_unreachable_scheduler_exits_promptly_without_a_client_traceback(tmp_path, capsys,
                                                                        monkeypatch):
    from mxplain import distributed

    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 0.5)
    made = []
    monkeypatch.setattr("distributed.Client.__init__", lambda *a, **k: made.append(1))
    from mxplain.errors import UserError

    with pytest.raises(UserError, match="cannot reach the Dask scheduler 'tcp://127.0.0.1:9'"):
        distributed.DaskExplain("tcp://127.0.0.1:9")  # the probe refuses: no Client is built
    assert not made


# ---- item 16: FIFOs in lot folders --------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_in_a_lot_folder_is_skipped_with_a_note(tmp_path, capsys):
    root, labels = make_tiles(tmp_path)
    os.mkfifo(root / "L2" / "zz.png")
    (root / "L1" / "sub.png").mkdir()
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        r=_ingest(tmp_path, capsys, root, labels)), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # the FIFO was opened: it waits for a writer forever; release it
        with open(root / "L2" / "zz.png", "wb"):
            pass
        worker.join(10)
        pytest.fail("ingest opened the FIFO")
    code, err, out = result["r"]
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("note: skipped")]
    assert len(notes) == 2 and "zz.png" in err and "not a regular file" in err, err
    from mxplain.store import TileStore

    assert TileStore.open(out).n_tiles == 6


# ---- item 17: clearer messages ------------------------------------------------------------------
def test_csv_with_a_byte_order_mark_is_accepted(tmp_path, capsys):
    root, labels = make_tiles(tmp_path)
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    code, err, out = _ingest(tmp_path, capsys, root, labels)
    assert code == 0, err


def test_paths_of_the_wrong_kind_say_what_they_are(tmp_path, capsys):
    root, labels = make_tiles(tmp_path)
    code, err, _ = _ingest(tmp_path, capsys, root, tmp_path / "tiles")
    assert_one_error(code, err, "labels file", "is a directory, not a file")
    code, err, _ = _ingest(tmp_path, capsys, labels, labels)
    assert_one_error(code, err, "tile folder", "is a file, not a folder")


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no filename, as from a write()


def test_no_space_in_ingest_names_the_path_and_offers_no_resume(tmp_path, capsys, monkeypatch):
    from mxplain.store import TileStore

    monkeypatch.setattr(TileStore, "write_lot", staticmethod(_no_space))
    root, labels = make_tiles(tmp_path)
    code, err, out = _ingest(tmp_path, capsys, root, labels)
    msg = assert_one_error(code, err, "No space left on device", str(out))
    assert "resum" not in msg


def test_no_space_in_synth_and_report_names_the_path(tmp_path, capsys, monkeypatch):
    from mxplain import report
    from mxplain.store import TileStore

    monkeypatch.setattr(TileStore, "write_lot", staticmethod(_no_space))
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA)
    code, _, err = run_cli(["data", "synth", cfg, "--out", tmp_path / "s.zarr", "--quiet"], capsys)
    msg = assert_one_error(code, err, "No space left on device", "s.zarr")
    assert "resum" not in msg
    (tmp_path / "metrics.json").write_text("{}")
    monkeypatch.setattr(report, "write_atomic", _no_space)
    code, _, err = run_cli(["report", tmp_path], capsys)
    msg = assert_one_error(code, err, "No space left on device", "report")
    assert "resum" not in msg


def test_stale_lock_of_a_live_unrelated_process_says_how_to_check(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".mxplain.lock").write_text("1")  # pid 1 is always alive, and never an mxplain run
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + "[run]\nreport = false\n")
    code, _, err = run_cli(["run", cfg, "--out", out, "--resume", "--quiet"], capsys)
    assert_one_error(code, err, "pid 1", ".mxplain.lock")


# ---- every key of every registered component: a value of any type is accepted or one line -------
def _component_keys():
    from mxplain import plugins

    out = []
    for kind, table in (("dataset", "data"), ("predictor", "predictor"), ("editor", "editor"),
                        ("explainer", "explain")):
        for name, entry in sorted(plugins.registry()[kind].items()):
            out += [(table, name, key) for key in entry.cls.param_defaults()]
    return out


def test_any_value_for_any_key_resolves_or_is_one_line():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mxplain import config
    from mxplain.errors import UserError

    scalar = st.one_of(st.integers(-10 ** 12, 10 ** 12), st.floats(), st.booleans(),
                       st.text(max_size=6), st.sampled_from(["auto", "mean", "tile", ""]))
    value = st.one_of(scalar, st.lists(scalar, max_size=3),
                      st.dictionaries(st.text(max_size=4), scalar, max_size=2))

    @settings(max_examples=300, deadline=None)
    @given(where=st.sampled_from(_component_keys()), v=value)
    def check(where, v):
        table, name, key = where
        raw = {"data": {"name": "synthetic"}, "predictor": {"name": "wideresnet"},
               "editor": {"name": "attgan"}}
        if table == "explain":
            raw["explain"] = {name: {key: v}}
        else:
            raw[table] = {"name": name, key: v}
        try:
            config.resolve(raw)
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)

    check()

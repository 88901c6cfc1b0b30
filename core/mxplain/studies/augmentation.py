"""Small-data augmentation study (seed 001 section 3.2, Fig. 4): does adding generated tiles,
labelled by the simulator, to a hundred authentic ones improve a structure-property CNN?

Authentic data: three tile stores of the ``synthetic`` dataset with ``property = "simulated"``
(each tile labelled by the pore-diffusivity solver), built with different seeds: ``n_train``
tiles to train on, ``n_val`` for early stopping, ``n_test`` for the test R^2. Two generators make
``max(sizes)`` tiles each, labelled by the dataset's simulator
(:mod:`mxplain.studies.generators`): the TextureVAE (trained here on the ``n_train`` tiles: the
small-data setting), sampled around and between the training tiles' encodings, and a thresholded
Gaussian random field at a fixed pore fraction (the baseline of too little variance). For every
size M and each of ``draws`` random draws, M generated tiles join the training tiles and the CNN
(:mod:`mxplain.studies.cnn`) is trained; M = ``max(sizes)`` uses the whole pool in every draw (as
in the seed), draws then differ by the CNN's seed only. Draw ``d`` uses the same CNN seed at every
size and for both generators, and M = 0 is one training per draw shared by both.

Run it::

    python -m mxplain.studies.augmentation --out runs/augment            # the full study
    python -m mxplain.studies.augmentation --out /tmp/augment-quick --quick

The dataset, editor and simulator come through the plugin registry (:mod:`mxplain.plugins`) and
the :class:`~mxplain.interfaces.Dataset` / :class:`~mxplain.interfaces.Editor` interfaces.
Outputs: :mod:`mxplain.studies.augmentation_report`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mxplain.errors import UserError
from mxplain.studies.generators import GENERATORS

MARKER = "mxplain_study"
STUDY = "augmentation"


def _editor_defaults() -> dict:
    return {"latent_dim": 32, "dec_dim": 16, "epochs": 60, "batch_size": 16, "lr": 1e-3,
            "figures": False}


def _cnn_defaults() -> dict:
    return {"width": 8, "epochs": 40, "patience": 6, "min_epochs": 15, "batch_size": 32,
            "lr": 2e-3}


@dataclass
class StudyConfig:
    tile_size: int = 32
    n_train: int = 100
    n_val: int = 100
    n_test: int = 100
    tiles_per_lot: int = 5
    sizes: tuple[int, ...] = (0, 50, 100, 200, 500, 1000)
    draws: int = 10
    seed: int = 0
    dataset: str = "synthetic"
    editor: str = "texturevae"
    editor_params: dict = field(default_factory=_editor_defaults)
    latent_noise: float = 0.25
    cnn: dict = field(default_factory=_cnn_defaults)

    @property
    def pool(self) -> int:
        return max(self.sizes)

    def validate(self) -> None:
        def bad(key, why):
            raise UserError(f"augmentation study: {key} = {getattr(self, key)!r}: {why}")

        def pos_int(v, low=1):
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        if not pos_int(self.tile_size, 32) or self.tile_size % 32:
            bad("tile_size", "must be a multiple of 32 (>= 32), as the TextureVAE needs")
        for key in ("n_train", "n_val", "n_test"):
            if not pos_int(getattr(self, key), 4):
                bad(key, "must be an integer >= 4")
        if not pos_int(self.tiles_per_lot):
            bad("tiles_per_lot", "must be a positive integer")
        for key in ("n_train", "n_val", "n_test"):
            v = getattr(self, key)
            if v % self.tiles_per_lot or v // self.tiles_per_lot < 2:
                bad(key, f"must be a multiple of tiles_per_lot ({self.tiles_per_lot}), at least "
                         f"two lots")
        if not self.sizes or not all(pos_int(m, 0) for m in self.sizes) \
                or len(set(self.sizes)) != len(self.sizes) or 0 not in self.sizes:
            bad("sizes", "must be distinct integers >= 0, including 0 (no generated tiles)")
        if self.pool < 1:
            bad("sizes", "must include a size >= 1")
        if not pos_int(self.draws):
            bad("draws", "must be a positive integer")
        if not pos_int(self.seed, 0):
            bad("seed", "must be an integer >= 0")
        if not isinstance(self.latent_noise, (int, float)) or not 0 <= self.latent_noise <= 10:
            bad("latent_noise", "must be a number in [0, 10]")
        from mxplain import plugins
        from mxplain.studies.cnn import CNNRegressor

        try:
            CNNRegressor(**self.cnn)
        except TypeError as exc:
            raise UserError(f"augmentation study: cnn: {exc}") from None
        cls = plugins.get("editor", self.editor)
        params = {"seed": self.seed, **self.editor_params}
        plugins.check_params(cls, params, f"augmentation study editor {self.editor!r}")
        cls.check_params(params)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sizes"] = list(self.sizes)
        d["pool"] = self.pool
        return d


def quick_config(seed: int = 0) -> StudyConfig:
    """The CPU test size: 32 px, 16 tiles a set, sizes 0 and 8, two draws, tiny models."""
    return StudyConfig(tile_size=32, n_train=16, n_val=16, n_test=16, tiles_per_lot=4,
                       sizes=(0, 8), draws=2, seed=seed,
                       editor_params={"latent_dim": 8, "dec_dim": 4, "epochs": 2, "batch_size": 8,
                                      "figures": False},
                       cnn={"width": 4, "epochs": 3, "patience": 2, "min_epochs": 1, "batch_size": 8,
                            "lr": 2e-3})


# ---- the output folder ----------------------------------------------------------------------------
def prepare_out(out: Path) -> bool:
    """A new or empty folder, or one this study wrote before (its ``study.json``): True when it
    is the latter (its stores are resumed, its files rewritten); anything else is refused."""
    from mxplain.outputs import check_path_text

    out = check_path_text(out, "study folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"{str(out)!r} exists and is not a folder; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return False
    marker = out / "study.json"
    try:
        ours = json.loads(marker.read_text(encoding="utf-8")).get(MARKER) == STUDY
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UserError(f"{str(out)!r} is not empty and holds no augmentation study (no "
                        f"study.json of this study); choose a new or empty --out")
    return True


def _write_marker(out: Path, cfg: StudyConfig, status: str) -> None:
    from mxplain.runfolder import write_atomic

    write_atomic(out / "study.json", json.dumps({MARKER: STUDY, "status": status,
                                                 "config": cfg.to_dict()}, indent=1))


# ---- data -----------------------------------------------------------------------------------------
def _store_tiles(store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiles, per-tile property and per-tile attribute labels of a store."""
    if store.tile_properties is None:
        raise UserError(f"tile store {str(store.path)!r} has no per-tile property (the study needs "
                        f"a dataset with property = 'simulated')")
    x, lots = store.all_tiles()
    y = np.concatenate([store.tile_properties[i, :c] for i, c in enumerate(store.counts)])
    return x, y, store.lot_attributes[lots].astype(np.float64)


def build_sets(cfg: StudyConfig, out: Path, resume: bool, progress: bool):
    """The dataset (from the registry) and its train / val / test stores under ``out/stores``."""
    from mxplain import plugins
    from mxplain.interfaces import RunContext

    sets, dataset = {}, None
    for k, (name, n) in enumerate((("train", cfg.n_train), ("val", cfg.n_val),
                                   ("test", cfg.n_test))):
        dataset = plugins.create("dataset", cfg.dataset, n_lots=n // cfg.tiles_per_lot,
                                 tiles_per_lot=cfg.tiles_per_lot, tile_size=cfg.tile_size,
                                 seed=1000 * cfg.seed + k + 1, property="simulated")
        store = dataset.build(out / "stores" / f"{name}.zarr", RunContext(progress=progress),
                              resume=resume)
        sets[name] = _store_tiles(store) + (store,)
    if dataset.simulator() is None:
        raise UserError(f"dataset {cfg.dataset!r} has no simulator to label generated tiles")
    return dataset, sets


def train_editor(cfg: StudyConfig, store, out: Path, progress: bool):
    """The editor trained on the training store, or, in a folder of this study whose
    ``models/{editor}.json`` records the same editor, parameters and training store, loaded from
    its checkpoint (with the recorded training time)."""
    from mxplain import plugins
    from mxplain.interfaces import RunContext
    from mxplain.runfolder import write_atomic

    params = {"seed": cfg.seed, **cfg.editor_params}
    record = {"editor": cfg.editor, "params": params, "train_store": store.content_hash()}
    ckpt, meta = out / "models" / f"{cfg.editor}.pt", out / "models" / f"{cfg.editor}.json"
    if ckpt.is_file() and meta.is_file():
        try:
            saved = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if {k: saved.get(k) for k in record} == json.loads(json.dumps(record)):
            editor = plugins.get("editor", cfg.editor).load(ckpt)
            return editor, {**saved["info"], "loaded_from": str(ckpt)}
    editor = plugins.create("editor", cfg.editor, **params)
    t0 = time.perf_counter()
    metrics = editor.fit(store, RunContext(progress=progress, seed=cfg.seed))
    seconds = time.perf_counter() - t0
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    editor.save(ckpt)
    keep = {k: metrics[k] for k in ("final", "texture", "probe", "patches", "vgg") if k in metrics}
    info = json.loads(json.dumps({"train_seconds": seconds, **keep}))
    write_atomic(meta, json.dumps({**record, "info": info}, indent=1))
    return editor, info


def generate_pools(cfg: StudyConfig, editor, simulator, train) -> dict:
    """``{generator: (tiles, labels, description)}``, ``cfg.pool`` tiles each."""
    from mxplain.studies.generators import ThresholdedGRF, latent_samples

    x, _y, attrs = train[:3]
    pools = {}
    t0 = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1,)))
    tiles, draw = latent_samples(editor, x, attrs, cfg.pool, rng, noise=cfg.latent_noise)
    pools["texturevae"] = (tiles, simulator.simulate(tiles),
                           {"generator": f"{cfg.editor}: latents between two training tiles' "
                                         f"encodings + noise", "noise": draw["noise"],
                            "latent_spread_mean": draw["latent_spread_mean"],
                            "seconds": time.perf_counter() - t0})
    t0 = time.perf_counter()
    grf = ThresholdedGRF(seed=cfg.seed).fit(x, simulator)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(2,)))
    tiles = grf.sample(cfg.pool, rng)
    pools["grf"] = (tiles, simulator.simulate(tiles),
                    {**grf.describe(), "seconds": time.perf_counter() - t0})
    return pools


# ---- the draws ------------------------------------------------------------------------------------
def draw_indices(cfg: StudyConfig, generator: str, m: int, draw: int) -> np.ndarray:
    """Which pool tiles draw ``draw`` of size ``m`` adds (the whole pool at ``m = pool``)."""
    if m >= cfg.pool:
        return np.arange(cfg.pool)
    g = GENERATORS.index(generator)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(3, g, m, draw)))
    return np.sort(rng.choice(cfg.pool, m, replace=False))


def train_once(cfg: StudyConfig, x, y, val, test, draw: int) -> dict:
    from sklearn.metrics import r2_score

    from mxplain.studies.cnn import CNNRegressor

    t0 = time.perf_counter()
    model = CNNRegressor(seed=1000 * cfg.seed + draw, **cfg.cnn).fit(x, y, val[0], val[1])
    pred = model.predict(test[0])
    return {"test_r2": float(r2_score(test[1], pred)),
            "val_r2": float(r2_score(val[1], model.predict(val[0]))),
            "epochs_run": int(model.epochs_run_), "best_epoch": int(model.best_epoch_),
            "seconds": time.perf_counter() - t0}


def run_draws(cfg: StudyConfig, sets: dict, pools: dict, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    xt, yt = sets["train"][:2]
    val, test = sets["val"][:2], sets["test"][:2]
    plus = [m for m in cfg.sizes if m > 0]
    rows = []
    with tqdm(total=cfg.draws * (1 + len(GENERATORS) * len(plus)), desc="augmentation study",
              unit="model", disable=not progress) as bar:
        for d in range(cfg.draws):
            base = train_once(cfg, xt, yt, val, test, d)
            bar.update(1)
            for gen in GENERATORS:
                rows.append({"generator": gen, "m": 0, "draw": d, **base})
            for gen in GENERATORS:
                gx, gy = pools[gen][:2]
                for m in plus:
                    idx = draw_indices(cfg, gen, m, d)
                    res = train_once(cfg, np.concatenate([xt, gx[idx]]),
                                     np.concatenate([yt, gy[idx]]), val, test, d)
                    rows.append({"generator": gen, "m": m, "draw": d, **res})
                    bar.set_postfix(gen=gen, m=m, r2=f"{res['test_r2']:.3f}")
                    bar.update(1)
    return rows


def run_study(cfg: StudyConfig, out: Path, progress: bool = True) -> dict:
    """Run the whole study into ``out``; returns the results written to ``results.json``."""
    from mxplain.studies import augmentation_report as report

    cfg.validate()
    out = Path(out)
    resume = prepare_out(out)
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, cfg, "running")
    dataset, sets = build_sets(cfg, out, resume, progress)
    simulator = dataset.simulator()
    editor, editor_info = train_editor(cfg, sets["train"][3], out, progress)
    pools = generate_pools(cfg, editor, simulator, sets["train"])
    report.write_pools(out, sets, pools)
    rows = run_draws(cfg, sets, pools, progress)
    results = report.assemble(cfg, sets, pools, rows, editor_info, simulator,
                              wall_seconds=time.perf_counter() - t_start)
    report.write_outputs(out, results)
    _write_marker(out, cfg, "done")
    return results


# ---- command line ---------------------------------------------------------------------------------
def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UserError(f"--sizes {text!r}: give comma-separated integers, e.g. 0,50,100") from None


def parse_args(argv) -> tuple[StudyConfig, Path, bool]:
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--out", required=True, type=click.Path(),
                  help="A new or empty folder, or this study's own.")
    @click.option("--quick", is_flag=True, help="CPU test size (seconds, not a result).")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--draws", type=int, default=None, help="Random draws per size.")
    @click.option("--sizes", default=None, help="Generated tiles added, e.g. 0,50,100,200.")
    @click.option("--vae-epochs", type=int, default=None, help="TextureVAE training epochs.")
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    def command(out, quick, seed, draws, sizes, vae_epochs, quiet):
        cfg = quick_config(seed) if quick else StudyConfig(seed=seed)
        if draws is not None:
            cfg.draws = draws
        if sizes is not None:
            cfg.sizes = _sizes(sizes)
        if vae_epochs is not None:
            cfg.editor_params = {**cfg.editor_params, "epochs": vae_epochs}
        return cfg, Path(out), not quiet

    return command.main(args=list(argv), prog_name="python -m mxplain.studies.augmentation",
                        standalone_mode=False)


def main(argv=None) -> int:
    import click

    from mxplain.cli import echo

    try:
        parsed = parse_args(sys.argv[1:] if argv is None else argv)
        if isinstance(parsed, int):  # --help
            return parsed
        cfg, out, progress = parsed
        cfg.validate()
        prepare_out(out)
        results = run_study(cfg, out, progress)
    except UserError as exc:
        echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        echo(f"error: {exc.format_message()}", err=True)
        return 2
    echo(f"augmentation study written to {str(out)!r} ({results['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

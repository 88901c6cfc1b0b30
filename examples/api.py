"""The Python API: the same pipeline as `mxplain run`, components by name, the results cube.

    .venv/bin/python examples/api.py
"""

import mxplain

# 1. Components by name, configured like a [predictor] / [data] table.
data = mxplain.create_dataset("synthetic", n_lots=6, tiles_per_lot=16, tile_size=32, seed=0)
predictor = mxplain.create_predictor("wideresnet", depth=10, widen=1, epochs=2)
print(data, predictor, sep="\n")

# 2. The whole pipeline from a dict shaped like the TOML config.
config = {
    "data": {"name": "synthetic", "n_lots": 6, "tiles_per_lot": 16, "tile_size": 32,
             "law": {"size": -2.0, "porosity": 0.5, "polydispersity": 1.0, "facetness": 1.5}},
    "predictor": {"name": "wideresnet", "depth": 10, "widen": 1, "epochs": 2},
    "explain": {"gradcam": {}},
    "run": {"explain_tiles": 4},
}
run_dir = mxplain.run(config, out="runs/api-example", overwrite=True, progress=False)

# 3. The results cube: an xarray Dataset.
cube = mxplain.open_results(run_dir)
print(cube.prediction.where(cube.tile_mask).mean("tile").to_pandas())
print("gradcam maps:", dict(cube.gradcam.sizes))

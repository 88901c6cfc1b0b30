"""Hand-made run folders for the report tests: figures with a hostile title, a metrics file, and
a results cube of given forward sensitivities."""

import json

import numpy as np

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


def sensitivity_cube(run, sens, truth, lots=("L0", "L1", "L2", "L3")):
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

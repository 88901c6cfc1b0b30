"""Plugin discovery: entry points, third-party packages, broken plugins, duplicates, lookup."""

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from mxplain import hookimpl, plugins
from mxplain.errors import PluginError
from mxplain.interfaces import Dataset

BUILTINS = {("synthetic", "dataset"), ("store", "dataset"), ("wideresnet", "predictor"),
            ("attgan", "editor"), ("forward", "explainer"), ("backward", "explainer"),
            ("gradcam", "explainer"), ("compare", "explainer")}


@pytest.fixture
def fresh_registry():
    plugins.reset()
    yield
    plugins.reset()


def test_builtins_listed_with_distribution_and_version():
    rows = plugins.list_components()
    found = {(r["name"], r["kind"]) for r in rows}
    assert BUILTINS <= found
    for r in rows:
        assert set(r) == {"name", "kind", "distribution", "version"}
        if (r["name"], r["kind"]) in BUILTINS:
            assert r["distribution"] == "mxplain" and r["version"]


def test_unknown_name_lists_available():
    with pytest.raises(PluginError) as err:
        plugins.get("predictor", "widersnet")
    msg = str(err.value)
    assert "unknown predictor 'widersnet'" in msg and "did you mean 'wideresnet'" in msg
    assert "available predictors:" in msg


def _dataset_class(name):
    class D(Dataset):
        def build(self, path, ctx, resume=False):
            raise NotImplementedError

    D.name = name
    return D


def test_duplicate_names_name_both_plugins(fresh_registry):
    mod = types.SimpleNamespace()
    mod.mxplain_datasets = hookimpl(lambda: [_dataset_class("synthetic")])
    plugins.register(mod, name="copycat")
    with pytest.raises(PluginError, match="duplicate dataset name 'synthetic'.*copycat"):
        plugins.registry()


def test_non_lowercase_name_refused(fresh_registry):
    mod = types.SimpleNamespace()
    mod.mxplain_datasets = hookimpl(lambda: [_dataset_class("Shouty")])
    plugins.register(mod, name="shouty")
    with pytest.raises(PluginError, match="lowercase"):
        plugins.registry()


def _install(tmp_path, pkg: str, body: str) -> str:
    """Build and install a throw-away plugin distribution into tmp_path/site with pip."""
    src = tmp_path / f"src_{pkg}"
    (src / pkg).mkdir(parents=True)
    (src / pkg / "__init__.py").write_text(textwrap.dedent(body))
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{pkg.replace('_', '-')}"
        version = "0.3.1"
        [project.entry-points.mxplain]
        {pkg} = "{pkg}"
        [tool.setuptools]
        packages = ["{pkg}"]
        """))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(site), str(src)],
                   check=True, capture_output=True)
    return str(site)


GOOD = """
    from pathlib import Path
    import numpy as np
    from mxplain import hookimpl
    from mxplain.interfaces import Dataset
    from mxplain.store import LotTable, TileStore

    class TwoLots(Dataset):
        name = "twolots"
        def __init__(self, value: int = 7):
            self.value = value
        def build(self, path, ctx, resume=False):
            t = LotTable(["x", "y"], ("size",), np.array([[0.2], [0.8]]), np.array([1.0, 2.0]))
            TileStore.create(path, t, [2, 2], 32)
            for i in range(2):
                TileStore.write_lot(path, i, np.full((2, 32, 32), self.value, np.uint8), 2)
            TileStore.mark_complete(path)
            return TileStore.open(path)

    @hookimpl
    def mxplain_datasets():
        return [TwoLots]
"""
BROKEN = """
    raise ImportError("this plugin is broken on purpose")
"""


def test_third_party_package_and_broken_plugin(tmp_path):
    site = _install(tmp_path, "mxp_thirdparty", GOOD)
    site2 = _install(tmp_path, "mxp_broken", BROKEN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([site, site2])}
    cli = [sys.executable, "-m", "mxplain"]
    res = subprocess.run(cli + ["plugins", "--json"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    mine = [r for r in rows if r["name"] == "twolots"]
    assert mine == [{"name": "twolots", "kind": "dataset", "distribution": "mxp-thirdparty",
                     "version": "0.3.1"}]
    assert BUILTINS <= {(r["name"], r["kind"]) for r in rows}  # everything else still works
    assert "mxp_broken" in res.stderr and "mxp-broken" in res.stderr and "failed to load" in \
        res.stderr
    # usable by name in a config
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "twolots"\nvalue = 9\n')
    res = subprocess.run(cli + ["data", "synth", str(cfg), "--out", str(tmp_path / "s.zarr"),
                                "--quiet"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    from mxplain.store import TileStore

    assert TileStore.open(tmp_path / "s.zarr").tiles("y").max() == 9


def test_every_hook_is_documented():
    """Every hookspec has a one-line docstring, a page docs/hooks/<hook>.md with its exact
    signature, and a section in docs/hooks.md."""
    import inspect
    from pathlib import Path

    from mxplain import hookspecs

    docs = Path(__file__).parents[2] / "docs"
    overview = (docs / "hooks.md").read_text()
    hooks = [n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("mxplain_")]
    assert set(hooks) == set(plugins.HOOKS.values())
    for name in hooks:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and len(fn.__doc__.strip().splitlines()) == 1, name
        page = (docs / "hooks" / f"{name}.md").read_text()
        assert f"def {name}{inspect.signature(fn)}" in page, name
        assert fn.__doc__.strip() in page, name
        assert f"def {name}{inspect.signature(fn)}" in overview, name

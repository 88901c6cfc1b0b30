"""The wheel holds every package of the source tree (core and plugins) and the packaged data."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_packages():
    pkgs = set()
    for base, prefix in ((ROOT / "core", ""), (ROOT / "plugins", "")):
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            pkgs.add(prefix + ".".join(rel.parts))
    return pkgs


def test_wheel_contains_every_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(ROOT)], check=True,
                   capture_output=True)
    wheel = next(tmp_path.glob("mxplain-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("__init__.py")}
    missing = source_packages() - in_wheel
    assert not missing, f"packages missing from the wheel: {sorted(missing)}"
    assert "mxplain/data/quickstart.toml" in names
    assert "mxplain_attgan/data/quickstart_attgan.pt" in names  # the quickstart's trained editor
    eps = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(eps).decode()
    for pkg in source_packages():
        if pkg.startswith("mxplain_") and "." not in pkg:
            assert f"= {pkg}" in text, f"{pkg} has no entry point in group mxplain"

"""mxplain.failpoints: ``MXPLAIN_KILL_AT=NAME[@N]`` SIGKILLs the process the N-th time it passes the
point ``NAME``; without the variable, or at another point, nothing happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mxplain import failpoints

# the module is loaded from its file alone, so each process starts without importing torch
SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("failpoints", sys.argv[1])
failpoints = importlib.util.module_from_spec(spec)
spec.loader.exec_module(failpoints)
for i in range(5):
    failpoints.hit("write:results.zarr")
    failpoints.hit("explain:lot")
    print(i, flush=True)
"""


def passes(spec: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV}
    if spec is not None:
        env[failpoints.ENV] = spec
    return subprocess.run([sys.executable, "-c", SCRIPT, failpoints.__file__], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
@pytest.mark.parametrize("spec,printed,code", [
    (None, 5, 0),
    ("epoch:predictor.training.pt", 5, 0),
    ("explain:lot", 0, -signal.SIGKILL),
    ("explain:lot@3", 2, -signal.SIGKILL),
    ("write:results.zarr@5", 4, -signal.SIGKILL),
    ("explain:lot@9", 5, 0),
])
def test_the_process_dies_at_the_nth_pass_of_its_point(spec, printed, code):
    proc = passes(spec)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.split() == [str(i) for i in range(printed)]


def test_without_the_variable_a_point_counts_nothing(monkeypatch):
    monkeypatch.delenv(failpoints.ENV, raising=False)
    failpoints.hit("explain:lot")
    monkeypatch.setenv(failpoints.ENV, "write:tiles.zarr@2")
    failpoints.hit("explain:lot")
    assert "explain:lot" not in failpoints._hits

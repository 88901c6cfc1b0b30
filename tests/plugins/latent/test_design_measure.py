"""latent_design's background measurement of the step images (mxplain_latent.design_measure)."""

import threading

import numpy as np
import pytest
import torch

from mxplain_latent.design_measure import StepMeasurer, step_values, u8


def _imgs(seed, n=3):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_measured_in_order_in_another_thread_as_one_call_would():
    threads = []

    def measure(tiles):  # per tile: its mean, its first pixel, the measuring thread's id
        threads.append(threading.get_ident())
        flat = tiles.reshape(len(tiles), -1).astype(np.float64)
        return np.stack([flat.mean(1), flat[:, 0]], 1)

    parts = [_imgs(s) for s in range(7)]
    with StepMeasurer(measure) as meter:
        for p in parts:
            meter.add(p)
        got = meter.result()
    whole = measure(u8(torch.cat(parts)))
    np.testing.assert_array_equal(got, whole)
    assert threading.get_ident() not in threads[:-1]  # all but the reference call: the thread


def test_an_error_of_the_measure_is_raised_by_result_and_no_measure_gives_none():
    def broken(tiles):
        raise RuntimeError("no crystals")

    with StepMeasurer(broken) as meter:
        meter.add(_imgs(0))
        with pytest.raises(RuntimeError, match="no crystals"):
            meter.result()
    with StepMeasurer(lambda t: np.zeros(3)) as meter:  # not (N, M)
        meter.add(_imgs(0))
        with pytest.raises(ValueError, match="expected \\(N, M\\)"):
            meter.result()
    with StepMeasurer(None) as meter:
        meter.add(_imgs(0))
        assert meter.result() is None


def test_step_values_layout_and_filling():
    n, steps, k = 2, 3, 2
    # rows: latent steps 0..2 then pixel steps 0..2, n tiles each; value = 100 path + 10 step + tile
    rows = [[100 * p + 10 * s + t, -(100 * p + 10 * s + t)] for p in range(2) for s in range(steps)
            for t in range(n)]
    m = np.array(rows, np.float64)
    m[7, 0] = np.nan  # pixel path, step 0, tile 1: not measurable
    vals, ok = step_values(m, n, steps, k)
    assert vals.shape == ok.shape == (n, 2, steps, k)
    assert vals[1, 0, 2, 0] == 21 and vals[0, 1, 1, 1] == -110
    assert not ok[1, 1, 0, 0] and ok[1, 1, 0, 1]
    assert vals[1, 1, 0, 0] == 111  # filled from the nearest valid step (step 1)

"""mxplain.device: the ``--device`` spec (``auto`` takes the GPU when there is one) and the batch
size search shared by the pipeline's ``batch_size = "auto"`` and the benchmarks."""

from __future__ import annotations

import pytest
import torch

from mxplain import device as dev
from mxplain.device import auto_batch_size, best_batch, candidate_batches, resolve_device, timed
from mxplain.errors import UserError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize("spec", [None, "auto", " AUTO ", "cpu", "CPU"])
def test_without_a_gpu_every_spec_but_cuda_is_the_cpu(no_gpu, spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec,expected", [("auto", "cuda"), ("cuda", "cuda:0"),
                                           ("cuda:0", "cuda:0"), ("cpu", "cpu")])
def test_with_a_gpu(one_gpu, spec, expected):
    assert resolve_device(spec) == torch.device(expected)


@pytest.mark.parametrize("fixture,spec,needle", [
    ("no_gpu", "gpu", "unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
    ("no_gpu", "cuda:x", "unknown device 'cuda:x'"),
    ("no_gpu", "cuda", "device 'cuda' asked for, but no CUDA GPU is available here"),
    ("one_gpu", "cuda:1", "device 'cuda:1' asked for, but only 1 GPU(s)"),
])
def test_a_device_that_cannot_be_had_is_a_user_error(request, fixture, spec, needle):
    request.getfixturevalue(fixture)
    with pytest.raises(UserError) as info:
        resolve_device(spec)
    assert str(info.value) == needle or str(info.value).startswith(needle)


def test_timed_warms_up_once_then_repeats():
    calls = []
    seconds = timed(lambda: calls.append(1), torch.device("cpu"), repeat=4)
    assert len(calls) == 5 and seconds >= 0


def test_candidate_batches_on_the_cpu_are_powers_of_two_up_to_its_cap():
    cpu = torch.device("cpu")
    assert candidate_batches(cpu, 10**9) == [16, 32, 64, 128]
    assert candidate_batches(cpu, 1, lo=8, cpu_max=40) == [8, 16, 32]
    assert candidate_batches(cpu, 1, lo=200) == [200]


def test_best_batch_stops_past_the_best_and_at_out_of_memory(monkeypatch):
    seconds = {16: 1.0, 32: 1.0, 64: 1.0, 128: 4.0, 256: 0.1}
    monkeypatch.setattr(dev, "timed", lambda fn, device, repeat: seconds[fn()])
    best, rate, rates = best_batch(lambda bs: lambda: bs, list(seconds), "cpu")
    assert (best, rate) == (64, 64.0) and rates == {16: 16.0, 32: 32.0, 64: 64.0, 128: 32.0}
    best, _, rates = best_batch(lambda bs: lambda: bs, [16, 32], "cpu",
                                items_per_call=lambda bs: 3 * bs)
    assert best == 32 and rates == {16: 48.0, 32: 96.0}

    def make(bs):
        if bs >= 64:
            raise torch.cuda.OutOfMemoryError("out of memory")
        return lambda: bs

    assert best_batch(make, [16, 32, 64, 128], "cpu")[2] == {16: 16.0, 32: 32.0}
    with pytest.raises(RuntimeError, match="even a batch of 64 runs out of memory"):
        best_batch(make, [64, 128], "cpu")


def test_auto_batch_size_on_the_cpu_is_the_fixed_value():
    assert auto_batch_size(None, None, 32, 2, torch.device("cpu"), cpu_value=48) == \
        (48, {"method": "cpu fixed value"})

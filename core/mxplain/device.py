"""Device selection: ``auto`` takes the GPU when there is one."""

from __future__ import annotations

import re

import torch

from mxplain.errors import UserError


def resolve_device(spec: str | None) -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not m:
        raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"device {spec!r} asked for, but no CUDA GPU is available here")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{index}")


# ---- batch size from free GPU memory -----------------------------------------------------------
# One implementation for the pipeline ([run] batch_size = "auto") and the benchmarks (benchmarks/_bench.py).


def sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    """Seconds per call of ``fn`` (after one warm-up call), synchronised on CUDA."""
    import time

    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeat


def candidate_batches(device: torch.device, per_item_bytes: int, lo: int = 16,
                      cpu_max: int = 128, gpu_max: int = 16384, fraction: float = 0.6) -> list[int]:
    """Powers of two from ``lo``; on CUDA up to what ``fraction`` of the free memory holds at
    ``per_item_bytes`` per item (an estimate; OOM is caught by :func:`best_batch`)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        top = max(lo, min(gpu_max, int(fraction * free / max(per_item_bytes, 1))))
    else:
        top = cpu_max
    out, b = [], lo
    while b <= top:
        out.append(b)
        b *= 2
    return out or [lo]


def best_batch(make_fn, batches: list[int], device: torch.device, items_per_call=None,
               repeat: int = 2) -> tuple[int, float, dict]:
    """Try ``make_fn(bs)`` (a callable doing one batch) for each batch size; returns the best
    batch size, its items/s and every measured rate. A CUDA out-of-memory ends the search."""
    rates = {}
    for bs in batches:
        try:
            fn = make_fn(bs)
            sec = timed(fn, device, repeat)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        rates[bs] = (items_per_call(bs) if items_per_call else bs) / sec
        if len(rates) >= 3 and rates[bs] < 0.97 * max(rates.values()):
            break  # past the best
    if not rates:
        raise RuntimeError(f"batch size probe: even a batch of {batches[0]} runs out of memory")
    best = max(rates, key=rates.get)
    return best, rates[best], rates


def auto_batch_size(predictor, editor, tile_size: int, n_attributes: int, device: torch.device,
                    cpu_value: int = 64, lo: int = 16, gpu_max: int = 16384,
                    fraction: float = 0.6) -> tuple[int, dict]:
    """The inference batch size for ``device``: on a CPU ``cpu_value``; on CUDA the fastest power of
    two of editor decode + predictor forward (predictor alone without an editor) on random tiles,
    under bf16 autocast, among those whose memory fits ``fraction`` of the free GPU memory. The
    per-tile memory is measured at batch ``lo`` (peak allocated above the baseline) and scaled
    linearly; a CUDA out-of-memory ends the search. Returns the batch size and what was measured."""
    device = torch.device(device)
    if device.type != "cuda":
        return int(cpu_value), {"method": "cpu fixed value"}
    gen = torch.Generator(device=device).manual_seed(0)

    def make(bs):
        x = torch.rand(bs, 1, tile_size, tile_size, device=device, generator=gen)
        a = torch.rand(bs, n_attributes, device=device, generator=gen)
        latent = None
        if editor is not None:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                latent = editor.encode(x)

        def step():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                imgs = editor.decode(latent, a) if editor is not None else x
                return predictor.forward(imgs)
        return step

    sync(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    make(lo)()
    sync(device)
    per_item = max(1, (torch.cuda.max_memory_allocated(device) - base) // lo)
    free, total = torch.cuda.mem_get_info(device)
    batches = candidate_batches(device, per_item, lo=lo, gpu_max=gpu_max, fraction=fraction)
    best, rate, rates = best_batch(make, batches, device, repeat=2)
    torch.cuda.empty_cache()
    return best, {"method": "cuda probe: editor decode + predictor, bf16",
                  "free_bytes": int(free), "total_bytes": int(total),
                  "bytes_per_tile": int(per_item),
                  "tiles_per_s": {str(b): round(r, 1) for b, r in rates.items()}}

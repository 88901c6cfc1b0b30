"""Training and inference throughput (images/s) of the WideResNet regressor.

    python benchmarks/wideresnet_throughput.py [--device cpu|cuda|cuda:N] [--depth 28] [--widen 1]
        [--tile-size 64] [--batch-size 64] [--steps 20] [--warmup 3] [--threads N]

Training steps are the predictor's own: per-tile standardization, hflip augmentation, Adam, MSE
on the tanh-scaled target; on CUDA with channels_last and bf16 autocast as in
:class:`mxplain_wideresnet.predictor.WideResNetPredictor`. Inference runs through
``WideResNetPredictor.forward`` without gradients.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn import functional as F

from mxplain_wideresnet.model import WideResNet
from mxplain_wideresnet.predictor import WideResNetPredictor, augment_batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: str = "cpu", depth: int = 28, widen: int = 1, tile_size: int = 64,
            batch_size: int = 64, steps: int = 20, warmup: int = 3,
            infer_batch_size: int = 256) -> dict:
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    module = WideResNet(depth, widen).to(dev)
    module.set_target_range(2150.0, 300.0)
    if cuda:
        module = module.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    x_u8 = torch.randint(0, 256, (batch_size, tile_size, tile_size), dtype=torch.uint8)
    z = torch.rand(batch_size) * 1.2 - 0.6

    def train_step():
        xb = augment_batch(x_u8.float().div_(255.0).unsqueeze(1), "hflip", g)
        xb = WideResNetPredictor._to_device(xb, dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            s = module.scaled(xb)
        loss = F.mse_loss(s.float(), z.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    module.train()
    for _ in range(warmup):
        train_step()
    _sync(dev)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step()
    _sync(dev)
    train_ips = steps * batch_size / (time.perf_counter() - t0)
    train_cpu = steps * batch_size / (time.process_time() - c0)

    pred = WideResNetPredictor(depth=depth, widen=widen)
    pred._module = module.eval()
    pred.to(dev)
    xi = torch.rand(infer_batch_size, 1, tile_size, tile_size)
    with torch.no_grad():
        for _ in range(warmup):
            pred.forward(xi)
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            pred.forward(xi)
        _sync(dev)
    infer_ips = steps * infer_batch_size / (time.perf_counter() - t0)
    infer_cpu = steps * infer_batch_size / (time.process_time() - c0)
    return {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if cuda else None,
            "threads": torch.get_num_threads(), "depth": depth, "widen": widen,
            "tile_size": tile_size, "batch_size": batch_size,
            "params": sum(p.numel() for p in module.parameters()),
            "train_images_per_s": round(train_ips, 1),
            "inference_images_per_s": round(infer_ips, 1),
            # per CPU-second of this process: on a shared CPU, the rate a dedicated core set gives
            "train_images_per_cpu_s": round(train_cpu, 1),
            "inference_images_per_cpu_s": round(infer_cpu, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--depth", type=int, default=28)
    ap.add_argument("--widen", type=int, default=1)
    ap.add_argument("--tile-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--infer-batch-size", type=int, default=256,
                    help="batch given to forward (chunked to 64 on a CPU)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    r = measure(a.device, a.depth, a.widen, a.tile_size, a.batch_size, a.steps, a.warmup,
                a.infer_batch_size)
    if a.json:
        print(json.dumps(r))
        return
    print(f"WideResNet-{r['depth']}-{r['widen']} ({r['params']:,} parameters), "
          f"{r['tile_size']} px tiles, batch {r['batch_size']}, {r['device']}"
          f"{' ' + r['gpu'] if r['gpu'] else ''}, {r['threads']} threads")
    print(f"  training : {r['train_images_per_s']:10.1f} images/s "
          f"({r['train_images_per_cpu_s']:.1f} per CPU-second)")
    print(f"  inference: {r['inference_images_per_s']:10.1f} images/s "
          f"({r['inference_images_per_cpu_s']:.1f} per CPU-second)")


if __name__ == "__main__":
    main()

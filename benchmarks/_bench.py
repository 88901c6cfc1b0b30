"""Shared pieces of the benchmarks: models of a given size, GPU settings, batch size choice, timing.

The models are the registered AttGAN editor and WideResNet predictor with untrained weights (timing
only). On CUDA the explainers already run under bf16 autocast; ``prepare`` adds channels-last
weights and, with ``compile``, ``torch.compile`` of the decoder and the predictor's forward.
"""

from __future__ import annotations

import torch

# one implementation of the batch size search, shared with the pipeline ([run] batch_size = "auto")
from mxplain.device import best_batch, candidate_batches, sync, timed  # noqa: F401 (re-exported)

ATTRS = ("size", "porosity", "polydispersity", "facetness")


def add_model_args(ap, tile_size: int = 64) -> None:
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--tile-size", type=int, default=tile_size)
    ap.add_argument("--layers", type=int, default=4, help="AttGAN encoder/decoder layers")
    ap.add_argument("--dim", type=int, default=32, help="AttGAN base width (enc_dim = dec_dim)")
    ap.add_argument("--depth", type=int, default=10, help="WideResNet depth (6n + 4)")
    ap.add_argument("--channels-last", action="store_true",
                    help="channels-last weights (default on CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile decoder and predictor")


def components(tile: int, device: torch.device, layers: int = 4, dim: int = 32, depth: int = 10):
    """An untrained AttGAN (``dim``, ``layers``) and WideResNet-``depth``-1 on ``device``."""
    from mxplain import plugins
    from mxplain_wideresnet.model import WideResNet

    editor = plugins.create("editor", "attgan", enc_dim=dim, dec_dim=dim, dis_dim=16,
                            dis_fc_dim=64, n_layers=layers)
    editor.attributes = ATTRS
    editor._build(len(ATTRS), tile)  # untrained weights are enough for timing
    predictor = plugins.create("predictor", "wideresnet", depth=depth, widen=1)
    module = WideResNet(depth, 1, 0.0)
    predictor.load_state_dict({"model": module.state_dict(), "center": 1000.0,
                               "half_range": 200.0, "depth": depth, "widen": 1, "tile_size": tile})
    return editor.to(device), predictor.to(device)


def prepare(editor, predictor, device: torch.device, channels_last: bool = False,
            compile: bool = False) -> list[str]:
    """GPU settings on the models; returns what was applied (for the printed header)."""
    applied = []
    if device.type == "cuda":
        applied.append("bf16 autocast")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if channels_last or device.type == "cuda":
        editor.generator_.to(memory_format=torch.channels_last)
        predictor.torch_module().to(memory_format=torch.channels_last)
        applied.append("channels-last")
    if compile:  # the same hooks as the pipeline's [run] compile = true
        done = editor.compile() + predictor.compile()
        applied.append(f"torch.compile ({', '.join(done) or 'nothing compiled'})")
    return applied


def activation_bytes(tile: int, dim: int) -> int:
    """A rough per-tile memory estimate of decode + predict at ``tile`` px (bf16 activations)."""
    return int(tile * tile * (dim + 16) * 2 * 6)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    import os

    return f"cpu ({os.cpu_count()} cores visible, torch threads {torch.get_num_threads()})"

"""Batched encode and decode through an editor, on its device, without gradients: what the editor
evaluation, the realism test, the attribute probe and the review page share."""

from __future__ import annotations

import numpy as np
import torch

from mxplain.interfaces import Editor, latent_take
from mxplain.store import to_uint8


def editor_device(editor: Editor) -> torch.device:
    return torch.device(editor.device)  # declared on TrainableModel (cpu until moved)


def edit_batched(editor: Editor, latent, attrs: torch.Tensor, batch: int) -> np.ndarray:
    """Decode ``attrs`` (N, K) for a precomputed latent, batched -> uint8 (N, H, W)."""
    out = []
    dev = editor_device(editor)
    with torch.no_grad():
        for i in range(0, len(attrs), batch):
            sl = slice(i, i + batch)
            y = editor.decode(latent_take(latent, sl), attrs[sl].to(dev))
            out.append(to_uint8(y.float().cpu()))
    return np.concatenate(out)


def encode_batched(editor: Editor, tiles: torch.Tensor, batch: int):
    """Encode in batches; the latent is kept on the editor's device (tensor or tuple)."""
    parts = []
    dev = editor_device(editor)
    with torch.no_grad():
        for i in range(0, len(tiles), batch):
            parts.append(editor.encode(tiles[i:i + batch].to(dev)))
    if isinstance(parts[0], (tuple, list)):
        return type(parts[0])(torch.cat([p[j] for p in parts]) for j in range(len(parts[0])))
    return torch.cat(parts)

"""Batched inference: clip tables in, per-clip embeddings out (the visual one averaged over both views:
the paper's two crops, or the ``fg`` profile's frame and its mirror image)."""

from __future__ import annotations

import numpy as np
import torch

from avsurv.learning.data import ClipTable, audio_batch, video_batch
from avsurv.models import AudioVisualModel
from avsurv.models.device import autocast
from avsurv.models.inputs import VIEWS
from avsurv.models.profiles import PROFILES


def _device(model: AudioVisualModel) -> torch.device:
    """Where the model's weights are: inputs go there, embeddings come back to the CPU as float32."""
    return next(model.parameters()).device


@torch.no_grad()
def encode_visual_views(model: AudioVisualModel, table: ClipTable, batch_size: int = 32,
                        bf16: bool = False) -> torch.Tensor:
    """float32 [N, 2, D]: the embedding of each view of each clip of ``table``; ``bf16``: under bf16 autocast.
    On a CPU, at most the profile's ``cpu_embed_batch`` clips go through the encoder at once."""
    encoder, visual, device = model.encoders["visual"], model.visual_input, _device(model)
    cap = PROFILES[model.profile].cpu_embed_batch
    if device.type == "cpu" and cap is not None:
        batch_size = min(batch_size, cap)
    views = []
    for view in range(VIEWS):
        parts = []
        for start in range(0, len(table), batch_size):
            batch = np.arange(start, min(start + batch_size, len(table)))
            inputs = video_batch(table, batch, np.full(len(batch), view), visual).to(device)
            with autocast(device, enabled=bf16):
                parts.append(encoder(inputs)["visual"].float().cpu())
        views.append(torch.cat(parts))
    return torch.stack(views, dim=1)


@torch.no_grad()
def encode_audio(model: AudioVisualModel, log_mel: np.ndarray, batch_size: int = 128,
                 bf16: bool = False) -> torch.Tensor:
    """float32 [N, 1, 128, 64] -> float32 [N, D]; ``bf16``: under bf16 autocast."""
    encoder, device = model.encoders["audio"], _device(model)
    parts = []
    for i in range(0, len(log_mel), batch_size):
        with autocast(device, enabled=bf16):
            parts.append(encoder(audio_batch(log_mel[i : i + batch_size]).to(device))["audio"].float().cpu())
    return torch.cat(parts)


def encode_table(model: AudioVisualModel, table: ClipTable, batch_size: int = 32,
                 bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip ``z_v`` (mean of the two views, docs/METHOD.md Decision) and ``z_a``, float32 [N, D] each;
    ``table`` must hold frames as the model's profile stores them (:func:`avsurv.learning.data.load_clips`)."""
    was_training = model.training
    model.eval()
    try:
        z_v = encode_visual_views(model, table, batch_size, bf16).mean(dim=1)
        z_a = encode_audio(model, table.log_mel, bf16=bf16)
    finally:
        model.train(was_training)
    return z_v.numpy().astype(np.float32), z_a.numpy().astype(np.float32)

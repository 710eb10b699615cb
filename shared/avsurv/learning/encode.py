"""Batched inference: clip tables in, per-clip embeddings out (the visual one averaged over both views:
the paper's two crops, or the ``fg`` profile's frame and its mirror image)."""

from __future__ import annotations

import numpy as np
import torch

from avsurv.learning.data import ClipTable, audio_batch, video_batch
from avsurv.models import AudioVisualModel
from avsurv.models.inputs import VIEWS


@torch.no_grad()
def encode_visual_views(model: AudioVisualModel, table: ClipTable, batch_size: int = 32) -> torch.Tensor:
    """float32 [N, 2, D]: the embedding of each view of each clip of ``table``."""
    encoder, visual = model.encoders["visual"], model.visual_input
    views = []
    for view in range(VIEWS):
        parts = []
        for start in range(0, len(table), batch_size):
            batch = np.arange(start, min(start + batch_size, len(table)))
            parts.append(encoder(video_batch(table, batch, np.full(len(batch), view), visual))["visual"])
        views.append(torch.cat(parts))
    return torch.stack(views, dim=1)


@torch.no_grad()
def encode_audio(model: AudioVisualModel, log_mel: np.ndarray, batch_size: int = 128) -> torch.Tensor:
    """float32 [N, 1, 128, 64] -> float32 [N, D]."""
    encoder = model.encoders["audio"]
    parts = [encoder(audio_batch(log_mel[i : i + batch_size]))["audio"] for i in range(0, len(log_mel), batch_size)]
    return torch.cat(parts)


def encode_table(model: AudioVisualModel, table: ClipTable, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip ``z_v`` (mean of the two views, PAPER_NOTES Decision) and ``z_a``, float32 [N, D] each;
    ``table`` must hold frames as the model's profile stores them (:func:`avsurv.learning.data.load_clips`)."""
    was_training = model.training
    model.eval()
    try:
        z_v = encode_visual_views(model, table, batch_size).mean(dim=1)
        z_a = encode_audio(model, table.log_mel)
    finally:
        model.train(was_training)
    return z_v.numpy().astype(np.float32), z_a.numpy().astype(np.float32)

"""Batched inference: clip arrays in, per-clip embeddings out (the visual one averaged over both crops)."""

from __future__ import annotations

import numpy as np
import torch

from avsurv.learning.data import audio_batch, video_batch
from avsurv.models import AudioVisualModel


@torch.no_grad()
def encode_visual_crops(model: AudioVisualModel, frames: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """uint8 [N, T, 224, 398, 3] -> float32 [N, 2, D]: the embedding of each crop."""
    encoder = model.encoders["visual"]
    crops = []
    for crop in (0, 1):
        parts = [
            encoder(video_batch(frames[i : i + batch_size], np.full(len(frames[i : i + batch_size]), crop)))["visual"]
            for i in range(0, len(frames), batch_size)
        ]
        crops.append(torch.cat(parts))
    return torch.stack(crops, dim=1)


@torch.no_grad()
def encode_audio(model: AudioVisualModel, log_mel: np.ndarray, batch_size: int = 128) -> torch.Tensor:
    """float32 [N, 1, 128, 64] -> float32 [N, D]."""
    encoder = model.encoders["audio"]
    parts = [encoder(audio_batch(log_mel[i : i + batch_size]))["audio"] for i in range(0, len(log_mel), batch_size)]
    return torch.cat(parts)


def encode_clips(
    model: AudioVisualModel, frames: np.ndarray, log_mel: np.ndarray, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip ``z_v`` (mean of the two crops, PAPER_NOTES Decision) and ``z_a``, float32 [N, D] each."""
    was_training = model.training
    model.eval()
    try:
        z_v = encode_visual_crops(model, frames, batch_size).mean(dim=1)
        z_a = encode_audio(model, log_mel)
    finally:
        model.train(was_training)
    return z_v.numpy().astype(np.float32), z_a.numpy().astype(np.float32)

"""Embedding clips with a trained model: ``z_v`` (mean over the two views) and ``z_a`` per clip."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from avsurv.learning.data import ClipTable, chunks, iter_clips, table_from_clips
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.encode import encode_table
from avsurv.media.background import Backgrounds
from avsurv.media.segment import Clip
from avsurv.models import AudioVisualModel

CHUNK_CLIPS = 64
"""Clips decoded and embedded together: bounds memory on long videos."""


def embed_clips(model: AudioVisualModel, config: dict, clips: Iterable[Clip], batch_size: int = 32,
                backgrounds: Backgrounds | None = None, bf16: bool = False) -> EmbeddingSet:
    """Embeds clips as they come, in time order per camera (a video is never held in memory whole).
    ``backgrounds`` carries each camera's background history across calls (a live stream); by default
    the history starts with these clips. ``bf16``: under bf16 autocast (:mod:`avsurv.models.device`)."""
    backgrounds = Backgrounds() if backgrounds is None else backgrounds
    parts = [embed_table(model, config, table_from_clips(chunk, model.visual_input, backgrounds), batch_size, bf16)
             for chunk in chunks(clips, CHUNK_CLIPS)]
    if not parts:
        raise ValueError("no clips to embed")
    return EmbeddingSet.concat(parts)


@torch.inference_mode()  # cheaper than no_grad (no version counters), ~7 % on tiny; the results leave as numpy
def embed_table(model: AudioVisualModel, config: dict, table: ClipTable, batch_size: int = 32,
                bf16: bool = False) -> EmbeddingSet:
    """Embeds clips already loaded in memory as the model's profile stores them (e.g. those a model was
    trained on)."""
    return table_embeddings(table, *encode_table(model, table, batch_size, bf16), config)


def table_embeddings(table: ClipTable, z_v: np.ndarray, z_a: np.ndarray, config: dict | None = None) -> EmbeddingSet:
    """The clips of ``table`` with ``z_v`` and ``z_a`` [N, D] as their embeddings; ``config`` names the model that
    made them (None: features no model made, e.g. a benchmark's baselines)."""
    made_by = {} if config is None else {"model_sha256": config["sha256"], "profile": config["profile"],
                                          "method": config["method"]}
    return EmbeddingSet(clip_start=table.starts, z_v=z_v, z_a=z_a, clip_id=np.array(table.clip_ids),
                        camera_id=np.array(table.camera_ids), capture_time=table.capture_times,
                        has_audio=table.has_audio, source=np.array(table.sources), **made_by)


def embed_inputs(model: AudioVisualModel, config: dict, inputs: Sequence[str | Path], progress: bool = True,
                 batch_size: int = 32, bf16: bool = False) -> EmbeddingSet:
    """Embeds every clip of videos, streams or clip directories."""
    return embed_clips(model, config, iter_clips(inputs, progress), batch_size, bf16=bf16)

"""Embedding clips with a trained model: ``z_v`` (mean over the two crops) and ``z_a`` per clip."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from avsurv.learning.data import ClipTable, iter_clips
from avsurv.learning.encode import encode_clips
from avsurv.media.segment import Clip
from avsurv.models import AudioVisualModel
from avsurv.tasks.embeddings import EmbeddingSet

CHUNK_CLIPS = 64
"""Clips decoded and embedded together: bounds memory on long videos."""


def _chunks(clips: Iterable[Clip], size: int) -> Iterator[list[Clip]]:
    iterator = iter(clips)
    while chunk := list(islice(iterator, size)):
        yield chunk


def embed_clips(model: AudioVisualModel, config: dict, clips: Iterable[Clip], batch_size: int = 32) -> EmbeddingSet:
    """Embeds clips as they come (a video is never held in memory whole)."""
    parts: list[EmbeddingSet] = []
    for chunk in _chunks(clips, CHUNK_CLIPS):
        z_v, z_a = encode_clips(model, np.stack([c.frames for c in chunk]), np.stack([c.log_mel for c in chunk]),
                                batch_size)
        parts.append(EmbeddingSet(
            clip_start=np.array([c.start for c in chunk], dtype=np.float64),
            z_v=z_v, z_a=z_a,
            clip_id=np.array([c.clip_id for c in chunk]),
            camera_id=np.array([c.camera_id for c in chunk]),
            capture_time=np.array([np.nan if c.capture_time is None else c.capture_time for c in chunk]),
            has_audio=np.array([c.has_audio for c in chunk]),
            source=np.array([c.source for c in chunk]),
            model_sha256=config["sha256"], profile=config["profile"], method=config["method"],
        ))
    if not parts:
        raise ValueError("no clips to embed")
    return EmbeddingSet.concat(parts)


def embed_table(model: AudioVisualModel, config: dict, table: ClipTable, batch_size: int = 32) -> EmbeddingSet:
    """Embeds clips already loaded in memory (e.g. those a model was trained on)."""
    z_v, z_a = encode_clips(model, table.frames, table.log_mel, batch_size)
    return EmbeddingSet(
        clip_start=table.starts, z_v=z_v, z_a=z_a, clip_id=np.array(table.clip_ids),
        camera_id=np.array(table.camera_ids), capture_time=table.capture_times, has_audio=table.has_audio,
        source=np.array(table.sources), model_sha256=config["sha256"], profile=config["profile"],
        method=config["method"],
    )


def embed_inputs(model: AudioVisualModel, config: dict, inputs: Sequence[str | Path], progress: bool = True,
                 batch_size: int = 32) -> EmbeddingSet:
    """Embeds every clip of videos, streams or clip directories."""
    return embed_clips(model, config, iter_clips(inputs, progress), batch_size)

"""Sequences of consecutive clips: the "videos" of T one-second segments every head works on.

The papers' heads read a video of T segments (AVE: T = 10 one-second segments). A surveillance stream
has no videos, so each stream (one camera and source) is cut into runs of consecutive clips (starts one
``CLIP_SECONDS`` apart; a missing clip ends a run) and every run into windows of ``length`` clips:

- full windows, back to back;
- the rest of a run longer than ``length`` becomes one more window holding the run's last ``length``
  clips, so it overlaps the window before it; only its new clips are *owned* by it;
- a run shorter than ``length`` (but of at least ``MIN_WINDOW`` clips) is one shorter window.

Every clip of a run of ``MIN_WINDOW`` or more clips is owned by exactly one window position, whose
prediction is the clip's. Windows are grouped by length, so each group stacks into [W, L, D] tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avsurv.constants import CLIP_SECONDS
from avsurv.errors import TaskError
from avsurv.learning.embeddings import EmbeddingSet

DEFAULT_WINDOW = 10
"""Clips per window: the T = 10 one-second segments of an AVE video, which TACMA and CCLN were built on."""

MIN_WINDOW = 2
"""AVACA's difference sequence u_i = p_{i+1} - p_i needs two clips; shorter runs are left out."""

GAP_TOLERANCE_S = 0.25
"""Clip starts computed in floating point; a gap of more than a quarter second breaks the run."""


@dataclass(frozen=True)
class Windows:
    """Windows of one length L: ``rows[w, t]`` is the embedding row at position t of window w, and
    ``owned[w, t]`` says whether that position gives the clip its prediction."""

    rows: np.ndarray
    owned: np.ndarray

    @property
    def length(self) -> int:
        return int(self.rows.shape[1])

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def select(self, keep: np.ndarray) -> Windows:
        return Windows(self.rows[keep], self.owned[keep])


def runs(embeddings: EmbeddingSet) -> list[np.ndarray]:
    """Row indices of each run of consecutive clips of one stream, in time order."""
    order = np.lexsort((embeddings.clip_start, embeddings.source, embeddings.camera_id))
    camera, source, start = embeddings.camera_id[order], embeddings.source[order], embeddings.clip_start[order]
    same_stream = (camera[1:] == camera[:-1]) & (source[1:] == source[:-1])
    consecutive = np.abs(np.diff(start) - CLIP_SECONDS) <= GAP_TOLERANCE_S
    breaks = np.flatnonzero(~(same_stream & consecutive)) + 1
    return np.split(order, breaks)


def cut_windows(embeddings: EmbeddingSet, length: int = DEFAULT_WINDOW) -> list[Windows]:
    """The windows of every run, grouped by length (longest first); see the module docstring."""
    if length < MIN_WINDOW:
        raise TaskError(f"window must hold at least {MIN_WINDOW} clips, got {length}")
    by_length: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for run in runs(embeddings):
        if len(run) < MIN_WINDOW:
            continue
        size = min(length, len(run))
        full = len(run) // size
        rows = [run[i * size:(i + 1) * size] for i in range(full)]
        owned = [np.ones(size, dtype=bool) for _ in range(full)]
        rest = len(run) - full * size
        if rest:
            rows.append(run[-size:])
            owned.append(np.arange(size) >= size - rest)
        group = by_length.setdefault(size, ([], []))
        group[0].extend(rows)
        group[1].extend(owned)
    return [Windows(np.stack(rows), np.stack(owned)) for size, (rows, owned) in sorted(by_length.items(),
                                                                                        reverse=True)]


def window_features(embeddings: EmbeddingSet, windows: Windows) -> dict[str, torch.Tensor]:
    """Per modality, float32 [W, L, D]: the clips' z_a ("audio") and z_v ("visual")."""
    return {"audio": torch.from_numpy(embeddings.z_a[windows.rows]),
            "visual": torch.from_numpy(embeddings.z_v[windows.rows])}

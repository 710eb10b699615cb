"""Training data: every clip of every input in memory, and batches drawn across the whole stream.

EPG needs alike clips from different times in one batch (that is where its extra positives come from),
so batches are drawn from a permutation of the whole stream, never from consecutive seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avsurv.constants import CROP_OFFSETS, CROP_SIZE, N_MELS
from avsurv.media import Segmenter
from avsurv.media.clipstore import ClipStore
from avsurv.media.segment import Clip

SOURCE_TIME_SPACING_S = 1e7
"""Sources without capture times get disjoint time ranges, so no temporal rule ever pairs them."""


@dataclass
class ClipTable:
    """Aligned arrays for N clips."""

    frames: np.ndarray  # uint8 [N, 5, 224, 398, 3]
    log_mel: np.ndarray  # float32 [N, 1, 128, 64]
    times: np.ndarray  # float64 [N]: capture time, or media time offset per source
    starts: np.ndarray  # float64 [N]: media seconds
    capture_times: np.ndarray  # float64 [N], NaN when unknown
    source_index: np.ndarray  # int64 [N]
    has_audio: np.ndarray  # bool [N]
    clip_ids: list[str]
    camera_ids: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.clip_ids)

    def subset(self, keep: np.ndarray) -> ClipTable:
        positions = np.flatnonzero(keep) if keep.dtype == bool else keep
        return ClipTable(
            frames=self.frames[positions], log_mel=self.log_mel[positions], times=self.times[positions],
            starts=self.starts[positions], capture_times=self.capture_times[positions],
            source_index=self.source_index[positions], has_audio=self.has_audio[positions],
            clip_ids=[self.clip_ids[i] for i in positions], camera_ids=[self.camera_ids[i] for i in positions],
            sources=[self.sources[i] for i in positions],
        )

    def summary(self) -> dict:
        return {
            "clips": len(self),
            "clips_with_audio": int(self.has_audio.sum()),
            "sources": sorted(set(self.sources)),
            "cameras": sorted(set(self.camera_ids)),
            "seconds_per_camera": {c: self.camera_ids.count(c) for c in sorted(set(self.camera_ids))},
        }


def iter_clips(inputs: Sequence[str | Path], progress: bool = True) -> Iterator[Clip]:
    """Clips of every input: clip directories are read, anything else is segmented on the fly."""
    for source in inputs:
        path = Path(str(source))
        if (path / "clips.jsonl").is_file():
            store = ClipStore(path)
            yield from tqdm(store, desc=f"reading {path.name}", disable=not progress, leave=False)
        else:
            segmenter = Segmenter(str(source))
            yield from tqdm(segmenter, desc=f"segmenting {segmenter.camera_id}", unit="clip",
                            disable=not progress, leave=False)


def load_clips(inputs: Sequence[str | Path], progress: bool = True) -> ClipTable:
    clips = list(iter_clips(inputs, progress))
    if not clips:
        raise ValueError(f"no clips could be made from {', '.join(map(str, inputs))}")
    return table_from_clips(clips)


def table_from_clips(clips: Sequence[Clip]) -> ClipTable:
    sources = [clip.source for clip in clips]
    index_of = {source: i for i, source in enumerate(dict.fromkeys(sources))}
    source_index = np.array([index_of[s] for s in sources], dtype=np.int64)
    starts = np.array([clip.start for clip in clips], dtype=np.float64)
    capture = np.array([np.nan if c.capture_time is None else c.capture_time for c in clips], dtype=np.float64)
    times = np.where(np.isnan(capture), starts + source_index * SOURCE_TIME_SPACING_S, capture)
    return ClipTable(
        frames=np.stack([clip.frames for clip in clips]),
        log_mel=np.stack([clip.log_mel for clip in clips]),
        times=times, starts=starts, capture_times=capture, source_index=source_index,
        has_audio=np.array([clip.has_audio for clip in clips]),
        clip_ids=[clip.clip_id for clip in clips], camera_ids=[clip.camera_id for clip in clips], sources=sources,
    )


def mel_statistics(log_mel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mel-bin mean and std over clips and frames (PAPER_NOTES: fitted on the training clips)."""
    bins = torch.from_numpy(log_mel).reshape(-1, N_MELS, log_mel.shape[-1]).transpose(0, 1).reshape(N_MELS, -1)
    return bins.mean(dim=1), bins.std(dim=1).clamp_min(1e-3)


def video_batch(frames: np.ndarray, crop: np.ndarray) -> torch.Tensor:
    """uint8 [B, T, 224, 398, 3] and crop choice [B] in {0, 1} -> float32 [B, 3, T, 224, 224] in [0, 1]."""
    offsets = np.asarray(CROP_OFFSETS)[crop]
    columns = offsets[:, None] + np.arange(CROP_SIZE)[None, :]  # [B, 224]
    cropped = np.take_along_axis(frames, columns[:, None, None, :, None], axis=3)
    return torch.from_numpy(cropped).permute(0, 4, 1, 2, 3).float().div_(255.0)


def audio_batch(log_mel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(log_mel))

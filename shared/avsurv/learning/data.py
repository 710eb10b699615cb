"""Training data: every clip of every input in memory, and batches drawn across the whole stream.

EPG needs alike clips from different times in one batch (that is where its extra positives come from),
so batches are drawn from a permutation of the whole stream, never from consecutive seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avsurv.constants import N_MELS
from avsurv.media import Segmenter
from avsurv.media.background import Backgrounds
from avsurv.media.clipstore import ClipStore
from avsurv.media.segment import Clip
from avsurv.models.inputs import CropInput, VisualInput

CROPS = CropInput()
"""The paper's input (``paper`` and ``tiny`` profiles), the default of the loaders."""

SOURCE_TIME_SPACING_S = 1e7
"""Sources without capture times get disjoint time ranges, so no temporal rule ever pairs them."""


@dataclass
class ClipTable:
    """Aligned arrays for N clips."""

    frames: np.ndarray  # uint8 [N, 5, H, W, 3] as the profile's input stores them (crops: 224x398)
    log_mel: np.ndarray  # float32 [N, 1, 128, 64]
    times: np.ndarray  # float64 [N]: capture time, or media time offset per source
    starts: np.ndarray  # float64 [N]: media seconds
    capture_times: np.ndarray  # float64 [N], NaN when unknown
    source_index: np.ndarray  # int64 [N]
    has_audio: np.ndarray  # bool [N]
    clip_ids: list[str]
    camera_ids: list[str]
    sources: list[str]
    background: np.ndarray | None = None  # uint8 [N, H, W, 3]: each clip's camera background, if the input needs it

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
            background=None if self.background is None else self.background[positions],
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


def load_clips(inputs: Sequence[str | Path], progress: bool = True, visual: VisualInput = CROPS) -> ClipTable:
    """Every clip of ``inputs``, frames kept as ``visual`` (the model profile's input) stores them."""
    try:
        return table_from_clips(iter_clips(inputs, progress), visual)
    except NoClips:
        raise ValueError(f"no clips could be made from {', '.join(map(str, inputs))}") from None


class NoClips(ValueError):
    """An empty clip stream."""


def table_from_clips(clips: Iterable[Clip], visual: VisualInput = CROPS,
                     backgrounds: Backgrounds | None = None) -> ClipTable:
    """Clips in time order per camera; only the frames as ``visual`` stores them are kept, so a long stream
    of a small input fits in memory. Backgrounds are estimated causally (:mod:`avsurv.media.background`)
    by ``backgrounds``, which a caller passes to carry each camera's history from one table to the next."""
    frames, clip_backgrounds, mels, meta = [], [], [], []
    tracker = Backgrounds() if backgrounds is None else backgrounds
    for clip in clips:
        frames.append(visual.store(clip.frames))
        if visual.needs_background:
            clip_backgrounds.append(tracker.observe(clip.camera_id, frames[-1]))
        mels.append(clip.log_mel)
        meta.append((clip.source, clip.start, clip.capture_time, clip.has_audio, clip.clip_id, clip.camera_id))
    if not meta:
        raise NoClips("no clips")
    sources, starts, captures, has_audio, clip_ids, camera_ids = (list(column) for column in zip(*meta, strict=True))
    index_of = {source: i for i, source in enumerate(dict.fromkeys(sources))}
    source_index = np.array([index_of[s] for s in sources], dtype=np.int64)
    start = np.array(starts, dtype=np.float64)
    capture = np.array([np.nan if c is None else c for c in captures], dtype=np.float64)
    times = np.where(np.isnan(capture), start + source_index * SOURCE_TIME_SPACING_S, capture)
    return ClipTable(
        frames=np.stack(frames), log_mel=np.stack(mels), times=times, starts=start, capture_times=capture,
        source_index=source_index, has_audio=np.array(has_audio, dtype=bool), clip_ids=clip_ids,
        camera_ids=camera_ids, sources=sources, background=np.stack(clip_backgrounds) if clip_backgrounds else None,
    )


def mel_statistics(log_mel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mel-bin mean and std over clips and frames (docs/METHOD.md: fitted on the training clips)."""
    bins = torch.from_numpy(log_mel).reshape(-1, N_MELS, log_mel.shape[-1]).transpose(0, 1).reshape(N_MELS, -1)
    return bins.mean(dim=1), bins.std(dim=1).clamp_min(1e-3)


def video_batch(table: ClipTable, batch: np.ndarray, view: np.ndarray, visual: VisualInput) -> torch.Tensor:
    """The visual encoder's input for clips ``batch`` of ``table``, view [B] in {0, 1} (see
    :mod:`avsurv.models.inputs`)."""
    background = None if table.background is None else table.background[batch]
    return visual.tensor(table.frames[batch], view, background)


def audio_batch(log_mel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(log_mel))

"""Training data: every clip of every input in memory, or a store's clips in bounded working sets
(:class:`WorkingSets`), and batches drawn across the whole stream.

EPG needs alike clips from different times in one batch (that is where its extra positives come from),
so batches are drawn from a permutation of the whole stream, never from consecutive seconds.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

from avsurv.constants import N_MELS
from avsurv.errors import NoClipError
from avsurv.media import Segmenter
from avsurv.media.background import Backgrounds, minus_floor
from avsurv.media.clipstore import ClipSource, ClipStore
from avsurv.media.segment import Clip
from avsurv.models.inputs import CropInput, VisualInput

CROPS = CropInput()
"""The paper's input (``paper`` and ``tiny`` profiles), the default of the loaders."""
T = TypeVar("T")

SOURCE_TIME_SPACING_S = 1e7
"""Sources without capture times get disjoint time ranges, so no temporal rule ever pairs them."""


@dataclass
class ClipTable:
    """Aligned arrays for N clips."""

    frames: np.ndarray  # uint8 [N, 5, H, W, 3] as the profile's input stores them (crops: 224x398)
    log_mel: np.ndarray  # float32 [N, 1, 128, 64] as the profile hears it (dB; fg: minus the camera's noise floor)
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
        return summarize(self.camera_ids, self.sources, int(self.has_audio.sum()))


def summarize(camera_ids: Sequence[str], sources: Sequence[str], with_audio: int) -> dict:
    """The training data of a model's config: clips, cameras and sources."""
    return {
        "clips": len(camera_ids),
        "clips_with_audio": with_audio,
        "sources": sorted(set(sources)),
        "cameras": sorted(set(camera_ids)),
        "seconds_per_camera": dict(sorted(Counter(camera_ids).items())),
    }


def iter_clips(inputs: Sequence[str | Path], progress: bool = True) -> Iterator[Clip]:
    """Clips of every input: clip directories are read, anything else is segmented on the fly. An input that
    gives no clip (shorter than one, no video...) is skipped with its reason on stderr, unless no input gives
    one: then its :class:`NoClipError` is raised."""
    made, refused = 0, None
    for source in inputs:
        path = Path(str(source))
        if (path / "clips.jsonl").is_file():
            clips: Iterable[Clip] = tqdm(ClipStore(path), desc=f"reading {path.name}", disable=not progress,
                                         leave=False)
        else:
            segmenter = Segmenter(str(source))
            clips = tqdm(segmenter, desc=f"segmenting {segmenter.camera_id}", unit="clip", disable=not progress,
                         leave=False)
        try:
            for clip in clips:
                made += 1
                yield clip
        except NoClipError as error:
            refused = refused or error
            print(f"skipped: {error}", file=sys.stderr)
    if made == 0 and refused is not None:
        raise refused


def load_clips(inputs: Sequence[str | Path], progress: bool = True, visual: VisualInput = CROPS) -> ClipTable:
    """Every clip of ``inputs``, frames kept as ``visual`` (the model profile's input) stores them."""
    try:
        return table_from_clips(iter_clips(inputs, progress), visual)
    except NoClips:
        raise ValueError(f"no clips could be made from {', '.join(map(str, inputs))}") from None


class NoClips(ValueError):
    """An empty clip stream."""


STORE_GROUP = 8
"""Clips whose frames ``visual.store`` takes in one call. Shrinking a clip is a dozen tensor ops, and in a
process where many threads run Python (the embedded platform's 32 camera readers) each op waits again for the
GIL when it returns: per clip, the shrinking took 46 % of the embedder's time there."""


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), taken as they come."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _stored(clips: Iterable[Clip], visual: VisualInput) -> Iterator[tuple[Clip, np.ndarray]]:
    """Each clip with its frames as ``visual`` stores them, ``STORE_GROUP`` clips at a time."""
    for group in chunks(clips, STORE_GROUP):
        yield from zip(group, visual.store_clips([clip.frames for clip in group]), strict=True)


def table_from_clips(clips: Iterable[Clip], visual: VisualInput = CROPS,
                     backgrounds: Backgrounds | None = None, most: int | None = None) -> ClipTable:
    """Clips in time order per camera; only the frames as ``visual`` stores them are kept, so a long stream
    of a small input fits in memory. Where ``visual`` takes each camera's background out of the frames, its
    noise floor is subtracted from the log-mel too. Both are estimated causally (:mod:`avsurv.media.background`)
    by ``backgrounds``, which a caller passes to carry each camera's history from one table to the next.
    ``most``: at most this many clips will come; their frames are then written in place as they come, so
    that the table never needs twice their memory (a list of them and its stacked copy)."""
    frames: list[np.ndarray] | np.ndarray = []
    clip_backgrounds: list[np.ndarray] | np.ndarray = []
    mels, meta = [], []
    tracker = Backgrounds() if backgrounds is None else backgrounds
    for count, (clip, stored) in enumerate(_stored(clips, visual)):
        background = tracker.observe(clip.camera_id, stored) if visual.needs_background else None
        if most is not None and count == 0:
            frames = np.empty((most, *stored.shape), stored.dtype)
            if background is not None:
                clip_backgrounds = np.empty((most, *background.shape), background.dtype)
        if isinstance(frames, np.ndarray):
            frames[count] = stored
            if background is not None:
                clip_backgrounds[count] = background
        else:
            frames.append(stored)
            if background is not None:
                assert isinstance(clip_backgrounds, list)
                clip_backgrounds.append(background)
        mels.append(minus_floor(clip.log_mel, tracker.floor(clip.camera_id, clip.log_mel, clip.has_audio))
                    if visual.needs_background else clip.log_mel)
        meta.append((clip.source, clip.start, clip.capture_time, clip.has_audio, clip.clip_id, clip.camera_id))
    if not meta:
        raise NoClips("no clips")
    sources, starts, captures, has_audio, clip_ids, camera_ids = (list(column) for column in zip(*meta, strict=True))
    index_of = {source: i for i, source in enumerate(dict.fromkeys(sources))}
    source_index = np.array([index_of[s] for s in sources], dtype=np.int64)
    start = np.array(starts, dtype=np.float64)
    capture = np.array([np.nan if c is None else c for c in captures], dtype=np.float64)
    times = np.where(np.isnan(capture), start + source_index * SOURCE_TIME_SPACING_S, capture)
    n = len(meta)
    return ClipTable(
        frames=frames[:n] if isinstance(frames, np.ndarray) else np.stack(frames), log_mel=np.stack(mels),
        times=times, starts=start, capture_times=capture, source_index=source_index,
        has_audio=np.array(has_audio, dtype=bool), clip_ids=clip_ids, camera_ids=camera_ids, sources=sources,
        background=(clip_backgrounds[:n] if isinstance(clip_backgrounds, np.ndarray)
                    else np.stack(clip_backgrounds) if clip_backgrounds else None),
    )


class WorkingSets:
    """Training clips read from a clip container in bounded working sets, so that a trainer holds at most
    ``max_clips`` of them at once, however many it holds (``clip_ids``: those to train on, None: all). A clip
    deleted since it was listed (retention runs beside the trainer) is left out of its working set.

    Each epoch the clips are shuffled and split into ``ceil(N / max_clips)`` near-equal working sets: each is
    a random sample of the whole stream, so that EPG's batches still mix clips from every time of day. A
    working set is read in capture order, and each camera's background is estimated causally from the
    sample's earlier clips (a sparser history than the whole stream's). When every clip fits, the one working
    set is every clip in order, read once: training is then the same as on a :class:`ClipTable` of them."""

    def __init__(self, source: ClipSource, clip_ids: Sequence[str] | None, visual: VisualInput, max_clips: int,
                 seed: int = 0) -> None:
        if max_clips < 2:
            raise ValueError(f"a working set holds at least 2 clips, got {max_clips}")
        self.source, self.visual = source, visual
        self.clip_ids = source.clip_ids() if clip_ids is None else list(clip_ids)
        self.max_clips, self.seed = max_clips, seed
        self._whole: ClipTable | None = None

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def fits(self) -> bool:
        return len(self.clip_ids) <= self.max_clips

    def plan(self, epoch: int | None) -> list[np.ndarray]:
        """The positions of each working set of ``epoch``, in capture order; None: consecutive working sets
        (one pass in order, e.g. to embed every clip)."""
        n = len(self.clip_ids)
        order = np.arange(n) if epoch is None else np.random.default_rng([self.seed, epoch]).permutation(n)
        return [np.sort(part) for part in np.array_split(order, max(1, math.ceil(n / self.max_clips)))]

    def load(self, positions: np.ndarray) -> ClipTable:
        """The working set's clips (every clip, kept for the next call, when they all fit)."""
        if self.fits:
            if self._whole is None:
                self._whole = self._read(self.clip_ids)
            return self._whole
        return self._read([self.clip_ids[p] for p in positions])

    def _read(self, clip_ids: list[str]) -> ClipTable:
        return table_from_clips(self.source.clips(clip_ids, skip_missing=True), self.visual, most=len(clip_ids))


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

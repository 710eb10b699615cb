"""Each camera's static background, seen and heard, estimated from its own recent clips without labels.

A fixed camera's picture is mostly the same street; what an operator cares about moves across it. The
encoders of the ``fg`` profile see each frame minus its camera's background, so that a car looks the
same from every camera (measured in issue 12: with the background removed, even random encoders
separate the classes across cameras; on raw frames, trained ones learn each camera's look).

The background of a camera is the per-pixel median of a ring of its recent frames: the middle frame of
every ``stride``-th clip, the last ``frames`` of them (32 x 4 = about two minutes of video), so it
follows lighting and weather while a passing object, present in a few samples only, is voted out. It is
causal: a clip is compared with the background of the clips before it, online and offline alike, so the
platform and the evaluation compute the same thing. Before a camera has any sample, the median of the
clip's own frames stands in.

Sound has a static background too: each microphone's hum of distant traffic, at its own level (the
challenging camera's microphone sits further back and hears the street louder, issue 12). The ``fg`` profile's
audio encoder hears each clip's log-mel minus its camera's noise floor, per mel band: how far each moment
rises above (or falls below) that microphone's ambient. The floor is per mel band the median, over the same
ring of sampled clips (those with audio), of each sample's ``NOISE_FLOOR_QUANTILE`` level over its frames,
causal in the same way.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from avsurv.constants import N_MELS

BACKGROUND_FRAMES = 32
"""Frames in each camera's ring: enough that an object in a few of them is outvoted."""
BACKGROUND_STRIDE = 4
"""Clips between two samples: the ring spans BACKGROUND_FRAMES x BACKGROUND_STRIDE seconds of video."""


class _Samples:
    """Every ``stride``-th clip offered leaves a sample in a ring of the last ``size``: what the camera's
    background and noise floor are medians of."""

    def __init__(self, size: int, stride: int) -> None:
        if size < 1 or stride < 1:
            raise ValueError(f"samples and stride must be >= 1, got {size} and {stride}")
        self.stride = stride
        self._ring: deque[np.ndarray] = deque(maxlen=size)
        self._clips = 0

    def due(self) -> bool:
        """Counts one clip; True when it is the one to sample (then :meth:`add` its sample)."""
        self._clips += 1
        return (self._clips - 1) % self.stride == 0

    def add(self, sample: np.ndarray) -> np.ndarray:
        """The ring, with ``sample``, stacked [K, ...]."""
        self._ring.append(sample)
        return np.stack(self._ring)


class RunningBackground:
    """One camera's background: ``observe`` each clip's frames uint8 [T, H, W, 3] in time order."""

    def __init__(self, frames: int = BACKGROUND_FRAMES, stride: int = BACKGROUND_STRIDE) -> None:
        self._samples = _Samples(frames, stride)
        self._median: np.ndarray | None = None

    def observe(self, clip_frames: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3]: the background this clip is compared with; then the clip joins the history."""
        if clip_frames.ndim != 4 or clip_frames.shape[-1] != 3:
            raise ValueError(f"expected frames [T, H, W, 3], got {clip_frames.shape}")
        if self._median is not None and self._median.shape != clip_frames.shape[1:]:
            raise ValueError(f"frame size changed from {self._median.shape} to {clip_frames.shape[1:]}")
        background = _median(clip_frames) if self._median is None else self._median
        if self._samples.due():
            self._median = _median(self._samples.add(clip_frames[len(clip_frames) // 2].copy()))
        return background


NOISE_FLOOR_QUANTILE = 0.2
"""Per mel band, the level a sampled second stays above for 80 % of its frames: its ambient, not its events."""


class RunningNoiseFloor:
    """One camera's noise floor: ``observe`` each clip's log-mel float32 [1, 128, T] (dB) in time order."""

    def __init__(self, samples: int = BACKGROUND_FRAMES, stride: int = BACKGROUND_STRIDE) -> None:
        self._samples = _Samples(samples, stride)
        self._floor: np.ndarray | None = None

    def observe(self, log_mel: np.ndarray, has_audio: bool = True) -> np.ndarray:
        """float32 [128]: the floor this clip is measured against; then a clip with audio joins the history
        (one without, silence, would drag the floor down)."""
        if log_mel.shape[:-1] != (1, N_MELS):
            raise ValueError(f"expected a log-mel [1, {N_MELS}, T], got {log_mel.shape}")
        level = np.quantile(log_mel[0], NOISE_FLOOR_QUANTILE, axis=-1).astype(np.float32)
        floor = level if self._floor is None else self._floor
        if has_audio and self._samples.due():
            self._floor = np.median(self._samples.add(level), axis=0).astype(np.float32)
        return floor


def minus_floor(log_mel: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """float32 [1, 128, T]: each bin of ``log_mel`` [1, 128, T] relative to ``floor`` [128], in dB. Not clipped
    at zero: measured at site scale, clipping lost what the quieter moments tell (RESULTS.md)."""
    return np.subtract(log_mel, floor[:, None], dtype=np.float32)


class Backgrounds:
    """A :class:`RunningBackground` and a :class:`RunningNoiseFloor` per camera id."""

    def __init__(self, frames: int = BACKGROUND_FRAMES, stride: int = BACKGROUND_STRIDE) -> None:
        self.frames, self.stride = frames, stride
        self.cameras: dict[str, RunningBackground] = {}
        self.floors: dict[str, RunningNoiseFloor] = {}

    def observe(self, camera_id: str, clip_frames: np.ndarray) -> np.ndarray:
        camera = self.cameras.setdefault(camera_id, RunningBackground(self.frames, self.stride))
        return camera.observe(clip_frames)

    def floor(self, camera_id: str, log_mel: np.ndarray, has_audio: bool) -> np.ndarray:
        """The camera's noise floor for this clip (:meth:`RunningNoiseFloor.observe`)."""
        camera = self.floors.setdefault(camera_id, RunningNoiseFloor(self.frames, self.stride))
        return camera.observe(log_mel, has_audio)


def _median(frames: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: per-pixel median of uint8 [K, H, W, 3] (lower middle value for even K).

    Found a bit at a time, highest first: the k-th smallest value is the largest v with at most k values
    below it. Eight passes of a uint8 comparison over the ring: 4x faster than ``np.partition`` over 32 frames
    (1.3 instead of 5.5 ms for a 100x56 ring), what a camera's every fourth clip pays."""
    k = (len(frames) - 1) // 2
    counts = np.uint8 if len(frames) <= np.iinfo(np.uint8).max else np.uint16  # uint8 counts: the fastest
    median = np.zeros(frames.shape[1:], np.uint8)
    for bit in (128, 64, 32, 16, 8, 4, 2, 1):
        candidate = median | np.uint8(bit)
        median = np.where(np.add.reduce(frames < candidate, axis=0, dtype=counts) <= k, candidate, median)
    return median

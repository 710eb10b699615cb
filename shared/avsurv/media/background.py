"""Each camera's static background, estimated from its own recent frames without labels.

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
"""

from __future__ import annotations

from collections import deque

import numpy as np

BACKGROUND_FRAMES = 32
"""Frames in each camera's ring: enough that an object in a few of them is outvoted."""
BACKGROUND_STRIDE = 4
"""Clips between two samples: the ring spans BACKGROUND_FRAMES x BACKGROUND_STRIDE seconds of video."""


class RunningBackground:
    """One camera's background: ``observe`` each clip's frames uint8 [T, H, W, 3] in time order."""

    def __init__(self, frames: int = BACKGROUND_FRAMES, stride: int = BACKGROUND_STRIDE) -> None:
        if frames < 1 or stride < 1:
            raise ValueError(f"frames and stride must be >= 1, got {frames} and {stride}")
        self.stride = stride
        self._ring: deque[np.ndarray] = deque(maxlen=frames)
        self._median: np.ndarray | None = None
        self._clips = 0

    def observe(self, clip_frames: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3]: the background this clip is compared with; then the clip joins the history."""
        if clip_frames.ndim != 4 or clip_frames.shape[-1] != 3:
            raise ValueError(f"expected frames [T, H, W, 3], got {clip_frames.shape}")
        if self._median is not None and self._median.shape != clip_frames.shape[1:]:
            raise ValueError(f"frame size changed from {self._median.shape} to {clip_frames.shape[1:]}")
        background = _median(clip_frames) if self._median is None else self._median
        if self._clips % self.stride == 0:
            self._ring.append(clip_frames[len(clip_frames) // 2].copy())
            self._median = _median(np.stack(self._ring))
        self._clips += 1
        return background


class Backgrounds:
    """A :class:`RunningBackground` per camera id."""

    def __init__(self, frames: int = BACKGROUND_FRAMES, stride: int = BACKGROUND_STRIDE) -> None:
        self.frames, self.stride = frames, stride
        self.cameras: dict[str, RunningBackground] = {}

    def observe(self, camera_id: str, clip_frames: np.ndarray) -> np.ndarray:
        camera = self.cameras.setdefault(camera_id, RunningBackground(self.frames, self.stride))
        return camera.observe(clip_frames)


def _median(frames: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: per-pixel median of uint8 [K, H, W, 3] (lower middle value for even K)."""
    return np.partition(frames, (len(frames) - 1) // 2, axis=0)[(len(frames) - 1) // 2]

"""What each profile's visual encoder is fed, from a clip's 5 frames uint8 [T, 224, 398, 3].

Every profile sees two *views* of a clip: independent samples in training, averaged at inference.
- ``crops`` (``paper``, ``tiny``; EPG section 4.1): view 0 and 1 are the left and right 224x224 crops.
- ``foreground`` (``fg``): the whole frame at the encoder's size minus its camera's background
  (:mod:`avsurv.media.background`); view 1 is its mirror image, so that a vehicle driving left looks
  like one driving right (the "challenging" camera films the street from the other side). A table built
  for this input also holds each clip's log-mel relative to its camera's noise floor
  (:func:`avsurv.learning.data.table_from_clips`): the profile takes each camera's static scene out of
  what both encoders get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avsurv.constants import CROP_OFFSETS, CROP_SIZE

VIEWS = 2


def crops(frames: np.ndarray) -> torch.Tensor:
    """[T, 224, 398, 3] uint8 frames -> float32 [2, 3, T, 224, 224]: the two overlapping crops."""
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)  # [3, T, H, W]
    return torch.stack([video[..., x : x + CROP_SIZE] for x in CROP_OFFSETS])


@dataclass(frozen=True)
class CropInput:
    """The paper's input: frames kept at 224x398, two crops."""

    needs_background = False

    def store(self, frames: np.ndarray) -> np.ndarray:
        """The frames as a table keeps them: here unchanged."""
        return frames

    def store_clips(self, clips: list[np.ndarray]) -> Sequence[np.ndarray]:
        """``store`` of each clip's frames: here the frames themselves (not copied)."""
        return clips

    def tensor(self, frames: np.ndarray, view: np.ndarray, background: np.ndarray | None = None) -> torch.Tensor:
        """uint8 [B, T, 224, 398, 3], view [B] in {0, 1} -> float32 [B, 3, T, 224, 224] in [0, 1]."""
        # Per clip (its 1.3 MB stay in cache), converted and scaled in one pass from the uint8 frames: a gather
        # (np.take_along_axis) then a strided float copy of the whole batch took 3x longer.
        video = torch.from_numpy(np.ascontiguousarray(frames))  # torch refuses negative strides
        cropped = torch.empty((len(frames), 3, *frames.shape[1:3], CROP_SIZE), dtype=torch.float32)
        for clip, offset in enumerate(np.asarray(CROP_OFFSETS)[view]):
            torch.div(video[clip, :, :, offset : offset + CROP_SIZE].permute(3, 0, 1, 2), 255.0, out=cropped[clip])
        return cropped


@dataclass(frozen=True)
class ForegroundInput:
    """Whole frames shrunk to ``height`` x ``width``, minus the camera's background."""

    height: int
    width: int
    needs_background = True

    def store(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [..., T, H, W, 3] -> uint8 [..., T, height, width, 3]: each output pixel the rounded mean of its
        window (``F.interpolate(mode="area")``'s windows), the sums taken in integers, so that a clip's 1.3 M
        values are never converted to float (1.3x faster than interpolating in float, the same bytes)."""
        lead, (rows, columns) = frames.shape[:-3], frames.shape[-3:-1]
        if rows % self.height:
            raise ValueError(f"{rows} rows do not shrink evenly to {self.height}")
        band_rows = rows // self.height
        x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, self.height, band_rows, columns, 3)
        # Each band of rows summed, row by row (2x faster than sum(dim=2)), in int16 while its sums fit.
        band = x[:, :, 0].to(torch.int16 if band_rows * 255 <= torch.iinfo(torch.int16).max else torch.int32)
        for row in range(1, band_rows):
            band += x[:, :, row]
        summed = torch.zeros((len(x), self.height, columns + 1, 3), dtype=torch.int32)  # then its running sum
        torch.cumsum(band, dim=2, dtype=torch.int32, out=summed[:, :, 1:])
        first, last = _area_windows(columns, self.width)
        window = summed.index_select(2, torch.from_numpy(last)).sub_(summed.index_select(2, torch.from_numpy(first)))
        pixels = torch.from_numpy(((last - first) * band_rows).astype(np.float32))[:, None]
        small = window.float().div_(pixels).round_().to(torch.uint8)
        return small.reshape(*lead, self.height, self.width, 3).numpy()

    def store_clips(self, clips: list[np.ndarray]) -> Sequence[np.ndarray]:
        """``store`` of each clip's frames, in one call for all of them (a dozen tensor ops for the lot)."""
        return self.store(np.stack(clips))

    def tensor(self, frames: np.ndarray, view: np.ndarray, background: np.ndarray | None = None) -> torch.Tensor:
        """uint8 [B, T, h, w, 3] (as stored), view [B], background uint8 [B, h, w, 3] -> float32
        [B, 3, T, h, w]: (frame - background) / 255, mirrored where view is 1."""
        if background is None:
            raise ValueError("the foreground input needs each clip's background")
        x = torch.from_numpy(frames).float().sub_(torch.from_numpy(background).float()[:, None]).div_(255.0)
        x = x.permute(0, 4, 1, 2, 3)
        mirrored = torch.from_numpy(np.asarray(view) == 1)
        if mirrored.any():
            x[mirrored] = x[mirrored].flip(-1)
        return x


def _area_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 [out] first and one-past-last input index of each output's window, as adaptive average pooling
    (and ``F.interpolate(mode="area")``) takes them: floor(i * size / out) to ceil((i + 1) * size / out)."""
    i = np.arange(out)
    return i * size // out, -(-(i + 1) * size // out)


VisualInput = CropInput | ForegroundInput

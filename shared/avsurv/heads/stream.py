"""A trained head applied to one camera's clips as they arrive (the platform's anomaly detector).

The clips of a stream come one at a time, in capture order. ``HeadStream`` cuts them into the windows of
``avsurv.heads.windows`` as it goes: a run of consecutive clips gives a full window every ``window`` clips,
and when the run ends (a missing clip, or the caller's :meth:`HeadStream.end`) its rest becomes the window
of the run's last clips. So every clip gets the prediction ``TrainedHead.predict`` gives it on the whole
recording, at most one window (``window`` seconds) later; clips of runs shorter than ``MIN_WINDOW`` get
none.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from avsurv.constants import CLIP_SECONDS
from avsurv.heads.training import TrainedHead
from avsurv.heads.windows import GAP_TOLERANCE_S, MIN_WINDOW

K = TypeVar("K")


@dataclass(frozen=True)
class StreamPrediction(Generic[K]):
    """The head's word on one clip: ``label`` and ``score`` as in ``ClipPredictions``; ``label`` is None
    for a clip of a run too short for a window. ``key`` is whatever the caller passed with the clip."""

    key: K
    label: str | None
    score: float


@dataclass
class _Clip(Generic[K]):
    key: K
    capture_time: float
    z_v: np.ndarray
    z_a: np.ndarray


class HeadStream(Generic[K]):
    """One camera's clips through ``head``; feed them in capture order with :meth:`add`."""

    def __init__(self, head: TrainedHead) -> None:
        self.head = head
        self.window: int = head.config["window"]
        self._recent: deque[_Clip[K]] = deque(maxlen=self.window)  # the run's last clips
        self._run_length = 0
        self._waiting = 0  # clips of the run without a prediction yet (the newest ones)

    @property
    def waiting(self) -> int:
        return self._waiting

    def add(self, key: K, capture_time: float, z_v: np.ndarray, z_a: np.ndarray) -> list[StreamPrediction[K]]:
        """Takes the next clip (z_v, z_a: [D]); returns the predictions this completes, in capture order: the
        rest of the previous run when this clip does not follow it, and a full window when one fills."""
        predictions = [] if self._follows(capture_time) else self.end()
        self._recent.append(_Clip(key, capture_time, np.asarray(z_v, np.float32), np.asarray(z_a, np.float32)))
        self._run_length += 1
        self._waiting += 1
        if self._waiting == self.window:
            predictions += self._predict_newest(self.window)
        return predictions

    def end(self) -> list[StreamPrediction[K]]:
        """Ends the current run (the camera stopped, or its clips stopped coming): predicts its rest."""
        if self._run_length < MIN_WINDOW:
            predictions = [StreamPrediction(c.key, None, float("nan")) for c in self._recent]
        else:
            predictions = self._predict_newest(self._waiting) if self._waiting else []
        self._recent.clear()
        self._run_length = self._waiting = 0
        return predictions

    def _follows(self, capture_time: float) -> bool:
        if not self._recent:
            return True
        return abs(capture_time - self._recent[-1].capture_time - CLIP_SECONDS) <= GAP_TOLERANCE_S

    def _predict_newest(self, count: int) -> list[StreamPrediction[K]]:
        """Predicts the window of the run's last ``min(window, run length)`` clips; returns its newest
        ``count``, the ones still waiting."""
        window = list(self._recent)
        labels, scores = self.head.predict_window(np.stack([c.z_v for c in window]),
                                                  np.stack([c.z_a for c in window]))
        self._waiting -= count
        return [StreamPrediction(c.key, str(label), float(score))
                for c, label, score in zip(window[-count:], labels[-count:], scores[-count:], strict=True)]

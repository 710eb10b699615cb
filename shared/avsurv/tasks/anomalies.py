"""Unsupervised anomaly detection (EPG section 4.3).

The score of clip m is the Eq. 5 distance between its own visual and audio embeddings,
``d(zv_m, za_m)``: a clip whose sound does not fit its picture scores high. The threshold is
``mean + k * std`` of the scores of the training clips (k = ``ANOMALY_STDS`` = 2), one calibration per
model. Consecutive anomalous seconds of one stream merge into one event.

Only clips with audio are scored: a clip whose audio was missing has a silent log-mel, whose embedding
would flag every such second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from avsurv.constants import ANOMALY_STDS, CLIP_SECONDS, W
from avsurv.errors import TaskError
from avsurv.learning.calibration import Calibration
from avsurv.learning.distance import pairwise_distance
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.scores import clip_scores, fit_calibration

_ADJACENT_TOLERANCE_S = 1e-6
"""Clip starts are whole steps of CLIP_SECONDS; the tolerance only absorbs float rounding."""


def anomaly_scores(embeddings: EmbeddingSet, w: float = W) -> np.ndarray:
    """float64 [N]: ``d(z_v, z_a)`` of every clip (Eq. 5), whether or not it has audio."""
    return clip_scores(embeddings.z_v, embeddings.z_a, w)


def novelty_scores(z: np.ndarray, times: np.ndarray, *, k: int = 5, exclusion_s: float = 60.0, w: float = W
                   ) -> np.ndarray:
    """float64 [N]: a one-modality score for comparison with Eq. 5's cross-modal one (EPG Fig. 5 shows
    anomalies only one modality catches): the Eq. 5 distance from each clip's embedding ``z`` [N, D] to
    its k-th nearest clip of the same stream more than ``exclusion_s`` seconds away (``times`` [N]), so
    the seconds of a clip's own event are not its neighbours. A clip with fewer than k such clips scores
    +inf."""
    if k < 1 or exclusion_s < 0:
        raise ValueError(f"k must be >= 1 and the exclusion >= 0, got {k} and {exclusion_s}")
    with torch.no_grad():
        pairs = pairwise_distance(torch.from_numpy(z).double(), torch.from_numpy(z).double(), w).numpy()
    times = np.asarray(times, dtype=np.float64)
    pairs[np.abs(times[:, None] - times[None, :]) <= exclusion_s] = np.inf
    if pairs.shape[1] < k:
        return np.full(len(z), np.inf)
    return np.partition(pairs, k - 1, axis=1)[:, k - 1]


def calibrate(embeddings: EmbeddingSet, *, w: float = W, stds: float = ANOMALY_STDS) -> Calibration:
    """:func:`~avsurv.learning.scores.fit_calibration` on the training clips that have audio."""
    with_audio = embeddings.has_audio
    return fit_calibration(embeddings.z_v[with_audio], embeddings.z_a[with_audio], w=w, stds=stds,
                           model_sha256=embeddings.model_sha256)


@dataclass(frozen=True)
class AnomalyEvent:
    """Consecutive anomalous clips of one stream: media seconds [start, end) of ``source``."""

    camera_id: str
    source: str
    start: float
    end: float
    clips: int
    peak_score: float
    peak_time: float
    """Start of the highest-scoring clip, media seconds."""
    peak_clip_id: str
    threshold: float
    capture_start: float | None
    capture_end: float | None
    """Epoch seconds of start and end, when the clips' capture times are known."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect(embeddings: EmbeddingSet, calibration: Calibration) -> list[AnomalyEvent]:
    """Events of clips with audio scoring above the threshold, ordered by camera, source and start.

    Clips join one event when they share camera and source and their starts are one clip length apart;
    a missing (or silent, or normal) second ends the event.
    """
    models = (calibration.model_sha256, embeddings.model_sha256)
    if all(models) and models[0] != models[1]:
        raise TaskError(f"the calibration belongs to model {models[0][:12]}, the embeddings to "
                        f"{models[1][:12]}; calibrate on this model's training embeddings")
    scores = anomaly_scores(embeddings, calibration.w)
    rows = np.flatnonzero(embeddings.has_audio & (scores > calibration.threshold))
    if rows.size == 0:
        return []
    camera, source, start = embeddings.camera_id, embeddings.source, embeddings.clip_start
    rows = rows[np.lexsort((start[rows], source[rows], camera[rows]))]
    camera, source, start = camera[rows], source[rows], start[rows]
    same_stream = (camera[1:] == camera[:-1]) & (source[1:] == source[:-1])
    adjacent = np.abs(np.diff(start) - CLIP_SECONDS) <= _ADJACENT_TOLERANCE_S
    breaks = np.flatnonzero(~(same_stream & adjacent)) + 1
    return [_event(embeddings, scores, run, calibration.threshold) for run in np.split(rows, breaks)]


def _event(embeddings: EmbeddingSet, scores: np.ndarray, run: np.ndarray, threshold: float) -> AnomalyEvent:
    """One event from the rows of a run, sorted by start."""
    first, last = int(run[0]), int(run[-1])
    peak = int(run[np.argmax(scores[run])])
    capture_start, capture_end = embeddings.capture_time[first], embeddings.capture_time[last]
    return AnomalyEvent(
        camera_id=str(embeddings.camera_id[first]),
        source=str(embeddings.source[first]),
        start=float(embeddings.clip_start[first]),
        end=float(embeddings.clip_start[last] + CLIP_SECONDS),
        clips=int(run.size),
        peak_score=float(scores[peak]),
        peak_time=float(embeddings.clip_start[peak]),
        peak_clip_id=str(embeddings.clip_id[peak]),
        threshold=threshold,
        capture_start=float(capture_start) if np.isfinite(capture_start) else None,
        capture_end=float(capture_end + CLIP_SECONDS) if np.isfinite(capture_end) else None,
    )

"""Unsupervised anomaly detection (EPG section 4.3).

The score of clip m is the Eq. 5 distance between its own visual and audio embeddings,
``d(zv_m, za_m)``: a clip whose sound does not fit its picture scores high. The threshold is
``mean + k * std`` of the scores of the training clips (k = ``ANOMALY_STDS`` = 2), one calibration per
model. Consecutive anomalous seconds of one stream merge into one event.

Only clips with audio are scored: a clip whose audio was missing has a silent log-mel, whose embedding
would flag every such second.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avsurv.constants import ANOMALY_STDS, CLIP_SECONDS, SEARCH_EXCLUSION_S, W
from avsurv.learning.distance import distance, pairwise_distance
from avsurv.tasks.embeddings import EmbeddingSet, TaskError
from avsurv.tasks.normalization import CameraStats

CALIBRATION_FORMAT = "avsurv-calibration-v1"
CALIBRATION_FILE = "calibration.json"
_ADJACENT_TOLERANCE_S = 1e-6
"""Clip starts are whole steps of CLIP_SECONDS; the tolerance only absorbs float rounding."""


def anomaly_scores(embeddings: EmbeddingSet, w: float = W) -> np.ndarray:
    """float64 [N]: ``d(z_v, z_a)`` of every clip (Eq. 5), whether or not it has audio."""
    return clip_scores(embeddings.z_v, embeddings.z_a, w)


def clip_scores(z_v: np.ndarray, z_a: np.ndarray, w: float = W) -> np.ndarray:
    """float64 [N]: Eq. 5 between each clip's z_v and z_a, float32 [N, D] each."""
    with torch.no_grad():
        return distance(torch.from_numpy(z_v).double(), torch.from_numpy(z_a).double(), w).numpy()


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


NOVELTY_K = 5
"""Neighbours of the novelty detector: an event seen a few times before is no longer new."""


def site_novelty(z_v: np.ndarray, z_a: np.ndarray, times: np.ndarray, *, k: int = NOVELTY_K,
                 exclusion_s: float = SEARCH_EXCLUSION_S) -> np.ndarray:
    """float64 [N]: how unlike anything the camera showed before each clip is, in sight and in sound.

    For the clips of one camera (``z_v``, ``z_a`` float32 [N, D], capture or media ``times`` [N] in s):
    each modality is standardized with the camera's own mean and std (:class:`CameraStats`); for clip i
    and modality m, ``n_m(i)`` is the squared Euclidean distance, divided by D, to its k-th nearest clip
    j with ``times[j] <= times[i] - exclusion_s`` (the camera's history, not the seconds of its own
    event); the score is ``1/2 sum_m n_m(i) / median_j n_m(j)`` (medians over the finite values), so
    sight and sound weigh alike whatever their spread. A clip with fewer than k clips of history scores
    +inf: to a camera that has seen nothing yet, everything is new. Why not only Eq. 5: the
    cross-modal distance measures whether sound fits picture, and a horse that sounds like a horse fits.
    """
    if k < 1 or exclusion_s < 0:
        raise ValueError(f"k must be >= 1 and the exclusion >= 0, got {k} and {exclusion_s}")
    if z_v.shape != z_a.shape or z_v.ndim != 2 or len(times) != len(z_v):
        raise ValueError(f"expected z_v, z_a [N, D] and times [N], got {z_v.shape}, {z_a.shape}, {np.shape(times)}")
    times = np.asarray(times, dtype=np.float64)
    history = times[None, :] <= times[:, None] - exclusion_s  # [i, j]: j is in i's history
    total = np.zeros(len(times))
    for x in CameraStats.of(z_v, z_a).standardize(z_v, z_a):
        with torch.no_grad():
            squared = torch.cdist(torch.from_numpy(x).double(), torch.from_numpy(x).double()).pow(2).numpy()
        squared = np.where(history, squared / x.shape[1], np.inf)
        novelty = np.partition(squared, k - 1, axis=1)[:, k - 1] if len(times) >= k else np.full(len(times), np.inf)
        finite = novelty[np.isfinite(novelty)]
        total += novelty / (np.median(finite) if finite.size and np.median(finite) > 0 else 1.0)
    return total / 2


@dataclass(frozen=True)
class Calibration:
    """Score statistics of the training clips of one model; ``threshold = mean + stds * std``."""

    mean: float
    std: float
    stds: float = ANOMALY_STDS
    w: float = W
    clips: int = 0
    model_sha256: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std >= 0):
            raise TaskError(f"calibration needs a finite mean and std >= 0, got {self.mean} and {self.std}")
        if not (math.isfinite(self.stds) and 0.0 <= self.w <= 1.0):
            raise TaskError(f"calibration needs finite stds and w in [0, 1], got {self.stds} and {self.w}")

    @classmethod
    def fit(cls, z_v: np.ndarray, z_a: np.ndarray, *, w: float = W, stds: float = ANOMALY_STDS,
            model_sha256: str = "") -> Calibration:
        """Mean and (population) std of the scores of training clips, float32 [N, D] each, all with audio."""
        if not 0.0 <= w <= 1.0:
            raise TaskError(f"the distance weight w must lie in [0, 1], got {w}")
        scores = clip_scores(np.asarray(z_v, dtype=np.float32), np.asarray(z_a, dtype=np.float32), w)
        if scores.size < 2:
            raise TaskError(f"calibration needs at least 2 clips with audio, got {scores.size}")
        return cls(mean=float(scores.mean()), std=float(scores.std()), stds=stds, w=w, clips=int(scores.size),
                   model_sha256=model_sha256)

    @property
    def threshold(self) -> float:
        return self.mean + self.stds * self.std

    def with_stds(self, stds: float) -> Calibration:
        """The same statistics with another multiple of std in the threshold."""
        return replace(self, stds=stds)

    def to_dict(self) -> dict[str, Any]:
        # The threshold is written for people reading the file; load() checks it still agrees.
        return {"format": CALIBRATION_FORMAT, **asdict(self), "threshold": self.threshold}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise TaskError(f"{path}: no such calibration file")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TaskError(f"{path}: not JSON ({error})") from None
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise TaskError(f"{path}: not a calibration file (format must be {CALIBRATION_FORMAT!r})")
        try:
            calibration = cls(mean=float(data["mean"]), std=float(data["std"]), stds=float(data["stds"]),
                              w=float(data["w"]), clips=int(data["clips"]),
                              model_sha256=str(data["model_sha256"]))
        except TaskError as error:
            raise TaskError(f"{path}: {error}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise TaskError(f"{path}: missing or bad field {error}") from None
        if "threshold" in data and not math.isclose(float(data["threshold"]), calibration.threshold,
                                                    rel_tol=1e-9, abs_tol=1e-12):
            raise TaskError(f"{path}: threshold {data['threshold']} is not mean + stds * std "
                            f"= {calibration.threshold}; edit stds, not threshold")
        return calibration


def calibrate(embeddings: EmbeddingSet, *, w: float = W, stds: float = ANOMALY_STDS) -> Calibration:
    """:meth:`Calibration.fit` on the training clips that have audio."""
    with_audio = embeddings.has_audio
    return Calibration.fit(embeddings.z_v[with_audio], embeddings.z_a[with_audio], w=w, stds=stds,
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

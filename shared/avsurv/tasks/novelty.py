"""Site novelty: how unlike anything its camera showed before a clip is, in sight and in sound (issue 12
item 5; a detector beside the paper's Eq. 5, which measures whether sound fits picture: a horse that
sounds like a horse fits).

For one camera, each modality m is standardized with the camera's own statistics (:class:`CameraStats`);
``n_m(i)`` is the squared Euclidean distance, divided by D, from clip i to its k-th nearest clip j of the
camera's history, ``times[j] <= times[i] - exclusion_s`` (not the seconds of its own event); the score is
``1/2 sum_m n_m(i) / s_m``, with ``s_m`` the median of ``n_m`` over normal clips, so sight and sound weigh
alike whatever their spread. A clip with fewer than k clips of history has no score.

Two uses of one computation:
- :func:`site_novelty` scores a whole recording at once (the benchmark): statistics and medians over it
  (:func:`feature_novelty`: the same over any list of per-clip features);
- :class:`NoveltyCalibration` is fitted on a camera's stored clips (the platform's embedder, per model
  version) and scores live clips against a :class:`CameraHistory` (the anomaly detector): statistics and
  medians of the stored clips, threshold ``mean + stds * std`` of their scores, each stored clip scored
  against the others on both sides of it (a live clip has a whole history).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from avsurv.constants import ANOMALY_STDS, NOVELTY_EXCLUSION_S
from avsurv.errors import TaskError
from avsurv.learning.calibration import Calibration
from avsurv.learning.normalization import CameraStats, standardized

NOVELTY_K = 5
"""Neighbours of the novelty detector: an event seen a few times before is no longer new."""
NOVELTY_HISTORY = 1800
"""Clips of history kept per camera (half an hour at one clip per second)."""
NOVELTY_FORMAT = "avsurv-novelty-v1"


def history_distances(x: np.ndarray, times: np.ndarray, k: int, exclusion_s: float, *,
                      before_only: bool = True) -> np.ndarray:
    """float64 [N]: for standardized embeddings ``x`` [N, D] of one camera at ``times`` [N], the squared
    distance / D of each clip to its k-th nearest clip at least ``exclusion_s`` earlier (``before_only``)
    or at least ``exclusion_s`` away on either side; +inf with fewer."""
    _check(k, exclusion_s)
    x = np.asarray(x, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    squared = np.maximum(_squared(x, x), 0.0)
    gap = times[:, None] - times[None, :]
    squared[~(gap >= exclusion_s if before_only else np.abs(gap) >= exclusion_s)] = np.inf
    if len(x) < k:
        return np.full(len(x), np.inf)
    return np.partition(squared, k - 1, axis=1)[:, k - 1] / x.shape[1]


def site_novelty(z_v: np.ndarray, z_a: np.ndarray, times: np.ndarray, *, k: int = NOVELTY_K,
                 exclusion_s: float = NOVELTY_EXCLUSION_S) -> np.ndarray:
    """float64 [N]: the novelty of every clip of one camera's recording (``z_v``, ``z_a`` float32 [N, D],
    ``times`` [N] s), statistics and medians over the whole recording; +inf without k clips of history."""
    if z_v.shape != z_a.shape or z_v.ndim != 2 or len(times) != len(z_v):
        raise ValueError(f"expected z_v, z_a [N, D] and times [N], got {z_v.shape}, {z_a.shape}, {np.shape(times)}")
    return feature_novelty([z_v, z_a], times, k=k, exclusion_s=exclusion_s)


def feature_novelty(features: Sequence[np.ndarray], times: np.ndarray, *, k: int = NOVELTY_K,
                    exclusion_s: float = NOVELTY_EXCLUSION_S) -> np.ndarray:
    """float64 [N]: site novelty over any per-clip features of one camera's recording, ``features`` a list
    of [N, D_m] (the benchmark's variants: one modality alone, or an embedding with the clip's spectrum):
    each standardized with its own mean and variance over the recording, its term ``n_m / s_m`` as in
    :func:`site_novelty`, the score the mean of the terms; +inf without k clips of history."""
    if not features or any(np.ndim(x) != 2 or len(x) != len(times) for x in features):
        raise ValueError(f"expected features [N, D] and times [N], got {[np.shape(x) for x in features]}, "
                         f"{np.shape(times)}")
    _check(k, exclusion_s)
    terms = [history_distances(standardized(x), times, k, exclusion_s) for x in features]
    return _combined(terms, [_median(t) for t in terms])


@dataclass(frozen=True, eq=False)
class CameraHistory:
    """The last ``capacity`` clips of one camera in one model's space: raw z_v, z_a [H, D], times [H] and
    ``normal`` [H] (False: the clip was flagged, so it is no example of what normal looks like)."""

    z_v: np.ndarray
    z_a: np.ndarray
    times: np.ndarray
    capacity: int = NOVELTY_HISTORY
    normal: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @classmethod
    def empty(cls, dim: int, capacity: int = NOVELTY_HISTORY) -> CameraHistory:
        return cls(np.zeros((0, dim), np.float32), np.zeros((0, dim), np.float32), np.zeros(0), capacity)

    def added(self, z_v: np.ndarray, z_a: np.ndarray, times: np.ndarray,
              normal: np.ndarray | None = None) -> CameraHistory:
        """This history and the clips ``z_v``, ``z_a`` [M, D] at ``times`` [M] (``normal`` [M], all True
        when not given), the oldest beyond capacity dropped."""
        keep = slice(-self.capacity, None)
        normal = np.ones(len(times), bool) if normal is None else np.asarray(normal, bool)
        return CameraHistory(np.concatenate([self.z_v, z_v])[keep], np.concatenate([self.z_a, z_a])[keep],
                             np.concatenate([self.times, np.asarray(times, np.float64)])[keep], self.capacity,
                             np.concatenate([self.normal, normal])[keep])

    def flagged(self, stamps_ms: set[int]) -> CameraHistory:
        """This history with the clips that start at ``stamps_ms`` (integer milliseconds, as in clip ids)
        marked not normal."""
        normal = self.normal & ~np.isin(np.round(self.times * 1000).astype(np.int64), list(stamps_ms))
        return CameraHistory(self.z_v, self.z_a, self.times, self.capacity, normal)

    def nearest_normal(self, z_v: np.ndarray, z_a: np.ndarray, w: float, before: float, k: int,
                       separation_s: float) -> list[float]:
        """Times of up to ``k`` normal clips before ``before`` nearest to the clip ``z_v``, ``z_a`` [D] by the
        audio-visual distance of search (the mean of Eq. 5 in each modality), nearest first, each at least
        ``separation_s`` from those picked before it (else the seconds around one moment fill the list)."""
        rows = np.flatnonzero(self.normal & (self.times < before))
        if rows.size == 0:
            return []
        # Imported here: the registry, which the ingest service loads, reads this module without torch.
        import torch

        from avsurv.learning.distance import pairwise_distance

        with torch.no_grad():
            d = sum(pairwise_distance(torch.from_numpy(q[None]).double(), torch.from_numpy(h[rows]).double(), w)[0]
                    for q, h in ((z_v, self.z_v), (z_a, self.z_a))).numpy()
        picked: list[float] = []
        for time in self.times[rows[np.argsort(d, kind="stable")]]:
            if all(abs(time - p) >= separation_s for p in picked):
                picked.append(float(time))
                if len(picked) == k:
                    break
        return picked


@dataclass(frozen=True, eq=False)
class NoveltyCalibration:
    """One camera's novelty in one model's space: its statistics, the medians ``scales`` (visual, audio)
    and the threshold ``calibration`` (its ``w`` is the model's, for the record)."""

    stats: CameraStats
    scales: tuple[float, float]
    calibration: Calibration
    k: int = NOVELTY_K
    exclusion_s: float = NOVELTY_EXCLUSION_S

    @classmethod
    def fit(cls, z_v: np.ndarray, z_a: np.ndarray, times: np.ndarray, *, w: float, stds: float = ANOMALY_STDS,
            k: int = NOVELTY_K, exclusion_s: float = NOVELTY_EXCLUSION_S, model_sha256: str = "") -> NoveltyCalibration:
        """Fitted on clips taken as normal (a camera's stored clips), each scored against all the others at
        least ``exclusion_s`` away, before or after it: as many neighbours as a live clip has in its history.
        Against only those before it, a clip has half as many on average and its distances are larger: on the
        site-scale scene (docs/RESULTS.md) that put the threshold at 20 to 25 times the median live score, and
        not one clip of the held-back 15 minutes was flagged."""
        stats = CameraStats.of(z_v, z_a)
        terms = [history_distances(x, times, k, exclusion_s, before_only=False)
                 for x in stats.standardize(z_v, z_a)]
        scales = (_median(terms[0]), _median(terms[1]))
        scores = _combined(terms, scales)
        scores = scores[np.isfinite(scores)]
        if scores.size < 2:
            raise TaskError(f"novelty needs at least 2 clips with {k} others {exclusion_s:g} s or more away, got "
                            f"{scores.size} of {len(times)} clips")
        return cls(stats, scales, Calibration.of_scores(scores, w=w, stds=stds, model_sha256=model_sha256), k,
                   exclusion_s)

    def score(self, z_v: np.ndarray, z_a: np.ndarray, time: float, history: CameraHistory) -> float | None:
        """The novelty of one clip (``z_v``, ``z_a`` [D]) at ``time`` against ``history``; None without k
        clips of history before ``time - exclusion_s``."""
        terms = self.modalities(z_v, z_a, time, history)
        return None if terms is None else (terms[0] + terms[1]) / 2

    def modalities(self, z_v: np.ndarray, z_a: np.ndarray, time: float,
                   history: CameraHistory) -> tuple[float, float] | None:
        """The (visual, audio) terms of :meth:`score`, each on the scale of its median (the score is their
        mean): which modality makes the clip new."""
        earlier = history.times <= time - self.exclusion_s
        if int(earlier.sum()) < self.k:
            return None
        query = self.stats.standardize(z_v[None], z_a[None])
        past = self.stats.standardize(history.z_v[earlier], history.z_a[earlier])
        visual, audio = (np.partition(np.maximum(_squared(q, h), 0.0)[0], self.k - 1)[self.k - 1] / q.shape[1]
                         for q, h in zip(query, past, strict=True))
        return float(visual / self.scales[0]), float(audio / self.scales[1])

    def to_dict(self) -> dict:
        return {"format": NOVELTY_FORMAT, "stats": self.stats.to_dict(), "scales": list(self.scales),
                "calibration": self.calibration.to_dict(), "k": self.k, "exclusion_s": self.exclusion_s}

    @classmethod
    def from_dict(cls, data: dict) -> NoveltyCalibration:
        """Reads :meth:`to_dict`'s output; anything else raises a one-line TaskError."""
        if not isinstance(data, dict) or data.get("format") != NOVELTY_FORMAT:
            raise TaskError(f"not a novelty calibration (format must be {NOVELTY_FORMAT!r})")
        try:
            scales = tuple(float(s) for s in data["scales"])
            k, exclusion_s = int(data["k"]), float(data["exclusion_s"])
        except (KeyError, TypeError, ValueError) as error:
            raise TaskError(f"novelty calibration: missing or bad field {error}") from None
        if len(scales) != 2 or min(scales) <= 0:
            raise TaskError(f"novelty calibration: scales must be two positive numbers, got {data['scales']}")
        _check(k, exclusion_s)
        return cls(CameraStats.from_dict(data["stats"]), (scales[0], scales[1]),
                   Calibration.from_dict(data["calibration"]), k, exclusion_s)


def _check(k: int, exclusion_s: float) -> None:
    if k < 1 or exclusion_s < 0:
        raise ValueError(f"k must be >= 1 and the exclusion >= 0, got {k} and {exclusion_s}")


def _squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] squared Euclidean distances between the rows of ``a`` [N, D] and ``b`` [M, D]."""
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T


def _median(values: np.ndarray) -> float:
    """Median of the finite values; 1 when there are none or it is 0, so a scale never divides by 0."""
    finite = values[np.isfinite(values)]
    median = float(np.median(finite)) if finite.size else 0.0
    return median if median > 0 else 1.0


def _combined(terms: list[np.ndarray], scales: tuple[float, ...] | list[float]) -> np.ndarray:
    """The mean of the terms, each over its scale."""
    return sum(t / s for t, s in zip(terms, scales, strict=True)) / len(terms)

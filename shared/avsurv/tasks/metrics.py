"""Scores of the evaluation suite: ROC-AUC and precision/recall of anomaly scores, precision@k and average
precision of ranked search results, and the event-level precision/recall of anomaly events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative,
    ties counting one half (the Mann-Whitney U statistic over n_pos * n_neg). NaN without both classes."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be [N] each, got {list(scores.shape)} and {list(positive.shape)}")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: ties count 1/2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    ordered, hits = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]  # the last row of each distinct score
    tp, fp = np.cumsum(hits)[last], np.cumsum(~hits)[last]
    return (np.r_[0.0, fp / max(1, (~positive).sum())], np.r_[0.0, tp / max(1, positive.sum())])


def precision_recall(flagged: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of boolean flags; precision is NaN when nothing is flagged."""
    flagged, positive = np.asarray(flagged, dtype=bool), np.asarray(positive, dtype=bool)
    hits = int((flagged & positive).sum())
    precision = hits / int(flagged.sum()) if flagged.any() else float("nan")
    recall = hits / int(positive.sum()) if positive.any() else float("nan")
    return precision, recall


def precision_at_k(relevant: np.ndarray, k: int) -> float:
    """Share of relevant results among the first ``k`` of a ranked list (missing results count as not
    relevant, so a list shorter than ``k`` cannot score 1)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(np.asarray(relevant[:k], dtype=bool).sum() / k)


def average_precision(relevant: np.ndarray) -> float:
    """``AP = 1/R sum_k P@k * rel_k`` over a whole ranked list with R relevant results in it; NaN if R = 0."""
    relevant = np.asarray(relevant, dtype=bool)
    if not relevant.any():
        return float("nan")
    precision = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
    return float(precision[relevant].mean())


def anomalous_episodes(anomalous: np.ndarray) -> np.ndarray:
    """int [E, 2]: ``[first, end)`` seconds of each maximal run of True in one camera's per-second flags."""
    edges = np.diff(np.r_[0, np.asarray(anomalous, dtype=np.int8), 0])
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


@dataclass(frozen=True)
class EventScores:
    """Counts behind event precision and recall (:func:`event_precision_recall`)."""

    events: int
    true_events: int
    episodes: int
    found_episodes: int

    @property
    def precision(self) -> float:
        return self.true_events / self.events if self.events else float("nan")

    @property
    def recall(self) -> float:
        return self.found_episodes / self.episodes if self.episodes else float("nan")


def event_precision_recall(events: Sequence[tuple[str, float, float]],
                           anomalous: Mapping[str, np.ndarray]) -> EventScores:
    """Reported events against per-second ground truth.

    ``events`` are ``(camera_id, start, end)`` in seconds on the ground truth's time line, and
    ``anomalous[camera_id]`` flags each second ``[t, t + 1)`` of that camera. An event overlaps second t
    when ``start < t + 1`` and ``end > t``. Precision: the share of events that overlap at least one
    anomalous second of their camera. Recall: the share of anomalous *episodes* (maximal runs of
    consecutive anomalous seconds of one camera) that at least one event of that camera overlaps, so an
    anomaly split into three events still counts once, and so does a camera with an event on every second.

    >>> flags = np.array([0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1], dtype=bool)  # episodes [3, 5), [8, 9), [10, 11)
    >>> s = event_precision_recall([("cam0", 2, 4), ("cam0", 6, 7)], {"cam0": flags})
    >>> (s.precision, round(s.recall, 3))
    (0.5, 0.333)
    """
    spans = {camera: anomalous_episodes(flags) for camera, flags in anomalous.items()}
    found = {camera: np.zeros(len(runs), dtype=bool) for camera, runs in spans.items()}
    true_events = 0
    for camera, start, end in events:
        if camera not in spans:
            continue
        overlaps = (spans[camera][:, 0] < end) & (spans[camera][:, 1] > start)
        true_events += bool(overlaps.any())
        found[camera] |= overlaps
    return EventScores(events=len(events), true_events=true_events, episodes=sum(map(len, found.values())),
                       found_episodes=sum(int(flags.sum()) for flags in found.values()))


def label_precision_at_k(query_labels: Sequence[str], result_labels: Sequence[Sequence[str]], k: int) -> float:
    """Mean over queries of :func:`precision_at_k`, a result being relevant when its label is its query's
    (missing results count as not relevant); NaN without queries."""
    if len(query_labels) != len(result_labels):
        raise ValueError(f"one result list per query, got {len(query_labels)} queries and {len(result_labels)} lists")
    if not query_labels:
        return float("nan")
    return float(np.mean([precision_at_k(np.asarray(found, dtype=object) == query, k)
                          for query, found in zip(query_labels, result_labels, strict=True)]))


def best_precision_at_k(query_time: float, relevant_times: Sequence[float], k: int, exclusion_s: float,
                        separation_s: float) -> float:
    """The precision@k of a perfect ranking for one query at ``query_time``: relevant clips at
    ``relevant_times`` (capture seconds, every camera on one time line) are candidates when at least
    ``exclusion_s`` from the query, and a result must lie at least ``separation_s`` from each one ranked
    above it, as search does. A scene with few separate moments of a class caps what any embedding can
    score; taking the earliest candidate that fits, in time order, keeps the most such moments."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    kept: list[float] = []
    for time in sorted(t for t in relevant_times if abs(t - query_time) >= exclusion_s):
        if not kept or time - kept[-1] >= separation_s:
            kept.append(time)
    return min(len(kept), k) / k

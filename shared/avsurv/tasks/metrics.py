"""Scores of the evaluation suite: ROC-AUC and precision/recall of anomaly scores, precision@k and average
precision of ranked search results."""

from __future__ import annotations

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

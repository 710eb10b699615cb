"""The evaluation suite's scores against plain-loop versions of their definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from avsurv.learning.distance import distance
from avsurv.tasks.anomalies import novelty_scores
from avsurv.tasks.metrics import (
    anomalous_episodes,
    average_precision,
    best_precision_at_k,
    event_precision_recall,
    label_precision_at_k,
    precision_at_k,
    precision_recall,
    roc_auc,
    roc_curve,
)


def roc_auc_loop(scores: list[float], positive: list[bool]) -> float:
    wins = pairs = 0.0
    for s_p, p in zip(scores, positive, strict=True):
        for s_n, n in zip(scores, positive, strict=True):
            if p and not n:
                pairs += 1
                wins += 1.0 if s_p > s_n else 0.5 if s_p == s_n else 0.0
    return wins / pairs


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_pair_counting_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    positive = rng.random(40) < 0.3
    assert roc_auc(scores, positive) == pytest.approx(roc_auc_loop(scores.tolist(), positive.tolist()))


def test_roc_auc_edge_cases() -> None:
    assert roc_auc(np.array([3.0, 2.0, 1.0]), np.array([True, False, False])) == 1.0
    assert roc_auc(np.array([1.0, 2.0, 3.0]), np.array([True, False, False])) == 0.0
    assert math.isnan(roc_auc(np.array([1.0, 2.0]), np.array([False, False])))
    with pytest.raises(ValueError, match="must be"):
        roc_auc(np.zeros(3), np.zeros(2, dtype=bool))


def test_roc_curve_area_is_the_auc() -> None:
    rng = np.random.default_rng(7)
    scores, positive = rng.integers(0, 8, 60).astype(float), rng.random(60) < 0.4
    fpr, tpr = roc_curve(scores, positive)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(scores, positive))


def test_precision_recall_counts() -> None:
    flagged = np.array([True, True, False, False, True])
    positive = np.array([True, False, True, False, True])
    assert precision_recall(flagged, positive) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    precision, recall = precision_recall(np.zeros(5, dtype=bool), positive)
    assert math.isnan(precision) and recall == 0.0


def average_precision_loop(relevant: list[bool]) -> float:
    hits, total = 0, 0.0
    for rank, rel in enumerate(relevant, start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / hits if hits else math.nan


@pytest.mark.parametrize("relevant", [[1, 0, 1, 1, 0], [0, 0, 1], [1], [0, 1, 0, 0, 0, 1, 1]])
def test_average_precision_and_precision_at_k_match_loops(relevant: list[int]) -> None:
    flags = np.array(relevant, dtype=bool)
    assert average_precision(flags) == pytest.approx(average_precision_loop(flags.tolist()))
    for k in (1, 5):
        assert precision_at_k(flags, k) == pytest.approx(sum(relevant[:k]) / k)
    assert math.isnan(average_precision(np.zeros(3, dtype=bool)))
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(flags, 0)


def test_anomalous_episodes_are_maximal_runs() -> None:
    assert anomalous_episodes(np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool)).tolist() == [[0, 2], [3, 4], [6, 7]]
    assert anomalous_episodes(np.ones(3, dtype=bool)).tolist() == [[0, 3]]
    assert anomalous_episodes(np.zeros(3, dtype=bool)).shape == (0, 2)


def test_event_precision_counts_events_and_recall_counts_episodes() -> None:
    anomalous = {"cam0": np.array([0, 1, 1, 1, 0, 0, 0, 0, 1, 1], dtype=bool),  # episodes [1, 4), [8, 10)
                 "cam1": np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=bool)}  # episodes [0, 1), [5, 6)
    events = [("cam0", 1, 2), ("cam0", 2, 3), ("cam0", 3.5, 4.5),  # one episode, found three times
              ("cam0", 5, 7),  # between episodes
              ("cam1", 4, 5),  # ends where the episode [5, 6) starts: no overlap
              ("cam1", 0.5, 1.5),
              ("cam2", 0, 3)]  # a camera without anomalies
    scores = event_precision_recall(events, anomalous)
    assert (scores.events, scores.true_events, scores.episodes, scores.found_episodes) == (7, 4, 4, 2)
    assert (scores.precision, scores.recall) == (pytest.approx(4 / 7), 0.5)
    nothing = event_precision_recall([], anomalous)
    assert math.isnan(nothing.precision) and nothing.recall == 0.0
    assert math.isnan(event_precision_recall(events, {"cam0": np.zeros(10, dtype=bool)}).recall)


def test_label_precision_at_k_is_the_mean_over_queries() -> None:
    found = [["car", "car", "bus", "car", "background", "car"], ["bus"]]  # a short list: missing results miss
    assert label_precision_at_k(["car", "bus"], found, k=5) == pytest.approx((3 / 5 + 1 / 5) / 2)
    assert label_precision_at_k(["car"], [[]], k=5) == 0.0
    assert math.isnan(label_precision_at_k([], [], k=5))
    with pytest.raises(ValueError, match="one result list per query"):
        label_precision_at_k(["car"], [], k=5)


def best_precision_loop(query: float, times: list[float], k: int, exclusion: float, separation: float) -> float:
    """The largest set of candidates pairwise at least ``separation`` apart, by trying every subset."""
    candidates = [t for t in times if abs(t - query) >= exclusion]
    best = 0
    for mask in range(1 << len(candidates)):
        chosen = sorted(t for i, t in enumerate(candidates) if mask >> i & 1)
        if all(b - a >= separation for a, b in itertools.pairwise(chosen)):
            best = max(best, len(chosen))
    return min(best, k) / k


def test_best_precision_at_k_is_the_largest_separated_set_of_relevant_clips() -> None:
    # Around the query at 50: 45 and 52 are excluded; 60, 62 and 64 hold two moments 5 s apart, 70 a third.
    assert best_precision_at_k(50.0, [45.0, 52.0, 60.0, 62.0, 64.0, 70.0], 5, 10.0, 4.0) == pytest.approx(3 / 5)
    assert best_precision_at_k(50.0, [], 5, 10.0, 5.0) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        times = rng.integers(0, 40, rng.integers(0, 11)).astype(float).tolist()
        query, k = float(rng.integers(0, 40)), int(rng.integers(1, 6))
        expected = best_precision_loop(query, times, k, 5.0, 3.0)
        assert best_precision_at_k(query, times, k, 5.0, 3.0) == pytest.approx(expected)
    with pytest.raises(ValueError, match="k must be at least 1"):
        best_precision_at_k(0.0, [1.0], 0, 0.0, 0.0)


def novelty_loop(z: np.ndarray, times: np.ndarray, k: int, exclusion_s: float, w: float) -> list[float]:
    import torch

    out = []
    for i in range(len(z)):
        far = [float(distance(torch.from_numpy(z[i]).double(), torch.from_numpy(z[j]).double(), w))
               for j in range(len(z)) if abs(times[i] - times[j]) > exclusion_s]
        out.append(sorted(far)[k - 1] if len(far) >= k else math.inf)
    return out


@pytest.mark.parametrize(("k", "exclusion_s"), [(1, 0.0), (3, 4.0), (5, 10.0)])
def test_novelty_scores_match_loop(k: int, exclusion_s: float) -> None:
    rng = np.random.default_rng(k)
    z, times = rng.normal(size=(24, 6)).astype(np.float32), np.arange(24, dtype=float)
    expected = novelty_loop(z, times, k, exclusion_s, w=0.5)
    assert novelty_scores(z, times, k=k, exclusion_s=exclusion_s) == pytest.approx(expected, rel=1e-9)


def test_novelty_scores_flag_the_odd_clip_out() -> None:
    z = np.zeros((30, 4), dtype=np.float32)
    z[:, 0] = 1.0
    z[12] = [0.0, 5.0, 0.0, 0.0]
    scores = novelty_scores(z, np.arange(30, dtype=float), k=3, exclusion_s=2.0)
    assert scores.argmax() == 12 and np.count_nonzero(scores > 1e-9) == 1

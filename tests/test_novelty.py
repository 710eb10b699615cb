"""The site novelty detector (avsurv.tasks.anomalies.site_novelty) against a plain loop."""

import math

import numpy as np
import pytest

from avsurv.tasks.anomalies import site_novelty


def loop_novelty(z_v: np.ndarray, z_a: np.ndarray, times: np.ndarray, k: int, exclusion_s: float) -> np.ndarray:
    n = len(times)
    per_modality = []
    for z in (z_v.astype(np.float64), z_a.astype(np.float64)):
        x = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
        novelty = []
        for i in range(n):
            distances = sorted(float(((x[i] - x[j]) ** 2).sum()) / x.shape[1]
                               for j in range(n) if times[j] <= times[i] - exclusion_s)
            novelty.append(distances[k - 1] if len(distances) >= k else math.inf)
        finite = [v for v in novelty if math.isfinite(v)]
        median = float(np.median(finite))
        per_modality.append([v / median for v in novelty])
    return np.array([(a + b) / 2 for a, b in zip(*per_modality, strict=True)])


def test_site_novelty_matches_the_loop() -> None:
    rng = np.random.default_rng(0)
    z_v, z_a = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(40, 6)).astype(np.float32) * 3
    times = np.arange(40, dtype=np.float64) * 2
    got, expected = site_novelty(z_v, z_a, times, k=3, exclusion_s=10), loop_novelty(z_v, z_a, times, 3, 10)
    assert np.isinf(got[:7]).all() and np.isinf(expected[:7]).all() and np.isfinite(got[7])  # < 3 clips 10 s before
    np.testing.assert_allclose(got[7:], expected[7:], rtol=1e-5)


def test_a_clip_unlike_the_history_scores_highest() -> None:
    rng = np.random.default_rng(1)
    z_v, z_a = rng.normal(size=(200, 8)).astype(np.float32), rng.normal(size=(200, 8)).astype(np.float32)
    z_v[150] += 12  # a sight never seen before; its sound is ordinary
    scores = site_novelty(z_v, z_a, np.arange(200.0))
    assert int(np.argmax(np.where(np.isfinite(scores), scores, -1))) == 150


def test_site_novelty_validates() -> None:
    z = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="k must be"):
        site_novelty(z, z, np.arange(3.0), k=0)
    with pytest.raises(ValueError, match="expected"):
        site_novelty(z, z[:2], np.arange(3.0))

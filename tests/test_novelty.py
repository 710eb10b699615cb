"""The site novelty detector (avsurv.tasks.novelty) against plain loops: the whole-recording score of the
benchmark, and the calibration and live score of the platform's detector."""

import math

import numpy as np
import pytest

from avsurv.errors import TaskError
from avsurv.tasks.novelty import CameraHistory, NoveltyCalibration, feature_novelty, site_novelty


def loop_terms(features: list[np.ndarray], times: np.ndarray, k: int, exclusion_s: float,
               before_only: bool = True) -> list[list[float]]:
    """Per feature, each clip's squared distance / D to its k-th nearest clip at least ``exclusion_s``
    earlier (or away on either side), standardized with the mean and variance of all the clips."""
    per_modality = []
    for z in (f.astype(np.float64) for f in features):
        x = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
        novelty = []
        for i in range(len(times)):
            gaps = [times[i] - times[j] if before_only else abs(times[i] - times[j]) for j in range(len(times))]
            distances = sorted(float(((x[i] - x[j]) ** 2).sum()) / x.shape[1]
                               for j in range(len(times)) if gaps[j] >= exclusion_s)
            novelty.append(distances[k - 1] if len(distances) >= k else math.inf)
        per_modality.append(novelty)
    return per_modality


def loop_novelty(features: list[np.ndarray], times: np.ndarray, k: int, exclusion_s: float) -> np.ndarray:
    per_modality = []
    for novelty in loop_terms(features, times, k, exclusion_s):
        median = float(np.median([v for v in novelty if math.isfinite(v)]))
        per_modality.append([v / median for v in novelty])
    return np.array([sum(terms) / len(terms) for terms in zip(*per_modality, strict=True)])


def test_site_novelty_matches_the_loop() -> None:
    rng = np.random.default_rng(0)
    z_v, z_a = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(40, 6)).astype(np.float32) * 3
    times = np.arange(40, dtype=np.float64) * 2
    got, expected = site_novelty(z_v, z_a, times, k=3, exclusion_s=10), loop_novelty([z_v, z_a], times, 3, 10)
    assert np.isinf(got[:7]).all() and np.isinf(expected[:7]).all() and np.isfinite(got[7])  # < 3 clips 10 s before
    np.testing.assert_allclose(got[7:], expected[7:], rtol=1e-5)


def test_feature_novelty_matches_the_loop_for_any_number_of_features() -> None:
    rng = np.random.default_rng(3)
    times = np.arange(30, dtype=np.float64)
    features = [rng.normal(size=(30, 4)) * 2, rng.normal(size=(30, 9)).astype(np.float32), rng.gamma(2.0, size=(30, 3))]
    for chosen in ([features[0]], features):
        got, expected = feature_novelty(chosen, times, k=2, exclusion_s=5), loop_novelty(chosen, times, 2, 5)
        assert np.isinf(got[:6]).all() and np.isinf(expected[:6]).all()
        np.testing.assert_allclose(got[6:], expected[6:], rtol=1e-5)
    with pytest.raises(ValueError, match="expected features"):
        feature_novelty([features[0], features[1][:29]], times)
    with pytest.raises(ValueError, match="expected features"):
        feature_novelty([], times)


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


def test_the_calibration_and_live_score_match_loops() -> None:
    rng = np.random.default_rng(2)
    z_v, z_a = rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(50, 6)).astype(np.float32) * 2
    times = np.arange(50, dtype=np.float64)
    fitted = NoveltyCalibration.fit(z_v, z_a, times, w=0.8, stds=1.5, k=3, exclusion_s=10)
    terms = loop_terms([z_v, z_a], times, 3, 10, before_only=False)  # stored clips: neighbours on both sides
    medians = [float(np.median([v for v in m if math.isfinite(v)])) for m in terms]
    scores = [(a / medians[0] + b / medians[1]) / 2 for a, b in zip(*terms, strict=True) if math.isfinite(a)]
    assert fitted.scales == pytest.approx(medians, rel=1e-6)
    assert (fitted.calibration.mean, fitted.calibration.std) == pytest.approx((np.mean(scores), np.std(scores)),
                                                                              rel=1e-6)
    assert (fitted.calibration.w, fitted.calibration.stds, fitted.calibration.clips) == (0.8, 1.5, len(scores))
    # Live: a new clip against the stored ones, with the stored clips' statistics and medians.
    history = CameraHistory.empty(6).added(z_v, z_a, times)
    new_v, new_a = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    mean_v, mean_a = z_v.astype(np.float64).mean(0), z_a.astype(np.float64).mean(0)
    std_v, std_a = np.sqrt(z_v.astype(np.float64).var(0) + 1e-5), np.sqrt(z_a.astype(np.float64).var(0) + 1e-5)
    expected = []
    for new, z, mean, std in ((new_v, z_v, mean_v, std_v), (new_a, z_a, mean_a, std_a)):
        q, past = (new - mean) / std, (z[times <= 45.0] - mean) / std
        expected.append(sorted(float(((q - p) ** 2).sum()) / 6 for p in past)[2])
    got = fitted.score(new_v, new_a, 55.0, history)
    assert got == pytest.approx((expected[0] / medians[0] + expected[1] / medians[1]) / 2, rel=1e-5)
    assert fitted.score(new_v, new_a, 12.0, history) is not None  # the clips at 0, 1, 2 s: k = 3 of history
    assert fitted.score(new_v, new_a, 11.9, history) is None  # two
    again = NoveltyCalibration.from_dict(fitted.to_dict())
    assert again.score(new_v, new_a, 55.0, history) == pytest.approx(got, rel=1e-9)


def test_a_camera_calibrated_on_its_stored_clips_flags_its_live_clips_at_the_stated_rate() -> None:
    """Live clips have a whole history of neighbours: the calibration's clips must too, else the threshold
    sits above anything a live clip scores (fitted against the clips before each one, it flagged none here)."""
    rng = np.random.default_rng(4)
    z_v, z_a = rng.normal(size=(1200, 8)).astype(np.float32), rng.normal(size=(1200, 8)).astype(np.float32)
    times = np.arange(1200, dtype=np.float64)
    fitted = NoveltyCalibration.fit(z_v[:600], z_a[:600], times[:600], w=0.5, stds=2.0)
    history = CameraHistory.empty(8).added(z_v[:600], z_a[:600], times[:600])
    flagged = []
    for i in range(600, 1200):  # from the same distribution: 2 std above the mean flags a few per cent
        score = fitted.score(z_v[i], z_a[i], times[i], history)
        assert score is not None
        flagged.append(score > fitted.calibration.threshold)
        history = history.added(z_v[i:i + 1], z_a[i:i + 1], times[i:i + 1])
    assert 0.01 <= np.mean(flagged) <= 0.08, np.mean(flagged)


def test_the_history_keeps_the_latest_clips() -> None:
    history = CameraHistory.empty(2, capacity=3)
    for t in range(5):
        history = history.added(np.full((1, 2), t, np.float32), np.zeros((1, 2), np.float32), np.array([t]))
    assert history.times.tolist() == [2, 3, 4] and history.z_v[:, 0].tolist() == [2, 3, 4]


def test_novelty_calibration_needs_clips_with_history() -> None:
    z = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
    with pytest.raises(TaskError, match="at least 2 clips"):
        NoveltyCalibration.fit(z, z, np.arange(8.0), w=0.5, k=5, exclusion_s=5)
    with pytest.raises(TaskError, match="format"):
        NoveltyCalibration.from_dict({"format": "other"})

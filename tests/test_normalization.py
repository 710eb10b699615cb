"""Per-camera normalization: running statistics against numpy, standardizing, the JSON files, the too-few-clips
fallback, the per-camera probe protocol, and the statistics kept per model version in the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avsurv.adapters.state import close_state, connect_state
from avsurv.errors import TaskError
from avsurv.labels import read_labels
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.normalization import (
    EPS,
    MIN_CLIPS,
    CameraStats,
    SiteNormalization,
    merged_per_camera,
    per_camera,
)
from avsurv.platform.registry import Registry
from avsurv.tasks.probe import evaluate_probe

DIM = 16


def clouds(n: int, seed: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """z_v and z_a [n, DIM] with unequal scales per dimension, far from the origin."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.1, 5.0, DIM)
    return ((offset + rng.normal(size=(n, DIM)) * scale).astype(np.float32),
            (2 * offset - rng.normal(size=(n, DIM)) * scale[::-1]).astype(np.float32))


@pytest.mark.parametrize("splits", [[300], [1, 299], [7, 1, 100, 2, 190], [150, 150], [299, 1]])
def test_running_statistics_equal_numpy_over_the_concatenation(splits: list[int]) -> None:
    z_v, z_a = clouds(sum(splits), seed=1, offset=1e3)
    edges = np.cumsum(splits)[:-1]
    batches = list(zip(np.split(z_v, edges), np.split(z_a, edges), strict=True))
    stats = CameraStats.of(*batches[0])
    for batch in batches[1:]:
        stats = stats.updated(*batch)
    assert stats.count == len(z_v)
    for modality, z in (("visual", z_v), ("audio", z_a)):
        exact = z.astype(np.float64)
        np.testing.assert_allclose(stats.mean[modality], exact.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(stats.var[modality], exact.var(axis=0), rtol=1e-9)
    backwards = CameraStats.of(*batches[-1])
    for batch in reversed(batches[:-1]):
        backwards = backwards.updated(*batch)
    np.testing.assert_allclose(backwards.var["visual"], stats.var["visual"], rtol=1e-9)  # nor does the order


def test_per_camera_statistics_merge_batch_by_batch() -> None:
    z_v, z_a = clouds(90, seed=2)
    cameras = np.array(["cam0", "cam1", "cam1"] * 30)
    known = per_camera(cameras[:40], z_v[:40], z_a[:40])
    known = merged_per_camera(known, per_camera(cameras[40:], z_v[40:], z_a[40:]))
    assert sorted(known) == ["cam0", "cam1"] and known["cam1"].count == 60
    np.testing.assert_allclose(known["cam1"].mean["audio"], z_a[cameras == "cam1"].astype(np.float64).mean(axis=0),
                               rtol=1e-12)


def test_standardize_is_z_minus_mean_over_sqrt_var_plus_eps() -> None:
    z_v = np.array([[1.0, 2.0, 7.0], [3.0, 6.0, 7.0]])
    z_a = np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 3.0]])
    stats = CameraStats.of(z_v, z_a)
    standard_v, standard_a = stats.standardize(z_v, z_a)
    assert standard_v.dtype == np.float32
    np.testing.assert_allclose(standard_v, (z_v - [2, 4, 7]) / np.sqrt(np.array([1, 4, 0]) + EPS), rtol=1e-6)
    np.testing.assert_allclose(standard_a, (z_a - [1, 0, 2]) / np.sqrt(np.array([1, 0, 1]) + EPS), rtol=1e-6)
    assert np.all(standard_v[:, 2] == 0)  # a constant dimension stays finite
    many_v, many_a = clouds(500, seed=3, offset=50.0)
    standard_v, _ = CameraStats.of(many_v, many_a).standardize(many_v, many_a)
    np.testing.assert_allclose(standard_v.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(standard_v.std(axis=0), 1, atol=1e-3)


def test_statistics_json_round_trip_and_validation() -> None:
    stats = CameraStats.of(*clouds(20, seed=4))
    again = CameraStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again.count == 20
    for modality in ("visual", "audio"):
        np.testing.assert_array_equal(again.mean[modality], stats.mean[modality])
        np.testing.assert_allclose(again.var[modality], stats.var[modality], rtol=1e-15)
    good = stats.to_dict()
    bad_cases = [
        (None, "need count, visual and audio"),
        ({**good, "audio": None}, "need count, visual and audio"),
        ({**good, "count": 0}, "whole count >= 1, got 0"),
        ({**good, "count": "20"}, "whole count >= 1, got '20'"),
        ({**good, "count": True}, "whole count >= 1"),
        ({**good, "visual": {"mean": good["visual"]["mean"]}}, "visual var must be a list of numbers"),
        ({**good, "audio": {**good["audio"], "mean": ["a"] * DIM}}, "audio mean must be a list of numbers"),
        ({**good, "audio": {**good["audio"], "mean": [float("nan")] * DIM}}, "audio mean must be a non-empty list"),
        ({**good, "visual": {**good["visual"], "var": [1.0] * (DIM - 1)}}, "must have one length"),
        ({**good, "visual": {**good["visual"], "var": [-1.0] * DIM}}, "a variance is negative"),
    ]
    for data, message in bad_cases:
        with pytest.raises(TaskError, match=message):
            CameraStats.from_dict(data)
    with pytest.raises(TaskError, match="one shape"):
        CameraStats.of(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(TaskError, match="N >= 1"):
        CameraStats.of(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(TaskError, match="cannot merge 16-d and 4-d"):
        stats.merged(CameraStats.of(np.zeros((1, 4)), np.zeros((1, 4))))


def test_site_file_round_trip_and_errors_name_the_file(tmp_path: Path) -> None:
    z_v, z_a = clouds(100, seed=5)
    site = SiteNormalization.fit(["cam0"] * 70 + ["cam1"] * 30, z_v, z_a, model_sha256="ab" * 32)
    loaded = SiteNormalization.load(site.save(tmp_path / "camera_stats.json"))
    assert loaded.model_sha256 == "ab" * 32 and loaded.reference.count == 100
    assert {camera: stats.count for camera, stats in loaded.cameras.items()} == {"cam0": 70, "cam1": 30}
    np.testing.assert_array_equal(loaded.cameras["cam1"].mean["visual"], site.cameras["cam1"].mean["visual"])
    path = tmp_path / "bad.json"
    written = site.to_dict()
    small = CameraStats.of(np.zeros((2, 4)), np.zeros((2, 4))).to_dict()
    cases = [
        ("{", "not JSON"),
        (json.dumps({**written, "format": "other"}), "not a camera statistics file"),
        (json.dumps({**written, "cameras": []}), "needs a 'cameras' object"),
        (json.dumps({**written, "cameras": {"cam7": {**small, "count": -1}}}), "camera cam7: camera statistics need"),
        (json.dumps({**written, "cameras": {"cam7": small}}), "reference's 16 dimensions"),
        (json.dumps({**written, "reference": None}), "reference: camera statistics need"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(TaskError, match=message) as info:
            SiteNormalization.load(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    with pytest.raises(TaskError, match="no such camera statistics file"):
        SiteNormalization.load(tmp_path / "none.json")


def embedding_set(z_v: np.ndarray, z_a: np.ndarray, camera: str) -> EmbeddingSet:
    n = len(z_v)
    return EmbeddingSet(clip_start=np.arange(n, dtype=np.float64), z_v=z_v, z_a=z_a,
                        clip_id=[f"{camera}:{1000 * t}" for t in range(n)], camera_id=[camera] * n,
                        capture_time=np.full(n, np.nan), has_audio=np.ones(n, dtype=bool),
                        source=[f"/videos/{camera}.mp4"] * n, model_sha256="ab" * 32)


def test_a_camera_with_too_few_clips_is_standardized_with_the_reference() -> None:
    own_v, own_a = clouds(MIN_CLIPS, seed=6, offset=10.0)
    few_v, few_a = clouds(MIN_CLIPS - 1, seed=7, offset=-10.0)
    cameras = ["enough"] * MIN_CLIPS + ["few"] * (MIN_CLIPS - 1)
    site = SiteNormalization.fit(cameras, np.concatenate([own_v, few_v]), np.concatenate([own_a, few_a]),
                                 reference=CameraStats.of(own_v, own_a))
    assert site.cameras["few"].count == MIN_CLIPS - 1
    assert site.stats_for("enough") is site.cameras["enough"]
    assert site.stats_for("few") is site.reference and site.stats_for("never seen") is site.reference
    standardized = site.standardize(embedding_set(few_v, few_a, "few"))
    np.testing.assert_array_equal(standardized.z_v, site.reference.standardize(few_v, few_a)[0])
    assert abs(standardized.z_v.mean()) > 1  # the reference keeps the camera's own shift


def test_site_normalization_of_the_cameras_pools_them_for_the_reference() -> None:
    """The platform's embedder keeps only per-camera statistics: the reference is their exact merge, and each
    row is standardized with its camera's (or, for a young camera, the reference's) statistics."""
    z_v, z_a = clouds(2 * MIN_CLIPS + 5, seed=8, offset=3.0)
    cameras = np.array(["a"] * MIN_CLIPS + ["b"] * 5 + ["c"] * MIN_CLIPS)
    rng = np.random.default_rng(9)
    order = rng.permutation(len(cameras))  # rows of several cameras interleaved, as in a live batch
    site = SiteNormalization.of_cameras(per_camera(cameras, z_v, z_a))
    pooled = CameraStats.of(z_v, z_a)
    assert site.reference.count == pooled.count
    np.testing.assert_allclose(site.reference.var["audio"], pooled.var["audio"], rtol=1e-9)
    out_v, out_a = site.standardize_rows(cameras[order], z_v[order], z_a[order])
    for row, original in enumerate(order):
        stats = site.reference if cameras[original] == "b" else site.cameras[str(cameras[original])]
        expected = stats.standardize(z_v[original][None], z_a[original][None])
        np.testing.assert_allclose(out_v[row], expected[0][0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out_a[row], expected[1][0], rtol=1e-6, atol=1e-6)
    with pytest.raises(TaskError, match="at least one camera"):
        SiteNormalization.of_cameras({})


def planted(n: int, seed: int, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes and clips at their class centre plus noise, in both modalities."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(len(centres), size=n, p=[0.4, 0.3, 0.2, 0.1])
    noise = 0.5 * rng.normal(size=(2, n, centres.shape[1]))
    return classes, (centres[classes] + noise[0]).astype(np.float32), (centres[classes] + noise[1]).astype(np.float32)


def test_per_camera_protocol_recovers_a_camera_shifted_by_a_constant_vector(tmp_path: Path) -> None:
    centres = np.random.default_rng(8).normal(size=(4, DIM))
    # The shift adds W @ shift to the probe's logits: large, it decides the class under the paper's protocol.
    shift = 100 * np.random.default_rng(9).normal(size=DIM)
    train_classes, train_v, train_a = planted(300, 10, centres)
    test_classes, test_v, test_a = planted(300, 11, centres)
    train = embedding_set(train_v, train_a, "cam0")
    test = embedding_set(test_v + shift.astype(np.float32), test_a + shift.astype(np.float32), "cam1")
    names = ["background", "car", "bus", "siren"]
    lines = ["camera_id,t,label"] + [f"{camera},{t},{names[c]}" for camera, classes in
                                     (("cam0", train_classes), ("cam1", test_classes)) for t, c in enumerate(classes)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    labels = read_labels(tmp_path / "labels.csv")
    for features in ("av", "visual", "audio"):
        paper = evaluate_probe([train], {"cam1": test}, labels, features=features, steps=30)
        own = evaluate_probe([train], {"cam1": test}, labels, features=features, steps=30, normalization="per-camera")
        assert (paper.normalization, own.normalization) == ("paper", "per-camera")
        assert paper.accuracy < paper.majority_accuracy + 0.1, features
        assert own.accuracy > 0.95, features
    assert own.to_dict()["normalization"] == "per-camera"
    with pytest.raises(TaskError, match="normalization must be one of paper, per-camera"):
        evaluate_probe([train], {"cam1": test}, labels, normalization="global")


def test_registry_keeps_statistics_per_model_version_across_restarts(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'state.db'}"
    state = connect_state(url)
    registry = Registry(state, "site-a")
    first, second = CameraStats.of(*clouds(10, seed=12)), CameraStats.of(*clouds(30, seed=13, offset=4.0))
    registry.set_camera_stats("v1", "cam0", first)
    registry.set_camera_stats("v2", "cam0", second)
    registry.set_camera_stats("v2", "cam1", second.updated(*clouds(5, seed=14)))
    assert registry.camera_stats("v1", "cam1") is None and registry.camera_stats("v3", "cam0") is None
    assert Registry(state, "site-b").camera_stats("v1", "cam0") is None  # keys are per site
    close_state(state)

    again = Registry(connect_state(url), "site-a")
    try:
        assert again.camera_stats("v1", "cam0").count == 10 and again.camera_stats("v2", "cam0").count == 30
        np.testing.assert_array_equal(again.camera_stats("v1", "cam0").mean["visual"], first.mean["visual"])
        np.testing.assert_array_equal(again.camera_stats("v2", "cam0").mean["audio"], second.mean["audio"])
        assert {camera: stats.count for camera, stats in again.all_camera_stats("v2").items()} == {"cam0": 30,
                                                                                                    "cam1": 35}
        assert again.all_camera_stats("v3") == {}
    finally:
        close_state(again.state)

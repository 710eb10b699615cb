"""Downstream tasks on embeddings: file format, anomaly events, event search, linear probe and their CLIs."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from avsurv.constants import ANOMALY_STDS, EMBEDDING_DIM, SEARCH_EXCLUSION_S, SEARCH_SEPARATION_S, W
from avsurv.errors import TaskError
from avsurv.labels import LABEL_FIELDS, MODALITY_LABEL_FIELDS, read_labels
from avsurv.learning.calibration import Calibration
from avsurv.learning.distance import distance
from avsurv.learning.embeddings import ARRAY_FIELDS, META_FIELDS, EmbeddingSet, concat
from avsurv.tasks.anomalies import anomaly_scores, calibrate, detect
from avsurv.tasks.cli import register_cli
from avsurv.tasks.probe import (
    FEATURE_LABEL_FIELD,
    clip_features,
    clip_labels,
    default_label_field,
    evaluate_probe,
    train_probe,
)
from avsurv.tasks.search import find_clip, parse_query, search, search_by_clip

MODEL = "ab" * 32
CENTRES = np.random.default_rng(1234).normal(size=(4, EMBEDDING_DIM)).astype(np.float32)
"""Class-dependent cluster centres shared by every planted set."""


def make_set(classes: np.ndarray, camera: str = "cam0", *, seed: int = 0, noise: float = 0.5,
             starts: np.ndarray | None = None, capture: np.ndarray | None = None,
             has_audio: np.ndarray | None = None, source: str | None = None,
             model: str = MODEL) -> EmbeddingSet:
    """Clips whose z_v and z_a are their class centre plus independent noise."""
    rng = np.random.default_rng(seed)
    n = len(classes)
    starts = np.arange(n, dtype=np.float64) if starts is None else np.asarray(starts, dtype=np.float64)
    return EmbeddingSet(
        clip_start=starts,
        z_v=CENTRES[classes] + noise * rng.normal(size=(n, EMBEDDING_DIM)),
        z_a=CENTRES[classes] + noise * rng.normal(size=(n, EMBEDDING_DIM)),
        clip_id=[f"{camera}:{round(s * 1000)}" for s in starts],
        camera_id=[camera] * n,
        capture_time=np.full(n, np.nan) if capture is None else capture,
        has_audio=np.ones(n, dtype=bool) if has_audio is None else has_audio,
        source=[source or f"/videos/{camera}.mp4"] * n,
        model_sha256=model, profile="test", method="epg",
    )


def with_scores(base: EmbeddingSet, scores: np.ndarray) -> EmbeddingSet:
    """A copy whose d(z_v, z_a) at w = 1 is exactly ``scores``: z_a = z_v + sqrt(score) * e_0."""
    z_a = base.z_v.copy()
    z_a[:, 0] += np.sqrt(scores).astype(np.float32)
    arrays = {name: getattr(base, name) for name in ARRAY_FIELDS} | {"z_a": z_a}
    return EmbeddingSet(**arrays, **{name: getattr(base, name) for name in META_FIELDS})


# --- embeddings file -------------------------------------------------------------------------------

def test_save_load_round_trip_without_pickles(tmp_path: Path) -> None:
    original = make_set(np.array([0, 1, 2, 3]), capture=np.array([1.0, np.nan, 3.0, 4.0]),
                        has_audio=np.array([True, False, True, True]))
    path = original.save(tmp_path / "emb.npz")
    assert path == tmp_path / "emb.npz" and sorted(p.name for p in tmp_path.iterdir()) == ["emb.npz"]
    with np.load(path, allow_pickle=False) as raw:
        assert all(raw[name].dtype != object for name in raw.files)
    loaded = EmbeddingSet.load(path)
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name))
    assert (loaded.model_sha256, loaded.profile, loaded.method) == (MODEL, "test", "epg")
    assert loaded.z_v.dtype == np.float32 and loaded.clip_start.dtype == np.float64
    assert loaded.has_audio.dtype == bool and loaded.camera_id.dtype.kind == "U" and len(loaded) == 4


def test_construction_rejects_inconsistent_arrays() -> None:
    good = make_set(np.zeros(3, dtype=int))
    arrays = {name: getattr(good, name) for name in ARRAY_FIELDS}
    with pytest.raises(TaskError, match="clip_start has shape \\[2\\]"):
        EmbeddingSet(**arrays | {"clip_start": np.arange(2.0)})
    with pytest.raises(TaskError, match="one shape"):
        EmbeddingSet(**arrays | {"z_a": good.z_a[:, :10]})
    with pytest.raises(TaskError, match="NaN"):
        EmbeddingSet(**arrays | {"z_v": np.full_like(good.z_v, np.nan)})
    with pytest.raises(TaskError, match=r"\[N, D\]"):
        EmbeddingSet(**arrays | {"z_v": good.z_v[0]})


def test_load_errors_name_the_file_in_one_line(tmp_path: Path) -> None:
    good = make_set(np.zeros(3, dtype=int))
    arrays = {name: getattr(good, name) for name in ARRAY_FIELDS}
    meta = {name: np.str_(getattr(good, name)) for name in META_FIELDS}
    np.savez(tmp_path / "short.npz", **arrays | {"has_audio": np.ones(2, dtype=bool)}, **meta)
    np.savez(tmp_path / "partial.npz", z_v=good.z_v)
    (tmp_path / "text.npz").write_text("not a zip")
    cases = {"short.npz": "has_audio has shape", "partial.npz": "missing clip_start",
             "text.npz": "not an embeddings", "absent.npz": "no such"}
    for name, expected in cases.items():
        with pytest.raises(TaskError) as error:
            EmbeddingSet.load(tmp_path / name)
        assert str(tmp_path / name) in str(error.value) and expected in str(error.value)
        assert "\n" not in str(error.value)


def test_concat_select_and_model_mismatch() -> None:
    first, second = make_set(np.array([0, 1]), "cam0"), make_set(np.array([2, 3, 0]), "cam1", seed=1)
    joined = concat([first, second])
    assert len(joined) == 5 and joined.camera_id.tolist() == ["cam0"] * 2 + ["cam1"] * 3
    np.testing.assert_array_equal(joined.z_v[2:], second.z_v)
    assert EmbeddingSet.concat([first, second]).clip_id.tolist() == joined.clip_id.tolist()
    picked = joined.select(joined.camera_id == "cam1")
    np.testing.assert_array_equal(picked.z_a, second.z_a)
    assert picked.model_sha256 == MODEL
    with pytest.raises(TaskError, match="model_sha256"):
        concat([first, make_set(np.array([0]), model="other")])
    with pytest.raises(TaskError, match="no embedding sets"):
        concat([])


# --- anomalies ------------------------------------------------------------------------------------

@pytest.mark.parametrize("w", [0.0, 0.3, W, 1.0])
def test_scores_equal_a_plain_loop_of_eq5(w: float) -> None:
    embeddings = make_set(np.array([0, 1, 2, 3, 1]), noise=2.0)
    expected = [float(distance(torch.from_numpy(embeddings.z_v[i]), torch.from_numpy(embeddings.z_a[i]), w))
                for i in range(len(embeddings))]
    np.testing.assert_allclose(anomaly_scores(embeddings, w), expected, rtol=1e-5)


def test_calibration_statistics_and_json_round_trip(tmp_path: Path) -> None:
    scores = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    embeddings = with_scores(make_set(np.zeros(5, dtype=int)), scores)
    embeddings.has_audio[4] = False  # the silent clip must not enter the statistics
    calibration = calibrate(embeddings, w=1.0)
    assert calibration.clips == 4 and calibration.model_sha256 == MODEL and calibration.stds == ANOMALY_STDS
    assert calibration.mean == pytest.approx(2.5, rel=1e-5)
    assert calibration.std == pytest.approx(np.std([1, 2, 3, 4]), rel=1e-4)
    assert calibration.threshold == pytest.approx(2.5 + 2 * np.std([1, 2, 3, 4]), rel=1e-4)
    assert calibration.with_stds(3.0).threshold == pytest.approx(2.5 + 3 * np.std([1, 2, 3, 4]), rel=1e-4)
    path = calibration.save(tmp_path / "calibration.json")
    assert Calibration.load(path) == calibration
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"threshold": data["threshold"] + 1}))
    with pytest.raises(TaskError, match="not mean \\+ stds \\* std"):
        Calibration.load(path)
    with pytest.raises(TaskError, match="at least 2 clips"):
        calibrate(embeddings.select(np.array([0])))


def test_events_merge_consecutive_seconds_and_break_at_gaps_and_cameras() -> None:
    # cam0 seconds 0..9 without second 6; second 8 is anomalous but has no audio.
    cam0_t = np.array([0, 1, 2, 3, 4, 5, 7, 8, 9])
    cam0_scores = np.array([0, 3, 4, 0, 5, 6, 7, 9, 3.5])
    cam0 = with_scores(make_set(np.zeros(9, dtype=int), "cam0", starts=cam0_t,
                                has_audio=cam0_t != 8), cam0_scores)
    # cam1 starts right after cam0's last anomalous second: only the camera separates them.
    cam1_t = np.array([10, 11, 12])
    cam1 = with_scores(make_set(np.zeros(3, dtype=int), "cam1", starts=cam1_t, capture=1000.0 + cam1_t),
                       np.array([2.5, 8.0, 0.0]))
    joined = concat([cam0, cam1])
    shuffled = joined.select(np.random.default_rng(0).permutation(len(joined)))
    events = detect(shuffled, Calibration(mean=0.0, std=1.0, stds=2.0, w=1.0, model_sha256=MODEL))
    summary = [(e.camera_id, e.start, e.end, e.clips) for e in events]
    assert summary == [("cam0", 1, 3, 2), ("cam0", 4, 6, 2), ("cam0", 7, 8, 1), ("cam0", 9, 10, 1),
                       ("cam1", 10, 12, 2)]
    assert events[0].peak_time == 2 and events[0].peak_score == pytest.approx(4.0, rel=1e-4)
    assert events[0].peak_clip_id == "cam0:2000" and events[0].capture_start is None
    assert (events[4].capture_start, events[4].capture_end, events[4].peak_time) == (1010.0, 1012.0, 11.0)
    assert json.loads(json.dumps(events[4].to_dict()))["threshold"] == 2.0
    with pytest.raises(TaskError, match="calibration belongs to model"):
        detect(joined, Calibration(mean=0.0, std=1.0, model_sha256="cd" * 32))


# --- search ---------------------------------------------------------------------------------------

def brute_force_search(index: EmbeddingSet, q: int, queries: EmbeddingSet, mode: str, top_k: int,
                       exclusion: float, separation: float, w: float = W) -> list[tuple[int, float]]:
    """Straight from the protocol: a loop over clips with the row-wise distance."""

    def d(i: int) -> float:
        parts = []
        if mode in ("visual", "av"):
            parts.append(float(distance(torch.from_numpy(queries.z_v[q]).double(),
                                        torch.from_numpy(index.z_v[i]).double(), w)))
        if mode in ("audio", "av"):
            parts.append(float(distance(torch.from_numpy(queries.z_a[q]).double(),
                                        torch.from_numpy(index.z_a[i]).double(), w)))
        return sum(parts) / len(parts)

    def close(a: tuple, b: tuple, window: float) -> bool:
        (start_a, cap_a, cam_a), (start_b, cap_b, cam_b) = a, b
        if window <= 0:
            return False
        if not math.isnan(cap_a) and not math.isnan(cap_b):
            return abs(cap_a - cap_b) < window
        return cam_a == cam_b and abs(start_a - start_b) < window

    def when(s: EmbeddingSet, i: int) -> tuple:
        return float(s.clip_start[i]), float(s.capture_time[i]), str(s.camera_id[i])

    candidates = [i for i in range(len(index)) if (mode == "visual" or index.has_audio[i])
                  and not close(when(queries, q), when(index, i), exclusion)]
    ranked = sorted((d(i), i) for i in candidates)
    kept: list[tuple[int, float]] = []
    for dist, i in ranked:
        if all(not close(when(index, j), when(index, i), separation) for j, _ in kept):
            kept.append((i, dist))
    return kept[:top_k]


@pytest.fixture(scope="module")
def index() -> EmbeddingSet:
    """Three cameras, 120 s each, four recurring classes; cam1 and cam2 know capture times, cam0 does not."""
    rng = np.random.default_rng(7)
    t = np.arange(120.0)
    return concat([
        make_set(rng.integers(0, 4, 120), "cam0", seed=1, noise=1.0, has_audio=rng.random(120) > 0.2),
        make_set(rng.integers(0, 4, 120), "cam1", seed=2, noise=1.0, capture=5000 + t),
        make_set(rng.integers(0, 4, 120), "cam2", seed=3, noise=1.0, capture=5030 + t),
    ])


@pytest.mark.parametrize("mode", ["av", "audio", "visual"])
@pytest.mark.parametrize(("exclusion", "separation"), [(0.0, 0.0), (60.0, 60.0), (20.0, 7.0)])
@pytest.mark.parametrize("query_row", [5, 130, 300])
def test_search_matches_brute_force(index: EmbeddingSet, mode: str, exclusion: float, separation: float,
                                    query_row: int) -> None:
    if mode != "visual" and not index.has_audio[query_row]:
        query_row += 1 + int(np.argmax(index.has_audio[query_row + 1:]))
    results = search_by_clip(index, index, query_row, mode=mode, top_k=8, exclusion_s=exclusion,
                             separation_s=separation)
    expected = brute_force_search(index, query_row, index, mode, 8, exclusion, separation)
    assert [r.row for r in results] == [i for i, _ in expected]
    np.testing.assert_allclose([r.distance for r in results], [dist for _, dist in expected],
                               rtol=1e-6, atol=1e-9)
    assert [r.rank for r in results] == list(range(1, len(results) + 1))
    if exclusion == 0:
        assert results[0].row == query_row and results[0].distance == pytest.approx(0.0, abs=1e-6)


def test_search_defaults_are_the_papers() -> None:
    assert search.__kwdefaults__ == {"query_capture_time": None, "mode": "av", "top_k": 5,
                                     "exclusion_s": SEARCH_EXCLUSION_S, "separation_s": SEARCH_SEPARATION_S,
                                     "w": W}


def test_search_mode_selects_the_modality() -> None:
    # Clip 1 looks like the query, clip 2 sounds like it; clip 3 has no audio but the query's picture.
    index = make_set(np.array([0, 1, 2, 1]), noise=0.0, starts=np.array([0.0, 100.0, 200.0, 300.0]),
                     has_audio=np.array([True, True, True, False]))
    index.z_v[1], index.z_a[2], index.z_v[3] = index.z_v[0], index.z_a[0], index.z_v[0]
    options = {"exclusion_s": 10.0, "separation_s": 0.0}
    assert [r.row for r in search_by_clip(index, index, 0, mode="visual", **options)][:2] in ([1, 3], [3, 1])
    assert [r.row for r in search_by_clip(index, index, 0, mode="audio", **options)] == [2, 1]
    av = search_by_clip(index, index, 0, mode="av", **options)
    assert 3 not in [r.row for r in av]
    expected = sorted((1, 2), key=lambda i: float(distance(torch.from_numpy(index.z_v[0]),
                                                           torch.from_numpy(index.z_v[i]))
                                                  + distance(torch.from_numpy(index.z_a[0]),
                                                             torch.from_numpy(index.z_a[i]))))
    assert [r.row for r in av] == expected
    with pytest.raises(TaskError, match="mode"):
        search_by_clip(index, index, 0, mode="both")
    no_audio = index.select(np.array([3, 0]))
    with pytest.raises(TaskError, match="has no audio"):
        search_by_clip(index, no_audio, 0, mode="av")


def test_time_rules_capture_time_when_both_known_else_same_camera_media_time() -> None:
    classes = np.zeros(6, dtype=int)
    index = concat([
        make_set(classes[:2], "cam0", noise=0.0, starts=np.array([130.0, 500.0])),
        make_set(classes[:2], "cam1", noise=0.0, starts=np.array([100.0, 101.0])),
        make_set(classes[:2], "cam2", noise=0.0, starts=np.array([100.0, 900.0]),
                 capture=np.array([5000.0, 1030.0])),
    ])
    query = index.z_v[0], index.z_a[0]
    # Query: cam0 at media 100 s, no capture time; only cam0's clip at 130 s is within 60 s.
    rows = [r.row for r in search(index, *query, 100.0, "cam0", top_k=10, separation_s=0.0)]
    assert sorted(rows) == [1, 2, 3, 4, 5]
    # Exactly 30 s away is not "within" 30 s.
    rows = [r.row for r in search(index, *query, 100.0, "cam0", exclusion_s=30.0, top_k=10, separation_s=0.0)]
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    # Query with capture time 1000: cam2's clip captured at 1030 is close, cam2's at 5000 is not;
    # cam0 and cam1 clips have no capture time and another camera, so they are never close.
    rows = [r.row for r in search(index, *query, 100.0, "cam9", query_capture_time=1000.0, top_k=10,
                                  separation_s=0.0)]
    assert sorted(rows) == [0, 1, 2, 3, 4]
    rows = [r.row for r in search(index, *query, 100.0, "cam9", query_capture_time=1000.0, exclusion_s=30.0,
                                  top_k=10, separation_s=0.0)]
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    # Separation: cam1's clips 100 and 101 s are 1 s apart; only the first survives a 60 s window.
    rows = [r.row for r in search(index, *query, 0.0, "cam9", exclusion_s=0.0, top_k=10)]
    assert sorted(rows) == [0, 1, 2, 4, 5]
    rows = [r.row for r in search(index, *query, 0.0, "cam9", exclusion_s=0.0, separation_s=0.5, top_k=10)]
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]


def test_find_clip_and_parse_query(index: EmbeddingSet) -> None:
    assert find_clip(index, "cam1", 12.5) == 132
    assert find_clip(index, "/videos/cam2.mp4", 0.0) == 240
    assert parse_query("rtsp://host/a@b@12.5") == ("rtsp://host/a@b", 12.5)
    with pytest.raises(TaskError, match="no clips of camera or source 'cam7'; cameras: cam0, cam1, cam2"):
        find_clip(index, "cam7", 3.0)
    with pytest.raises(TaskError, match="no clip of 'cam1' holds 500 s"):
        find_clip(index, "cam1", 500.0)
    twice = concat([index, make_set(np.array([0]), "cam1", source="/videos/other.mp4")])
    with pytest.raises(TaskError, match="name the source"):
        find_clip(twice, "cam1", 0.2)
    for bad in ("cam1", "@12", "cam1@soon", "cam1@nan"):
        with pytest.raises(TaskError, match="CAMERA_OR_SOURCE@SECONDS"):
            parse_query(bad)


# --- probe ----------------------------------------------------------------------------------------

def write_csv(path: Path, sets: dict[str, np.ndarray], names: list[str]) -> Path:
    lines = ["camera_id,t,label"] + [f"{camera},{t},{names[c]}" for camera, classes in sets.items()
                                     for t, c in enumerate(classes)]
    path.write_text("\n".join(lines) + "\n")
    return path


NAMES = ["background", "car", "bus", "siren"]
FIELD_NAMES = {"label": NAMES, "visual_label": ["background", "car", "bus", "background"],
               "audio_label": ["background", "background", "bus", "siren"]}
"""Per field, the name of each planted class: the siren is only heard, the car only seen."""


def write_truth(path: Path, sets: dict[str, np.ndarray], field_names: dict[str, list[str]]) -> Path:
    """A ground_truth.json whose second t of each camera has ``field_names[field][classes[t]]`` in each field."""
    seconds = {camera: [{"t": t, "visible": [], "audible": [], "event_ids": [], "anomaly": False}
                        | {field: names[c] for field, names in field_names.items()} for t, c in enumerate(classes)]
               for camera, classes in sets.items()}
    path.write_text(json.dumps({"format": "avsurv-scene-v1", "cameras": [], "events": [], "seconds": seconds}))
    return path


def planted_classes(seed: int, n: int = 300) -> np.ndarray:
    """Imbalanced classes: the majority baseline is clearly above chance."""
    return np.random.default_rng(seed).choice(4, size=n, p=[0.5, 0.25, 0.15, 0.1])


def test_probe_separates_planted_classes_and_not_shuffled_labels(tmp_path: Path) -> None:
    train_classes, test_classes = planted_classes(1), planted_classes(2)
    train = make_set(train_classes, "cam0", seed=11, noise=3.0)
    test = make_set(test_classes, "cam1", seed=12, noise=3.0)
    labels = read_labels(write_csv(tmp_path / "labels.csv", {"cam0": train_classes, "cam1": test_classes},
                                   NAMES))
    for features in ("av", "audio", "visual"):
        report = evaluate_probe([train], {"cam1": test}, labels, features=features, steps=30)
        assert report.accuracy > 0.95, features
    assert report.majority_class == "background"
    probe = train_probe(clip_features(train, "av"), clip_labels(train, labels), steps=1)
    features = np.concatenate([train.z_v, train.z_a], axis=1)
    np.testing.assert_allclose(probe.mean, features.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probe.std, features.std(axis=0), rtol=1e-4)
    assert report.majority_accuracy == pytest.approx(np.mean(test_classes == 0))
    shuffled_classes = np.random.default_rng(3).permutation(train_classes)
    shuffled = read_labels(write_csv(tmp_path / "shuffled.csv",
                                     {"cam0": shuffled_classes, "cam1": test_classes}, NAMES))
    report = evaluate_probe([train], {"cam1": test}, shuffled, features="av", steps=30)
    assert report.accuracy < report.majority_accuracy + 0.1


def test_probe_report_counts_skipped_unseen_classes_and_is_deterministic(tmp_path: Path) -> None:
    train_classes, test_classes = planted_classes(4, 200), planted_classes(5, 100)
    train_classes[train_classes == 3] = 0  # "siren" never appears in training
    train = make_set(train_classes, "cam0", seed=21)
    test = make_set(test_classes, "cam1", seed=22)
    labels = read_labels(write_csv(tmp_path / "labels.csv", {"cam0": train_classes[:190],
                                                              "cam1": test_classes[:90]}, NAMES))
    report = evaluate_probe([train], {"a": test, "b": test.select(np.arange(50))}, labels, seed=3)
    assert (report.train_clips, report.train_skipped) == (190, 10)
    assert [(s.name, s.clips, s.skipped) for s in report.sets] == [("a", 90, 10), ("b", 50, 0)]
    assert report.classes == ("background", "bus", "car", "siren")
    siren_clips = int((test_classes[:90] == 3).sum()) + int((test_classes[:50] == 3).sum())
    assert siren_clips > 0 and report.per_class()["siren"] == (siren_clips, 0.0)
    assert report.confusion.sum() == 140 and report.confusion[:, 3].sum() == 0
    assert report.accuracy == pytest.approx(sum(s.correct for s in report.sets) / 140)
    assert report.accuracy <= 1 - siren_clips / 140
    again = evaluate_probe([train], {"a": test, "b": test.select(np.arange(50))}, labels, seed=3)
    np.testing.assert_array_equal(again.confusion, report.confusion)


def test_ground_truth_labels_use_the_floor_of_clip_start(tmp_path: Path) -> None:
    truth = {"format": "avsurv-scene-v1", "cameras": [], "events": [], "seconds": {
        "cam0": [{"t": t, "visible": [], "audible": [], "event_ids": [], "anomaly": False, "label": label}
                 for t, label in enumerate(["background", "car", "bus"])]}}
    path = tmp_path / "ground_truth.json"
    path.write_text(json.dumps(truth))
    clips = make_set(np.zeros(5, dtype=int), "cam0", starts=np.array([0.0, 1.5, 1.9999999999, 2.0, 3.0]))
    assert clip_labels(clips, read_labels(path)).tolist() == ["background", "car", "bus", "bus", ""]
    path.write_text(json.dumps(truth | {"format": "other"}))
    with pytest.raises(TaskError, match="not a ground-truth file"):
        read_labels(path)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("camera_id,t,label\ncam0,1.5,car\n")
    with pytest.raises(TaskError, match="t must be a whole second"):
        read_labels(bad_csv)
    bad_csv.write_text("camera,second,label\n")
    with pytest.raises(TaskError, match="header camera_id,t,label"):
        read_labels(bad_csv)


def test_read_labels_reads_each_field_and_names_a_ground_truth_without_them(tmp_path: Path) -> None:
    classes = np.array([0, 1, 2, 3, 1])
    path = write_truth(tmp_path / "ground_truth.json", {"cam0": classes}, FIELD_NAMES)
    for field in LABEL_FIELDS:
        assert read_labels(path, field) == {("cam0", t): FIELD_NAMES[field][c] for t, c in enumerate(classes)}
    assert read_labels(path) == read_labels(path, "label")
    assert {default_label_field(path, features) for features in FEATURE_LABEL_FIELD} == set(LABEL_FIELDS)
    visual_csv = tmp_path / "visual.csv"
    visual_csv.write_text("camera_id,t,visual_label\ncam0,0,car\n")
    assert read_labels(visual_csv, "visual_label") == {("cam0", 0): "car"}
    assert default_label_field(visual_csv, "visual") == "visual_label"
    assert default_label_field(write_csv(tmp_path / "l.csv", {"cam0": classes}, NAMES), "visual") == "label"
    old = write_truth(tmp_path / "old.json", {"cam0": classes}, {"label": NAMES})
    assert read_labels(old) == read_labels(path)
    for field in MODALITY_LABEL_FIELDS:
        with pytest.raises(TaskError, match=f"predates per-modality labels \\(no '{field}'\\); re-render .*"
                           "avsurv synth") as info:
            read_labels(old, field)
        assert "\n" not in str(info.value)
    with pytest.raises(TaskError, match="label field must be one of label, visual_label, audio_label"):
        read_labels(path, "anomaly")


# --- command line ---------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="avsurv")
    register_cli(root.add_subparsers(dest="command", required=True))
    return root


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = parser().parse_args(argv)
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_cli_error(argv: list[str], capsys: pytest.CaptureFixture[str], expected: str) -> None:
    code, _, err = cli(argv, capsys)
    assert code == 2
    assert err.startswith(f"avsurv {argv[0]}: error: ") and expected in err and err.count("\n") == 1


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    train_classes, test_classes = planted_classes(8, 120), planted_classes(9, 120)
    train = make_set(train_classes, "cam0", seed=31)
    scores = np.zeros(120)
    scores[[40, 41, 42, 90]] = 1e4  # sound that does not fit the picture
    test = concat([with_scores(make_set(test_classes, "cam1", seed=32), scores)])
    return {
        "train": train.save(tmp_path / "train.npz"), "test": test.save(tmp_path / "test.npz"),
        "labels": write_csv(tmp_path / "labels.csv", {"cam0": train_classes, "cam1": test_classes}, NAMES),
        "truth": write_truth(tmp_path / "ground_truth.json", {"cam0": train_classes, "cam1": test_classes},
                             FIELD_NAMES),
        "dir": tmp_path,
    }


def test_calibrate_and_anomalies_cli(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model = files["dir"] / "model"
    model.mkdir()
    code, out, _ = cli(["calibrate", str(files["train"]), "--out", str(model / "calibration.json")], capsys)
    assert code == 0 and "wrote" in out
    assert Calibration.load(model / "calibration.json") == calibrate(EmbeddingSet.load(files["train"]))
    code, out, err = cli(["anomalies", str(files["test"]), "--model", str(model)], capsys)
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(e["start"], e["end"], e["clips"]) for e in events] == [(40, 43, 3), (90, 91, 1)]
    assert "2 events" in err and "0 clips without audio ignored" in err
    out_file = files["dir"] / "events.jsonl"
    code, out, _ = cli(["anomalies", str(files["test"]), "--calibration", str(model / "calibration.json"),
                        "--out", str(out_file), "--stds", "1e9"], capsys)
    assert code == 0 and out_file.read_text() == "" and "0 events" in out
    test = str(files["test"])
    assert_cli_error(["anomalies", test, "--model", str(files["dir"])], capsys, "no such calibration")
    assert_cli_error(["anomalies", str(files["dir"] / "nope.npz"), "--model", str(model)], capsys, "nope.npz")
    assert_cli_error(["anomalies", test, "--model", str(model), "--w", "0.9"], capsys, "recalibrate")
    assert_cli_error(["calibrate", str(files["labels"]), "--out", str(files["dir"] / "c.json")], capsys,
                     "not an embeddings")
    assert_cli_error(["calibrate", str(files["train"]), "--out", str(files["dir"] / "c.json"), "--w", "2"],
                     capsys, "must lie in [0, 1]")


def test_search_cli(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    index = [str(files["train"]), str(files["test"])]
    code, out, _ = cli(["search", "--index", *index, "--query", "cam1@10.5", "--top-k", "3"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("query cam1:10000") and lines[1].split()[:4] == [
        "rank", "camera", "time_s", "capture_time"] and len(lines) == 5
    code, out, _ = cli(["search", "--index", str(files["train"]), "--query-index", str(files["test"]),
                        "--query", "cam1@10", "--mode", "visual", "--exclusion", "0", "--separation", "0",
                        "--json"], capsys)
    results = [json.loads(line) for line in out.splitlines()]
    query = EmbeddingSet.load(files["test"])
    expected = search_by_clip(EmbeddingSet.load(files["train"]), query, 10, mode="visual", exclusion_s=0,
                              separation_s=0)
    assert code == 0 and [r["row"] for r in results] == [r.row for r in expected]
    assert all(r["camera_id"] == "cam0" for r in results)
    assert_cli_error(["search", "--index", *index, "--query", "cam5@3"], capsys, "no clips of camera")
    assert_cli_error(["search", "--index", *index, "--query", "cam1"], capsys, "CAMERA_OR_SOURCE@SECONDS")
    assert_cli_error(["search", "--index", *index, "--query", "cam1@3", "--top-k", "0"], capsys, "top_k")
    assert_cli_error(["search", "--index", *index, "--query", "cam1@3", "--w", "-1"], capsys, "[0, 1]")
    assert_cli_error(["search", "--index", str(files["dir"] / "x.npz"), "--query", "cam1@3"], capsys, "x.npz")


def test_probe_cli(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    base = ["probe", "--train", str(files["train"]), "--test", str(files["test"]),
            "--labels", str(files["labels"])]
    code, out, _ = cli(base, capsys)
    assert code == 0 and out.startswith("features av: trained on 120 clips") and "majority baseline" in out
    lines = out.splitlines()
    assert lines[0].endswith("normalization paper | per-camera")  # both protocols side by side by default
    assert re.fullmatch(rf"  {re.escape(str(files['test']))}: \d+\.\d\d % \| \d+\.\d\d % of 120 clips .*", lines[1])
    code, out, _ = cli([*base, "--normalization", "per-camera"], capsys)
    assert code == 0 and out.splitlines()[0].endswith("normalization per-camera") and " | " not in out
    code, out, _ = cli([*base, "--features", "all", "--json", "--epochs", "20"], capsys)
    reports = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["features"], r["normalization"]) for r in reports] == [
        (features, protocol) for features in ("av", "audio", "visual") for protocol in ("paper", "per-camera")]
    assert all(r["accuracy"] > 0.9 and len(r["confusion"]) == len(r["classes"]) for r in reports)
    wrong = files["dir"] / "wrong.npz"
    np.savez(wrong, z_v=np.zeros((3, 4)))
    assert_cli_error(["probe", "--train", str(wrong), "--test", str(files["test"]), "--labels",
                      str(files["labels"])], capsys, "missing")
    assert_cli_error([*base[:5], "--labels", str(files["dir"] / "none.csv")], capsys, "no such label file")


def test_probe_cli_scores_each_feature_set_on_its_own_field(files: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    base = ["probe", "--train", str(files["train"]), "--test", str(files["test"]), "--labels", str(files["truth"])]
    code, out, _ = cli([*base, "--features", "all", "--json", "--epochs", "20"], capsys)
    reports = {r["features"]: r for r in map(json.loads, out.splitlines())}
    assert code == 0 and {f: r["label_field"] for f, r in reports.items()} == FEATURE_LABEL_FIELD
    for features, field in FEATURE_LABEL_FIELD.items():
        assert set(reports[features]["classes"]) == set(read_labels(files["truth"], field).values()), features
    assert "siren" not in reports["visual"]["classes"] and "car" not in reports["audio"]["classes"]
    code, out, _ = cli([*base, "--features", "visual"], capsys)
    assert code == 0 and "; labels: visual_label" in out.splitlines()[0]
    code, out, _ = cli([*base, "--features", "all", "--label-field", "label", "--json", "--epochs", "5"], capsys)
    assert code == 0 and {(r["features"], r["label_field"]) for r in map(json.loads, out.splitlines())} == {
        ("av", "label"), ("audio", "label"), ("visual", "label")}
    code, out, _ = cli(["probe", "--train", str(files["train"]), "--test", str(files["test"]), "--labels",
                        str(files["labels"]), "--features", "audio"], capsys)
    assert code == 0 and "; labels: label" in out.splitlines()[0]  # a label-only CSV serves every feature set
    old = files["dir"] / "old.json"
    truth = json.loads(files["truth"].read_text())
    for seconds in truth["seconds"].values():
        for second in seconds:
            del second["visual_label"], second["audio_label"]
    old.write_text(json.dumps(truth))
    assert_cli_error([*base[:5], "--labels", str(old), "--features", "visual"], capsys,
                     "predates per-modality labels")
    code, _, _ = cli([*base[:5], "--labels", str(old), "--features", "visual", "--label-field", "label"], capsys)
    assert code == 0


@pytest.mark.parametrize("command", ["calibrate", "anomalies", "search", "probe"])
def test_help_mentions_every_option_with_its_default(command: str) -> None:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    text = sub.format_help()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert all(option in text for option in action.option_strings)
        if action.option_strings:
            assert "default" in action.help or "required" in action.help, action.option_strings

"""The site-scale benchmark (bench/site.py) in quick mode: every table is filled for the methods it ran,
baselines included, a second run keeps the finished runs, and the report replaces only its section."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avsurv.learning.losses import epg_labels
from avsurv.learning.normalization import EPS
from avsurv.learning.train import TrainConfig

# bench/site.py shares its name with the standard library's site module: load it by path.
_SPEC = importlib.util.spec_from_file_location("site_bench", Path(__file__).resolve().parents[1] / "bench" / "site.py")
site_bench = importlib.util.module_from_spec(_SPEC)
sys.modules["site_bench"] = site_bench  # dataclasses look their module up while the file runs
_SPEC.loader.exec_module(site_bench)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("site")
    return site_bench.run(site_bench.QUICK, out, log=lambda _: None), out


def test_every_method_is_evaluated_on_every_camera(quick) -> None:
    results, _ = quick
    runs = {run["method"]: run for run in results["runs"]}
    assert set(runs) == set(site_bench.QUICK.methods)
    for method in ("tpg", "random"):
        for kind in ("visual", "audio", "av"):
            for normalization in site_bench.NORMALIZATIONS:
                scores = runs[method]["localization"][kind][normalization]
                assert set(scores) == set(site_bench.CAMERAS)
                assert all(0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["macro_f1"] <= 1.0 for s in scores.values())
        for camera in site_bench.CAMERAS:
            assert set(runs[method]["anomalies"][camera]) == set(site_bench.DETECTORS)
    assert runs["tpg"]["training"]["epochs"] >= 1 and runs["random"]["training"]["epochs"] == 0
    assert set(runs["hand"]["localization"]) == {"visual"}
    assert all(set(runs["hand"]["anomalies"][c]) == set(site_bench.HAND_DETECTORS) for c in site_bench.CAMERAS)
    assert "localization" not in runs["truth"] and set(runs["truth"]["search"]) == set(site_bench.CAMERAS)
    assert set(runs["hand"]["search"]) == set(site_bench.CAMERAS)
    for camera in site_bench.CAMERAS:
        assert set(runs["truth"]["anomalies"][camera]) == set(site_bench.TRUTH_DETECTORS)
        aucs = [s["roc_auc"] for s in runs["truth"]["anomalies"][camera].values()]
        assert all(0.0 <= auc <= 1.0 or np.isnan(auc) for auc in aucs)
    precision = runs["epg"]["training"]["label_precision"]
    assert [row["after_epoch"] for row in precision] == list(range(1, runs["epg"]["training"]["epochs"] + 1))
    for row in precision:
        assert row["extra_positives_per_anchor"] >= 0
        assert all(0.0 <= row[key] <= 1.0 for key in ("visual_precision", "audio_precision", "visual_base_rate",
                                                        "audio_base_rate"))
    assert "label_precision" not in runs["tpg"]["training"] or not runs["tpg"]["training"]["label_precision"]
    assert set(results["majority"]) == {"visual", "audio", "av"}


def test_report_shows_every_table_and_rerun_keeps_finished_runs(quick, tmp_path) -> None:
    results, out = quick
    text = site_bench.markdown(results, "python bench/site.py --quick")
    for heading in ("Event localization", "Anomaly detection", "Event search", "EPG's pair labels per epoch"):
        assert heading in text
    assert "| visual (visual_label) | hand | 1 | paper |" in text and "most frequent class" in text
    assert "| hand | sound |" in text and "| truth | class-rarity |" in text
    assert "| truth |" in text.split("Event search")[1] and "| hand |" in text.split("Event search")[1]
    again = site_bench.run(site_bench.QUICK, out, log=lambda _: None)
    assert json.dumps(again["runs"], sort_keys=True) == json.dumps(results["runs"], sort_keys=True)
    report = tmp_path / "RESULTS.md"
    report.write_text("# Results\n\nearlier section\n")
    site_bench.write_report(text, report)
    site_bench.write_report(text.replace("Generated", "Regenerated"), report)
    written = report.read_text()
    assert written.count(site_bench.BEGIN) == 1 and "Regenerated" in written and "earlier section" in written


def test_a_kept_run_counts_only_under_its_budget_precision_views_weight_and_held_back_part() -> None:
    settings = site_bench.Settings(**{**site_bench.asdict(site_bench.QUICK), "held_s": 900})
    bf16 = site_bench.Settings(**{**site_bench.asdict(settings), "precision": "bf16"})
    views = site_bench.Settings(**{**site_bench.asdict(settings), "views_weight": 1.0})
    older = {"budget_s": settings.budget_s}  # made before runs recorded them: float32, no views term
    assert site_bench._same_conditions(older, settings) and not site_bench._same_conditions(older, bf16)
    assert site_bench._same_conditions({**older, "precision": "bf16"}, bf16)
    assert not site_bench._same_conditions({"budget_s": 2 * settings.budget_s}, settings)
    assert not site_bench._same_conditions(older, views)
    assert site_bench._same_conditions({**older, "views_weight": 1.0}, views)
    assert site_bench._same_conditions({**older, "held_s": 900}, settings)
    assert not site_bench._same_conditions({**older, "held_s": 600}, settings)
    assert not site_bench._same_conditions(older, site_bench.QUICK)  # held 900 s (unsaid) against its 50 s
    score = {"accuracy": 0.5, "macro_f1": 0.5}
    majority = {kind: {camera: score for camera in site_bench.CAMERAS} for kind in site_bench.FIELDS}
    results = {"settings": site_bench.asdict(views), "majority": majority, "runs": [], "minutes": 0.0, "date": "d",
               "revision": "r", "machine": "m"}
    assert "views term at weight 1" in site_bench.markdown(results, "python bench/site.py --views-weight 1")


def test_a_kept_scene_of_another_seed_or_length_is_refused(tmp_path) -> None:
    settings = site_bench.QUICK
    truth = {"seed": settings.scene_seed, "duration_s": float(settings.duration_s)}
    site_bench._check_scene(truth, settings, tmp_path)
    for other in ({**truth, "seed": 32}, {**truth, "duration_s": 1800.0}):
        with pytest.raises(SystemExit, match="use another --out"):
            site_bench._check_scene(other, settings, tmp_path)


def test_sound_novelty_finds_clips_whose_spectrum_the_camera_never_had() -> None:
    from test_streaming_trainer import VISUAL, synthetic_clips

    from avsurv.learning.data import table_from_clips

    clips = synthetic_clips(cameras=1, per_camera=120, seed=4)
    anomaly = np.zeros(len(clips), bool)
    anomaly[[100, 110]] = True  # loud in high bands, where no earlier clip had sound
    for clip in np.array(clips)[anomaly]:
        clip.log_mel[0, 100:] += 40
    table = table_from_clips(clips, VISUAL)
    held = table.starts >= 90
    no_classes = np.zeros((len(clips), 1), bool)
    camera = site_bench.Camera(table, {}, anomaly, held, no_classes, no_classes)
    scores = site_bench.hand_anomalies({"cam0": camera}, {"cam0": site_bench.hand_features(table)})["cam0"]
    assert scores["sound"]["roc_auc"] == 1.0 and scores["sound"]["anomalous"] == 2
    assert scores["novelty"]["roc_auc"] < 0.9  # the pictures of those clips are ordinary
    found = site_bench.hand_sets({"cam0": camera}, {"cam0": site_bench.hand_features(table)})["cam0"]
    assert found.z_v.shape == found.z_a.shape == (len(clips), 128)  # 64 visual features padded to the 128 bands
    assert not found.z_v[:, 64:].any()
    for z, raw in ((found.z_v, site_bench.hand_features(table)), (found.z_a, site_bench.sound(table))):
        # each weighs alike: a mean squared norm of 1, less what standardizing leaves of features that barely vary
        var = raw.astype(np.float64).var(axis=0)
        assert np.mean((z**2).sum(axis=1)) == pytest.approx((var / (var + EPS)).sum() / raw.shape[1], rel=1e-3)


def test_class_rarity_matches_a_loop() -> None:
    rng = np.random.default_rng(3)
    present = rng.random((60, 5)) < 0.3
    times = np.sort(rng.uniform(0, 300, 60))
    expected = []
    for i in range(60):
        counts = [sum(present[j, c] for j in range(60) if times[j] <= times[i] - 60.0)
                  for c in range(5) if present[i, c]]
        expected.append(-min(counts) if counts else -np.inf)
    np.testing.assert_array_equal(site_bench.class_rarity(present, times, 60.0), expected)


def test_class_rarity_ranks_a_second_with_a_rare_class_first_whatever_else_it_holds() -> None:
    times = np.arange(400.0)
    present = np.zeros((400, 3), bool)
    present[:, 0] = True  # a car in every second
    present[::50, 1] = True  # a bus now and then
    present[390, 2] = True  # a horse once, with the car
    scores = site_bench.class_rarity(present, times, 60.0)
    assert scores[390] == 0.0 and scores[390] > scores[350] > scores[389]


def test_macro_f1_matches_a_hand_computation() -> None:
    truth = np.array(["a", "a", "b", "b", "c"])
    predicted = np.array(["a", "b", "b", "b", "a"])
    # a: p 1/2 r 1/2 -> 0.5; b: p 2/3 r 1 -> 0.8; c: 0
    assert site_bench.macro_f1(truth, predicted) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


class _Table:
    """What label_precision reads of a ClipTable (its rows stand for the subset)."""

    def __init__(self, times: np.ndarray) -> None:
        self.times = times

    def __len__(self) -> int:
        return len(self.times)

    def subset(self, rows: np.ndarray) -> np.ndarray:
        return rows


def test_label_precision_counts_like_a_loop(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    n = 40
    z_v, z_a = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)
    visual, audio = rng.choice(["car", "bus", "background"], n), rng.choice(["siren", "background"], n)
    table = _Table(np.arange(n, dtype=np.float64))
    monkeypatch.setattr(site_bench, "encode_table", lambda model, rows: (z_v[rows], z_a[rows]))
    config = TrainConfig(batch_size=16, seed=3)
    got = site_bench.label_precision(None, site_bench.Training(table, visual, audio), config)
    rows = np.random.default_rng(3).permutation(n)
    extra = pairs = match_v = match_a = base_v = base_a = 0
    for start in range(0, n, 16):
        b = rows[start : start + 16]
        y = epg_labels(torch.from_numpy(z_v[b]), torch.from_numpy(z_a[b]), torch.from_numpy(table.times[b])).numpy()
        for i in range(len(b)):
            for j in range(len(b)):
                if i == j:
                    continue
                pairs += 1
                base_v += visual[b[i]] == visual[b[j]]
                base_a += audio[b[i]] == audio[b[j]]
                if y[i, j]:
                    extra += 1
                    match_v += visual[b[i]] == visual[b[j]]
                    match_a += audio[b[i]] == audio[b[j]]
    assert extra > 0
    assert got == pytest.approx({"extra_positives_per_anchor": extra / n, "visual_precision": match_v / extra,
                                 "audio_precision": match_a / extra, "visual_base_rate": base_v / pairs,
                                 "audio_base_rate": base_a / pairs})

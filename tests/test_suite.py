"""The evaluation suite: bench/suite.py's report, tables and re-rendering, and bench/quality.py's scoring,
orchestration and Markdown.

The scoring and reporting are checked on planted inputs whose answer is known by hand: embeddings whose
distances, rankings and anomaly scores follow from their construction, and result tables whose every cell
can be predicted. One quick run of the real suite (conftest.py's ``quick_suite``) checks the report of a
real run and that re-rendering it from its raw numbers gives the same file."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402  (bench/ is put on the path above)
import suite  # noqa: E402
from test_performance_bench import planted_results as planted_performance  # noqa: E402

SEEDS = (0, 1)


# -- planted quality results -----------------------------------------------------------------------------


def _set(row: dict[str, Any], path: tuple[str, ...], value: float) -> None:
    for key in path[:-1]:
        row = row[key]
    row[path[-1]] = value


PLANTED_RUNS: dict[tuple[str, ...], dict[str, tuple[float, float]]] = {
    # (seed 0, seed 1) of a figure; every other figure is 0.5 (majority 0.4, training 10 s) for every seed.
    ("localization", "av", "similar"): {"epg": (0.8, 0.9)},
    ("localization", "av", "challenging"): {"epg": (0.6, 0.7)},
    ("localization", "audio", "similar"): {quality.SUPERVISED: (math.nan, 0.7)},  # a NaN seed is left out
    ("localization", "audio", "challenging"): {"infonce": (math.nan, math.nan)},  # no finite seed: n/a
    ("recall", "recall_at_1"): {"epg": (0.1, 0.3)},
    ("train_seconds",): {"epg": (100.0, 140.0)},
    ("anomaly", "av", "roc_auc"): {"epg": (0.7, 0.9)},
    ("search", "av", "map"): {"epg": (0.2, 0.4)},
    ("heads", "tacma", "similar"): {"epg": (0.6, 0.8)},
    ("heads", "avaca_roc_auc"): {"epg": (0.9, 0.9)},
}


def planted_run(method: str, seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": method, "seed": seed, "train_seconds": 10.0,
        "localization": {f: {"similar": 0.5, "challenging": 0.5} for f in quality.FEATURES}
        | {"majority": {"similar": 0.4, "challenging": 0.4}},
        "recall": {"recall_at_1": 0.5, "recall_at_5": 0.5, "chance_at_1": 0.01, "chance_at_5": 0.05},
        "anomaly": {k: {"roc_auc": 0.5, "precision": 0.5, "recall": 0.5, "anomalous_clips": 7, "clips": 60,
                        "roc": [[0.0, 1.0], [0.0, 1.0]]} for k in ("av", "audio", "visual")},
        "search": {m: {"p_at_1": 0.5, "p_at_5": 0.5, "map": 0.5, "queries": 12} for m in quality.MODES},
    }
    if method in quality.HEAD_METHODS:
        row["heads"] = {h: {"similar": 0.5, "challenging": 0.5} for h in quality.HEADS} | {
            "avaca_roc_auc": 0.5, "label_free_roc_auc": 0.5}
    for path, by_method in PLANTED_RUNS.items():
        if method in by_method:
            _set(row, path, by_method[method][SEEDS.index(seed)])
    return row


def ablation(parameter: str, value: Any, *, similar: float = 0.8, challenging: float | None = 0.7,
             converged: bool = True, positives: float | None = 1.0) -> dict[str, Any]:
    accuracy = {"similar": similar} | ({} if challenging is None else {"challenging": challenging})
    return {"parameter": parameter, "value": value, "localization": {"av": accuracy},
            "recall": {"recall_at_1": 0.2, "recall_at_5": 0.6}, "converged": converged,
            "final_epoch": None if positives is None else {"positives_per_anchor": positives}}


def planted_quality() -> dict[str, Any]:
    return {"settings": asdict(replace(quality.QUICK, seeds=SEEDS)), "seconds": 120.0,
            "runs": [planted_run(m, s) for m in quality.METHODS for s in SEEDS],
            "ablations": [ablation("sigma", 0.0, positives=2.5), ablation("sigma", 10.0),
                          ablation("w", 1.0, similar=0.3, challenging=None, converged=False, positives=None),
                          ablation("label_rule", "cross"),
                          ablation("safeguard", "epg_switch aligned, max_positives 4")],
            "search_figure": {"path": "search.png", "rows": []}}


# -- quality.py: Markdown and figures --------------------------------------------------------------------


def test_quality_markdown_rows_hold_mean_and_std_over_seeds_next_to_the_papers_row() -> None:
    lines = quality.markdown(planted_quality(), "python bench/suite.py --quick").splitlines()
    expected = [
        # localization: EPG's mean ± std of 0.8 / 0.9 and 0.6 / 0.7, beside EPG Table 1's audio-visual row
        "| audio-visual | epg | 85.0 ± 5.0 | 65.0 ± 5.0 | 86.92 | 77.48 |",
        "| audio-visual | tpg | 50.0 ± 0.0 | 50.0 ± 0.0 | 71.33 | 60.47 |",
        "| visual | epg | 50.0 ± 0.0 | 50.0 ± 0.0 | 85.42 | 70.02 |",
        "| audio-visual | random | 50.0 ± 0.0 | 50.0 ± 0.0 | | |",  # no paper row
        f"| audio | {quality.SUPERVISED} | 70.0 ± 0.0 | 50.0 ± 0.0 | | |",  # the NaN seed left out
        "| audio | infonce | 50.0 ± 0.0 | n/a | | |",
        "| any | cam0's most frequent class, always | 40.0 ± 0.0 | 40.0 ± 0.0 | | |",
        # cross-modal recall and training seconds (no scaling, no decimals)
        "| epg | 20.0 ± 10.0 | 50.0 ± 0.0 | 120 ± 20 |", "| random | 50.0 ± 0.0 | 50.0 ± 0.0 | 10 ± 0 |",
        "| epg | av | 80.0 ± 10.0 | 50.0 ± 0.0 | 50.0 ± 0.0 |",  # anomaly ROC-AUC, precision, recall
        "| epg | av | 50.0 ± 0.0 | 50.0 ± 0.0 | 30.0 ± 10.0 |",  # search P@1, P@5, mAP
        "| epg | linear probe | 85.0 ± 5.0 | 65.0 ± 5.0 |", "| epg | tacma | 70.0 ± 10.0 | 50.0 ± 0.0 |",
        "| epg | 90.0 ± 0.0 | 50.0 ± 0.0 |",  # AVACA against d(z_v, z_a)
        # ablations: EPG Table 2 at sigma 0 and 10; w = 1 did not converge there (DNC) nor here
        "| sigma | 0 | 80.0 | 70.0 | 20.0 | 60.0 | yes | 2.5 | 86.92 | 77.48 |",
        "| sigma | 10 | 80.0 | 70.0 | 20.0 | 60.0 | yes | 1.0 | 85.32 | 77.33 |",
        "| w | 1 | 30.0 | nan | 20.0 | 60.0 | DNC | nan | DNC | DNC |",
        "| label_rule | cross | 80.0 | 70.0 | 20.0 | 60.0 | yes | 1.0 | | |",
        "| safeguard | epg_switch aligned, max_positives 4 | 80.0 | 70.0 | 20.0 | 60.0 | yes | 1.0 | | |",
    ]
    for line in expected:
        assert line in lines
    text = "\n".join(lines)
    assert lines[0].startswith("Scene: 3 cameras x 60 s (scene seed 11, 20 anomalies per 10 min); `tiny` profile, "
                               "1 epochs, trained on cam0 only; mean ± std over 2 seeds (0, 1). Regenerate: "
                               "`python bench/suite.py --quick`.")
    assert "(true audio of a clip's video among 100; chance 1.0 % / 5.0 %)" in text
    assert "7 of 60 cam0 clips are anomalous." in text and "on cam0 (12 per seed)" in text
    assert "more than 5 s away" in text and "(5 s exclusion and separation)" in text
    for image in ("localization", "roc", "search", "ablations"):
        assert f"![{image}](results/{image}.png)" in lines


def test_quality_figures_of_planted_results_are_written(tmp_path) -> None:
    quality.figures(planted_quality(), tmp_path)
    for image in ("localization", "roc", "ablations"):
        assert (tmp_path / f"{image}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{image}.png").stat().st_size > 10_000


# -- quality.py: orchestration ---------------------------------------------------------------------------


def test_run_evaluates_every_method_and_seed_and_reuses_the_default_epg_run_as_an_ablation(monkeypatch,
                                                                                            tmp_path) -> None:
    # The quick grid changes one TrainConfig default at a time; sigma 0 and w 0.5 are the defaults, so
    # those two rows are the main EPG run of the first seed, not new runs.
    assert (quality.TrainConfig().sigma, quality.TrainConfig().w) == (0.0, 0.5)
    calls: list[tuple[str, int, tuple[str, ...], dict[str, Any]]] = []

    def evaluate(method: str, seed: int, scene: Any, settings: quality.Settings, scratch: Path,
                 tasks: tuple[str, ...] = ("localization", "anomaly", "search", "heads"),
                 **overrides: Any) -> tuple[dict[str, Any], str]:
        assert scene == "scene" and settings is quality.QUICK
        calls.append((method, seed, tasks, overrides))
        return ({"method": method, "seed": seed, "train_seconds": 1.0, "converged": True, "final_epoch": None,
                 "recall": {"recall_at_1": 0.1}, "localization": {"av": {"similar": len(calls) / 100}},
                 "overrides": overrides}, f"cam0 of {method} {seed}")

    figure: dict[str, Any] = {}
    monkeypatch.setattr(quality, "make_scene", lambda settings, root, log: "scene")
    monkeypatch.setattr(quality, "evaluate", evaluate)
    monkeypatch.setattr(quality, "search_figure", lambda shown, scene, settings, path: figure.update(
        shown=shown, path=path) or {"rows": []})
    results = quality.run(True, tmp_path, log=lambda _: None)
    every = ("localization", "anomaly", "search", "heads")
    assert calls[:12] == [(m, s, every, {}) for m in quality.METHODS for s in (0, 1)]
    assert calls[12:] == [("epg", 0, ("localization",), {"sigma": 10.0}), ("epg", 0, ("localization",), {"w": 1.0}),
                          ("epg", 0, ("localization",), {"label_rule": "cross"}),
                          ("epg", 0, ("localization",), {"epg_switch": "aligned", "max_positives": 4})]
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [(m, s) for m in quality.METHODS for s in (0, 1)]
    assert [(a["parameter"], a["value"]) for a in results["ablations"]] == [
        ("sigma", 0.0), ("sigma", 10.0), ("w", 0.5), ("w", 1.0), ("label_rule", "cross"),
        ("safeguard", "epg_switch aligned, max_positives 4")]
    epg_seed_0 = 0.03  # the third call: random 0, random 1, epg 0
    assert [a["localization"]["av"]["similar"] for a in results["ablations"]] == [
        epg_seed_0, 0.13, epg_seed_0, 0.14, 0.15, 0.16]
    assert figure == {"shown": {"epg": "cam0 of epg 0", "tpg": "cam0 of tpg 0"}, "path": tmp_path / "search.png"}
    assert results["settings"] == asdict(quality.QUICK) and results["search_figure"] == {"rows": []}


def test_ablation_grid_changes_one_setting_at_a_time() -> None:
    settings = quality.Settings(sigmas=(0, 30), ws=(0.25,), label_rules=("and",), safeguards=({"max_positives": 4},))
    assert quality.ablation_grid(settings) == [("sigma", {"sigma": 0.0}), ("sigma", {"sigma": 30.0}),
                                               ("w", {"w": 0.25}), ("label_rule", {"label_rule": "and"}),
                                               ("safeguard", {"max_positives": 4})]


def test_converged_flags_a_diverged_or_unaligned_run() -> None:
    good = {"loss": 0.3, "aligned_distance": 0.2, "negative_distance": 1.0}
    assert quality.converged([good])
    assert quality.converged([])  # nothing trained (random): nothing diverged
    assert not quality.converged([good, good | {"loss": math.nan}])
    assert not quality.converged([good | {"aligned_distance": 1.2}])
    assert quality.converged([good | {"aligned_distance": 1.2}, good])  # only the last epoch's alignment counts


# -- quality.py: the three tasks on planted embeddings ---------------------------------------------------


def embeddings(values: list[float], *, has_audio: list[bool] | None = None, camera: str = "cam0"
               ) -> quality.EmbeddingSet:
    """Clip t starts at t s; z_v = z_a = values[t] * e1, so Eq. 5 between two clips is 0.5 (x - y)^2 (parallel
    vectors: no cosine term) and search ranks by |x - y|."""
    n = len(values)
    z = np.zeros((n, 2), np.float32)
    z[:, 0] = values
    return quality.EmbeddingSet(clip_start=np.arange(n, dtype=float), z_v=z, z_a=z.copy(),
                                clip_id=[f"{camera}:{t}" for t in range(n)], camera_id=[camera] * n,
                                capture_time=np.full(n, np.nan),
                                has_audio=[True] * n if has_audio is None else has_audio,
                                source=[f"{camera}.mp4"] * n)


def scene(labels: dict[tuple[str, int], str] | None = None, anomalous: set[tuple[str, int]] | None = None
          ) -> quality.Scene:
    return quality.Scene(tables={}, viewpoints={"cam0": "reference"}, labels=labels or {}, anomaly_labels={},
                         anomalous=anomalous or set())


def test_anomaly_detection_on_planted_scores_and_anomalous_seconds() -> None:
    # z_v = e1 for every clip, z_a = (1 + s) e1: d(z_v, z_a) = 0.5 s^2. Clip 3 scores 8 (s = 4), clip 5
    # 4.5 (s = 3), clip 10 (no audio: left out) would score 50, every other clip 0. Anomalous seconds: 3, 7
    # and 10. Over the 10 clips with audio (2 positive, 8 negative): AUC = (clip 3 beats 8 + clip 7 ties
    # 7 zeros as 1/2) / 16 = 11.5 / 16. Mean 1.25, std sqrt(84.25 / 10 - 1.25^2) = 2.62: the threshold
    # mean + 2 std = 6.49 flags clip 3 only (mean + 1 std, 3.87, would flag clip 5 too): precision 1,
    # recall 1/2.
    s = np.zeros(11)
    s[3], s[5], s[10] = 4.0, 3.0, 10.0
    clips = embeddings([1.0] * 11, has_audio=[True] * 10 + [False])
    clips.z_a[:, 0] = 1 + s
    settings = replace(quality.QUICK, window_s=2.0)
    result = quality.anomaly_detection(clips, scene(anomalous={("cam0", 3), ("cam0", 7), ("cam0", 10)}), settings)
    av = result["av"]
    assert av["roc_auc"] == pytest.approx(11.5 / 16)
    assert av["precision"] == 1.0 and av["recall"] == 0.5
    assert av["roc"] == [[0.0, 0.0, 0.125, 1.0], [0.0, 0.5, 0.5, 1.0]]
    for kind in ("av", "audio", "visual"):
        assert (result[kind]["anomalous_clips"], result[kind]["clips"]) == (2, 10)
    # Every z_v is the same: every visual novelty score is 0, a coin toss with nothing flagged.
    visual = result["visual"]
    assert visual["roc_auc"] == 0.5 and math.isnan(visual["precision"]) and visual["recall"] == 0.0


def test_search_queries_are_labelled_clips_whose_class_recurs_outside_the_window() -> None:
    # window 5 s: car at 0 and 6 recur (6 s apart), car at 1 does not (5 s from 6 is not more than 5);
    # bus at 2 and 9 recur; truck at 3 and 7 (4 s) does not; background and unlabelled are no queries.
    labels = np.array(["car", "car", "bus", "truck", quality.BACKGROUND, "", "car", "truck", quality.BACKGROUND, "bus"])
    clips = SimpleNamespace(clip_start=np.arange(10, dtype=float))
    settings = replace(quality.QUICK, window_s=5.0, queries_per_class=10)
    assert quality.search_queries(clips, labels, settings, seed=0).tolist() == [0, 2, 6, 9]
    one = quality.search_queries(clips, labels, replace(settings, queries_per_class=1), seed=0).tolist()
    assert len(one) == 2 and one[0] in (0, 6) and one[1] in (2, 9)


def test_event_search_precision_and_map_of_planted_rankings() -> None:
    # Clips t = 0..7; window 1.5 s (exclusion and separation drop clips 1 s away). Search ranks by |x - y|:
    #   t      0    1    2    3    4    5    6    7
    #   label  car  bg   bg   bus  bg   car  bg   bus
    #   x      1.0  7.0  8.0  3.0  9.0  1.5  3.5  5.2
    # Queries (every class recurs): 0, 3, 5, 7. Separated rankings:
    #   0: 5 car, 3 bus, 7 bus (6, 2 and 4 sit 1 s from a better result)  P@1 1, P@5 1/5, AP 1
    #   3: 6 bg, 0 car (5, 7 and 1 dropped by separation: no bus left)    P@1 0, P@5 0,   AP 0
    #   5: 0 car, 3 bus, 7 bus                                            P@1 1, P@5 1/5, AP 1
    #   7: 1 bg, 3 bus, 5 car                                             P@1 0, P@5 1/5, AP 1/2
    bg = quality.BACKGROUND  # no query
    names = ["car", bg, bg, "bus", bg, "car", bg, "bus"]
    clips = embeddings([1.0, 7.0, 8.0, 3.0, 9.0, 1.5, 3.5, 5.2])
    labels = {("cam0", t): name for t, name in enumerate(names)}
    settings = replace(quality.QUICK, window_s=1.5, queries_per_class=10)
    result = quality.event_search(clips, scene(labels), settings, seed=0)
    for mode in quality.MODES:  # z_v = z_a: every mode ranks alike
        assert result[mode]["queries"] == 4
        assert result[mode]["p_at_1"] == pytest.approx(0.5)
        assert result[mode]["p_at_5"] == pytest.approx(0.15)
        assert result[mode]["map"] == pytest.approx(0.625)  # the query that found nothing counts as 0


def test_majority_accuracy_ignores_unlabelled_clips() -> None:
    # Training camera: 4 unlabelled, 3 car, 2 bus: the majority is car, not the unlabelled "".
    train = embeddings([1.0] * 9, camera="cam0")
    similar, challenging = embeddings([1.0] * 4, camera="cam1"), embeddings([1.0] * 4, camera="cam2")
    classes = {"cam0": ["car", "car", "car", "bus", "bus"], "cam1": ["car", "bus", "car", "car"],
               "cam2": ["bus", None, "bus", "car"]}
    labels = {(camera, t): name for camera, names in classes.items() for t, name in enumerate(names) if name}
    accuracy = quality.majority_accuracy(train, {"similar": similar, "challenging": challenging}, labels)
    assert accuracy == pytest.approx({"similar": 0.75, "challenging": 1 / 3})


# -- suite.py ---------------------------------------------------------------------------------------------

MACHINE = {"cpu": "x86_64", "cores": 2, "torch_threads": 2, "memory_gib": 7.5, "python": "3.11.9",
           "torch": "2.5.1", "os": "Linux-6.1"}


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_write_tables_one_row_per_measurement(tmp_path) -> None:
    results = planted_quality()
    results["runs"] = [planted_run("epg", 0), planted_run("epg", 1)]
    results["ablations"] = results["ablations"][2:3]  # w = 1: no challenging accuracy, did not converge
    suite.write_tables(results, tmp_path)
    localization = read_csv(tmp_path / "localization.csv")
    assert localization[0] == ["method", "seed", "features", "split", "accuracy"]
    assert localization[1:9] == [["epg", "0", "av", "similar", "0.8"], ["epg", "0", "av", "challenging", "0.6"],
                                 ["epg", "0", "audio", "similar", "0.5"], ["epg", "0", "audio", "challenging", "0.5"],
                                 ["epg", "0", "visual", "similar", "0.5"], ["epg", "0", "visual", "challenging", "0.5"],
                                 ["epg", "0", "majority", "similar", "0.4"],
                                 ["epg", "0", "majority", "challenging", "0.4"]]
    assert len(localization) == 1 + 2 * 4 * 2 and localization[9][:5] == ["epg", "1", "av", "similar", "0.9"]
    anomaly = read_csv(tmp_path / "anomaly.csv")
    assert anomaly[0] == ["method", "seed", "score", "roc_auc", "precision", "recall"]
    assert anomaly[1] == ["epg", "0", "av", "0.7", "0.5", "0.5"]
    assert anomaly[4] == ["epg", "1", "av", "0.9", "0.5", "0.5"]
    assert len(anomaly) == 1 + 2 * 3
    search = read_csv(tmp_path / "search.csv")
    assert search[0] == ["method", "seed", "mode", "p_at_1", "p_at_5", "map", "queries"]
    assert search[1] == ["epg", "0", "av", "0.5", "0.5", "0.2", "12"] and len(search) == 1 + 2 * 3
    assert read_csv(tmp_path / "ablations.csv") == [["parameter", "value", "split", "accuracy", "converged"],
                                                    ["w", "1.0", "similar", "0.3", "False"]]


def test_report_header_and_sections_from_planted_sections() -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    sections = {"machine": MACHINE, "revision": "abc123", "performance": planted_performance()}
    text = suite.report(sections, "python bench/suite.py --only performance", started, 90.0)
    lines = text.splitlines()
    assert lines[0] == "# Results"
    assert ("Generated by `python bench/suite.py --only performance` on 2026-01-02 03:04 UTC in 1.5 minutes, "
            "at git revision abc123.") in lines
    assert ("Machine: x86_64, 2 cores (2 torch threads), 7.5 GiB, Python 3.11.9, torch 2.5.1, Linux-6.1. "
            "No GPU.") in lines
    assert "## Performance" in lines and "| tiny | 4 | 8.00 | 2.00 | 4.00x | 2 x 4 |" in lines
    assert "## Representation quality (EPG paper experiments)" not in lines
    sections["quality"] = planted_quality()
    lines = suite.report(sections, "python bench/suite.py", started, 90.0).splitlines()
    assert lines.index("## Representation quality (EPG paper experiments)") < lines.index("## Performance")
    assert "Took 2.0 minutes." in lines  # the quality section's own 120 s
    assert "| audio-visual | epg | 85.0 ± 5.0 | 65.0 ± 5.0 | 86.92 | 77.48 |" in lines
    assert "(section quality: bench/quality.py)" in "\n".join(lines)


def test_render_rewrites_results_md_from_the_raw_numbers_of_the_last_run(tmp_path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    run = {"machine": MACHINE, "revision": "abc123 (with uncommitted changes)", "command": "python bench/suite.py",
           "seconds": 2700.0, "started": "2026-01-02T03:04:05+00:00"}
    (results / "suite.json").write_text(json.dumps(run))
    (results / "performance.json").write_text(json.dumps(planted_performance(quick=False)))
    suite.render(tmp_path)
    lines = (tmp_path / "RESULTS.md").read_text().splitlines()
    # The run's own date, duration, command and revision, not the time of rendering.
    assert ("Generated by `python bench/suite.py` on 2026-01-02 03:04 UTC in 45.0 minutes, at git revision abc123 "
            "(with uncommitted changes).") in lines
    assert "## Performance" in lines and "## Representation quality (EPG paper experiments)" not in lines
    (results / "quality.json").write_text(json.dumps(planted_quality()))
    suite.render(tmp_path)
    lines = (tmp_path / "RESULTS.md").read_text().splitlines()
    assert "## Representation quality (EPG paper experiments)" in lines
    assert "| sigma | 0 | 80.0 | 70.0 | 20.0 | 60.0 | yes | 2.5 | 86.92 | 77.48 |" in lines  # survives JSON


def test_revision_names_the_commit_and_whether_the_tree_was_dirty(monkeypatch) -> None:
    def git(porcelain: str) -> SimpleNamespace:
        def run(command: list[str], **kwargs: Any) -> SimpleNamespace:
            return SimpleNamespace(stdout="abc123\n" if command[1] == "rev-parse" else porcelain)
        return SimpleNamespace(run=run, CalledProcessError=subprocess.CalledProcessError)

    monkeypatch.setattr(suite, "subprocess", git(""))
    assert suite.revision() == "abc123"
    monkeypatch.setattr(suite, "subprocess", git(" M bench/suite.py\n"))
    assert suite.revision() == "abc123 (with uncommitted changes)"

    def missing(command: list[str], **kwargs: Any) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(suite, "subprocess",
                        SimpleNamespace(run=missing, CalledProcessError=subprocess.CalledProcessError))
    assert suite.revision() == "unknown (not a git checkout)"


# -- one real quick run ----------------------------------------------------------------------------------


def test_results_md_names_machine_revision_command_and_every_section(quick_suite: Path) -> None:
    text = (quick_suite / "RESULTS.md").read_text()
    # The commit checked out when the run started: HEAD or, if someone committed during the run, an ancestor.
    found = re.search(r"at git revision ([0-9a-f]{40})( \(with uncommitted changes\))?\.", text)
    assert found, "no git revision in RESULTS.md"
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", found[1], "HEAD"], cwd=ROOT)
    assert ancestor.returncode == 0, f"{found[1]} is not a commit of this checkout's history"
    assert "Generated by `python bench/suite.py --quick`" in text and "cores" in text
    for heading in ("Event localization (EPG Table 1 protocol)", "Anomaly detection", "Event search",
                    "Ablations (EPG Tables 2 and 3)", "## Performance"):
        assert heading in text
    for image in ("localization", "roc", "search", "ablations"):
        assert f"(results/{image}.png)" in text
        assert (quick_suite / "results" / f"{image}.png").stat().st_size > 10_000


def test_render_rewrites_the_same_report_from_the_raw_numbers(quick_suite: Path) -> None:
    before = (quick_suite / "RESULTS.md").read_text()
    (quick_suite / "RESULTS.md").unlink()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "suite.py"), "--render", "--out", str(quick_suite)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (quick_suite / "RESULTS.md").read_text() == before

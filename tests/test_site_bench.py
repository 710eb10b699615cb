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
    assert set(results["majority"]) == {"visual", "audio", "av"}


def test_report_shows_every_table_and_rerun_keeps_finished_runs(quick, tmp_path) -> None:
    results, out = quick
    text = site_bench.markdown(results, "python bench/site.py --quick")
    for heading in ("Event localization", "Anomaly detection", "Event search"):
        assert heading in text
    assert "| visual (visual_label) | hand | 1 | paper |" in text and "most frequent class" in text
    again = site_bench.run(site_bench.QUICK, out, log=lambda _: None)
    assert json.dumps(again["runs"], sort_keys=True) == json.dumps(results["runs"], sort_keys=True)
    report = tmp_path / "RESULTS.md"
    report.write_text("# Results\n\nearlier section\n")
    site_bench.write_report(text, report)
    site_bench.write_report(text.replace("Generated", "Regenerated"), report)
    written = report.read_text()
    assert written.count(site_bench.BEGIN) == 1 and "Regenerated" in written and "earlier section" in written


def test_macro_f1_matches_a_hand_computation() -> None:
    truth = np.array(["a", "a", "b", "b", "c"])
    predicted = np.array(["a", "b", "b", "b", "a"])
    # a: p 1/2 r 1/2 -> 0.5; b: p 2/3 r 1 -> 0.8; c: 0
    assert site_bench.macro_f1(truth, predicted) == pytest.approx((0.5 + 0.8 + 0.0) / 3)

"""The performance section of the evaluation suite (bench/performance.py) in quick mode: every required
figure is measured, finite and next to its baseline, the plots are written and the Markdown covers every
part. One run (a few minutes on 2 cores) serves every check."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import performance

from avsurv.platform.runtime import SERVICES


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def results(quick_suite: Path) -> tuple[dict[str, Any], Path]:
    """The performance section of the suite's quick run, and the directory holding its plots."""
    out = quick_suite / "results"
    return json.loads((out / "performance.json").read_text()), out


def test_embedder_throughput_per_batch_size_against_one_clip_per_call(results):
    profiles = {p["profile"]: p for p in results[0]["embedder"]["profiles"]}
    assert set(profiles) == {"tiny", "paper"}
    for setting in performance.QUICK.embedders:
        measured = profiles[setting.profile]
        assert set(measured["batched_clips_per_s"]) == {str(n) for n in setting.batches}
        assert positive(measured["loop_clips_per_s"])
        for n, rate in measured["batched_clips_per_s"].items():
            assert positive(rate)
            assert measured["speedup"][n] == pytest.approx(rate / measured["loop_clips_per_s"])


def test_segmentation_against_the_naive_loop_and_decoding_alone(results):
    r = results[0]["segmentation"]
    for name in ("avsurv", "naive", "decode_only"):
        assert positive(r[f"{name}_s"]) and r[f"{name}_x_realtime"] == pytest.approx(r["video_s"] / r[f"{name}_s"])
    assert r["clips"] == int(r["video_s"])  # one clip per second of the test file
    assert r["speedup_over_naive"] == pytest.approx(r["naive_s"] / r["avsurv_s"])


def test_pipeline_throughput_against_the_core_and_event_latency_per_bus(results):
    r = results[0]["pipeline"]
    assert positive(r["core_clips_per_s"]) and set(r["buses"]) == {"inprocess", "kafka"}
    for bus in r["buses"].values():
        assert positive(bus["clips_per_s"]) and positive(bus["startup_s"])
        assert bus["ratio_to_core"] == pytest.approx(bus["clips_per_s"] / r["core_clips_per_s"])
        assert bus["latencies_s"], "the calibration makes about half the seconds anomalous: some events must come"
        # An event closes on the clip after its run: it cannot be published before that clip was captured.
        assert all(math.isfinite(s) and s > 0 for s in bus["latencies_s"])
        assert 0 < bus["latency_p50_s"] <= bus["latency_p95_s"] <= max(bus["latencies_s"])


def test_search_latency_of_the_platform_against_the_exact_scan(results):
    r = results[0]["search"]
    assert [row["clips"] for row in r["sizes"]] == list(performance.QUICK.search_sizes)
    for row in r["sizes"]:
        for path in ("exact", "platform"):
            assert positive(row[path]["p50_s"]) and row[path]["p50_s"] <= row[path]["p95_s"]
        assert row["p50_ratio_platform_to_exact"] == pytest.approx(row["platform"]["p50_s"] / row["exact"]["p50_s"])
        assert 0 <= row["agreement"] <= 1 and positive(row["fill_s"])
    assert r["sizes"][-1]["agreement"] == 1.0  # 512 candidates per modality out of 5,000 random clips suffice


def test_training_speed_with_and_without_the_cache(results):
    rows = results[0]["training"]["rows"]
    assert [(row["profile"], row["method"]) for row in rows] == [("tiny", "epg")]
    for row in rows:
        for phase in ("visual", "audio"):
            cached, uncached = row[f"{phase}_epoch_s_per_hour"], row[f"{phase}_epoch_uncached_s_per_hour"]
            assert positive(cached) and positive(uncached)
            assert row[f"{phase}_cache_speedup"] == pytest.approx(uncached / cached)


def test_peak_memory_of_each_service_against_the_embedded_process(results):
    r = results[0]["memory"]
    assert set(r["services"]) == set(SERVICES)
    embedded = r["embedded"]
    # A Python process that imported torch and the platform: far above 100 MB, and the high-water mark is a peak.
    assert embedded["peak_rss_mb"] > 100 and embedded["kernel_peak_rss_mb"] >= embedded["peak_rss_mb"] * 0.99
    for peak in r["services"].values():
        assert peak["peak_rss_mb"] > 100 and positive(peak["ratio_to_embedded"])
    assert r["services_total_mb"] > max(p["peak_rss_mb"] for p in r["services"].values())
    assert set(r["infrastructure_peak_rss_mb"]) == {"tansu", "redis-server"}


def test_results_are_json_and_the_markdown_covers_every_part(results):
    figures, out = results
    assert set(figures["seconds"]) == set(performance.PARTS)
    for name in figures["plots"].values():
        assert (out / name).stat().st_size > 1000  # a PNG with content
    json.loads(json.dumps(figures))
    text = performance.markdown(figures, "python bench/performance.py --quick")
    for heading in ("Embedder throughput", "Decode + segmentation", "Pipeline throughput", "Search latency",
                    "Training speed", "Peak memory"):
        assert f"### {heading}" in text
    assert "python bench/performance.py --quick" in text and "n/a" not in text
    for name in figures["plots"].values():
        assert f"(results/{name})" in text

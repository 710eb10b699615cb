"""The performance section of the evaluation suite: bench/performance.py and the bench scripts it runs.

Every figure's arithmetic is checked on planted inputs whose answer is known by hand: a clock that moves
only by planted durations, or stubbed measurements, so that each rate, ratio, percentile and table cell is
exact. A few tests run real code where the answer is still known (one clip per second of video, a child
process holding a planted block of memory, a search whose candidates are every clip). One quick run of the
real suite (conftest.py's ``quick_suite``) checks what only a real run can: that every part measures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import encoder_speed
import performance
import pipeline
import search_speed
import segment_speed
import service_memory
import train_speed

from avsurv.adapters.vectors import EmbeddedVectors
from avsurv.platform.runtime import SERVICES


class Clock:
    """A clock that moves only when told to: planted durations become exact timings."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Table:
    """The part of ClipTable the training bench uses: a length and ``subset(mask)``."""

    def __init__(self, clips: int) -> None:
        self.clips, self.masks = clips, []

    def __len__(self) -> int:
        return self.clips

    def subset(self, mask: np.ndarray) -> Table:
        self.masks.append(mask)
        return Table(int(mask.sum()))


# -- embedder (encoder_speed.py) -------------------------------------------------------------------------


def test_median_seconds_times_each_repeat_after_one_untimed_warm_up(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(encoder_speed, "time", SimpleNamespace(perf_counter=clock))
    durations = iter([3.0, 1.0, 2.0])
    warm_ups: list[int] = []

    def warm_up() -> None:
        warm_ups.append(1)
        clock.advance(100.0)  # must not be counted

    assert encoder_speed.median_seconds(lambda: clock.advance(next(durations)), 3, warm_up=warm_up) == 2.0
    assert warm_ups == [1]
    # Without a warm-up function the first call of ``run`` warms up, untimed: 50 s is left out.
    durations = iter([50.0, 4.0, 1.0, 3.0, 2.0])
    assert encoder_speed.median_seconds(lambda: clock.advance(next(durations)), 4) == 2.5


def test_embedder_rates_and_speedups_from_planted_call_costs(monkeypatch) -> None:
    # Each embed call costs 0.5 s plus 0.25 s per clip: one clip per call 0.75 s per clip, 2 clips
    # per call 0.5 s per clip, 4 per call 0.375 s per clip.
    clock, calls = Clock(), []

    class Model:
        def __init__(self, name: str, model: Any, config: dict[str, Any]) -> None:
            assert config["profile"] == "tiny"

        def embed(self, clips: list[Any]) -> None:
            calls.append([int(c.start) for c in clips])
            clock.advance(0.5 + 0.25 * len(clips))

    monkeypatch.setattr(encoder_speed, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(encoder_speed, "LoadedModel", Model)
    monkeypatch.setattr(encoder_speed, "build_model", lambda profile: torch.nn.Identity())
    result = encoder_speed.embedder_speed("tiny", (1, 2, 4), repeats=3, clips_per_run=5)
    # 5 clips per timing, rounded down to whole batches but at least one: B=1 5, B=2 4, B=4 4.
    assert result["clips_timed"] == {"1": 5, "2": 4, "4": 4}
    assert result["loop_clips_per_s"] == pytest.approx(5 / 3.75)  # 5 calls of 0.75 s
    assert result["batched_clips_per_s"] == pytest.approx({"1": 5 / 3.75, "2": 4 / 2.0, "4": 4 / 1.5})
    assert result["speedup"] == pytest.approx({"1": 1.0, "2": 1.5, "4": 2.0})
    assert (result["profile"], result["repeats"], result["clips_per_run"]) == ("tiny", 3, 5)
    # The loop baseline, then B = 1, 2, 4: one untimed warm-up batch, then 3 timed runs over distinct clips.
    one = [[0]] + 3 * [[0], [1], [2], [3], [4]]
    assert calls == one + one + [[0, 1]] + 3 * [[0, 1], [2, 3]] + [[0, 1, 2, 3]] + 3 * [[0, 1, 2, 3]]


# -- segmentation (segment_speed.py) ---------------------------------------------------------------------


def test_segmentation_figures_are_video_seconds_over_each_paths_planted_wall_time(monkeypatch, tmp_path) -> None:
    threads: list[int] = []

    def decode_only(path: Path) -> float:
        threads.append(torch.get_num_threads())
        return 1.0

    monkeypatch.setattr(segment_speed, "write_test_file", lambda path, seconds: path.write_bytes(bytes(2_500_000)))
    monkeypatch.setattr(segment_speed, "decode_only", decode_only)
    monkeypatch.setattr(segment_speed, "naive", lambda path: 8.0)
    monkeypatch.setattr(segment_speed, "ours", lambda path: (2.0, 4))
    with performance.torch_threads(2):  # a known count, so that "restored" means something
        r = segment_speed.measure(4.0, keep=tmp_path / "kept.mp4")
        assert torch.get_num_threads() == 2  # restored after measuring on one thread
    assert threads == [1]
    assert (tmp_path / "kept.mp4").stat().st_size == 2_500_000
    assert (r["video_s"], r["file_mb"], r["clips"]) == (4.0, 2.5, 4)
    assert (r["decode_only_s"], r["naive_s"], r["avsurv_s"]) == (1.0, 8.0, 2.0)
    assert r["decode_only_x_realtime"] == 4.0 and r["naive_x_realtime"] == 0.5 and r["avsurv_x_realtime"] == 2.0
    assert r["speedup_over_naive"] == 4.0 and r["overhead_over_decode"] == 2.0


def test_segmenter_cuts_one_clip_per_second_of_the_test_file(tmp_path) -> None:
    path = tmp_path / "test.mp4"
    segment_speed.write_test_file(path, 2.0)
    seconds, clips = segment_speed.ours(path)
    assert clips == 2 and seconds > 0


# -- pipeline (pipeline.py) ------------------------------------------------------------------------------

WALL = 1_767_225_600.0
"""Wall-clock epoch of the fake clock's zero."""


class Runtime:
    """The parts of avsurv's Runtime that ``run_platform`` reads, driven by a plan: ``start`` takes
    ``startup_s``; each poll of the anomalies subscription takes ``poll_s``, embeds the next planted batch
    and delivers the events planted for that poll (by poll number, as latencies in seconds)."""

    def __init__(self, clock: Clock, batches: list[int], clips: int, events: dict[int, list[float]],
                 startup_s: float = 3.0, poll_s: float = 0.5) -> None:
        self.clock, self.batches, self.events = clock, list(batches), events
        self.startup_s, self.poll_s, self.polls, self.stopped, self.closed = startup_s, poll_s, 0, False, False
        joined = SimpleNamespace()  # an in-process subscription: joined as soon as it exists
        self.embedder = SimpleNamespace(clips_embedded=0, subscription=joined)
        self.workers = {"embedding": self.embedder, "ingest": SimpleNamespace(finished=lambda: True),
                        "segmentation": SimpleNamespace(tracker=SimpleNamespace(pending=lambda: 0),
                                                        subscription=joined),
                        "anomaly-detector": SimpleNamespace(subscription=joined)}
        self.cameras: dict[str, str] = {}
        self.ports = SimpleNamespace(bus=SimpleNamespace(subscribe=self.subscribe), archive=[None] * clips,
                                     registry=SimpleNamespace(want_camera=self.cameras.__setitem__))

    def start(self) -> None:
        self.clock.advance(self.startup_s)

    def stop(self) -> None:
        self.stopped = True

    def subscribe(self, group: str, topics: list[str]) -> Any:
        assert topics == [pipeline.ANOMALIES]
        return SimpleNamespace(poll=self.poll, close=lambda: setattr(self, "closed", True))

    def poll(self, timeout_s: float) -> list[Any]:
        self.polls += 1
        self.clock.advance(self.poll_s)
        if self.batches:
            self.embedder.clips_embedded += self.batches.pop(0)
        wall = WALL + self.clock.now
        return [SimpleNamespace(value=pipeline.pb.AnomalyEvent(end_time=wall - latency).SerializeToString())
                for latency in self.events.get(self.polls, [])]


def fake_platform(monkeypatch, runtime: Runtime, clock: Clock) -> list[dict[str, Any]]:
    settings: list[dict[str, Any]] = []
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(perf_counter=clock, monotonic=clock,
                                                          time=lambda: WALL + clock.now))
    monkeypatch.setattr(pipeline, "load_settings", lambda **kwargs: settings.append(kwargs) or kwargs)
    monkeypatch.setattr(pipeline, "Runtime", lambda services, config, embedded: runtime)
    return settings


def test_platform_rate_starts_at_the_first_embedded_batch_and_latency_is_wall_minus_event_end(
        monkeypatch, tmp_path) -> None:
    # 80 clips in batches of 32, 32, 16, one poll (0.5 s) each, after a 3 s start: the first batch is
    # embedded at 3.5 s, the last at 4.5 s, so 48 clips in 1 s. One event 1.25 s after its end arrives
    # on the second poll, one 6 s after (a run closed by idleness) while draining, on the 10th.
    clock = Clock()
    runtime = Runtime(clock, [32, 32, 16], clips=80, events={2: [1.25], 10: [6.0]})
    settings = fake_platform(monkeypatch, runtime, clock)
    startup, rate, latencies = pipeline.run_platform([Path("cam0.mp4")], Path("model"), "inprocess://",
                                                     tmp_path, True, expected=81)
    assert startup == 3.5 and rate == pytest.approx(48.0)
    assert latencies == pytest.approx([1.25, 6.0])
    # After the last clip it drains IDLE_S + 3 s (16 polls of 0.5 s) for runs that close on idleness.
    assert runtime.polls == 3 + 16
    assert runtime.stopped and runtime.closed
    assert runtime.cameras == {"cam0": "cam0.mp4"} and settings[0]["bus"] == "inprocess://"
    assert settings[0]["realtime_files"] is True and settings[0]["anomaly_run_idle_s"] == pipeline.IDLE_S


def test_platform_rate_is_nan_when_one_batch_embeds_every_clip(monkeypatch, tmp_path) -> None:
    clock = Clock()
    runtime = Runtime(clock, [20], clips=20, events={})
    fake_platform(monkeypatch, runtime, clock)
    startup, rate, latencies = pipeline.run_platform([Path("cam0.mp4")], Path("model"), "inprocess://",
                                                     tmp_path, False, expected=20)
    assert startup == 3.5 and math.isnan(rate) and latencies == []


def test_platform_run_that_never_finishes_times_out_and_still_stops(monkeypatch, tmp_path) -> None:
    clock = Clock()
    runtime = Runtime(clock, [32], clips=80, events={})  # 48 clips never get embedded
    fake_platform(monkeypatch, runtime, clock)
    with pytest.raises(TimeoutError, match="32 of about 80 clips embedded"):
        pipeline.run_platform([Path("cam0.mp4")], Path("model"), "inprocess://", tmp_path, False, expected=80)
    assert runtime.stopped and runtime.closed
    assert clock.now == pytest.approx(3.0 + pipeline.TIMEOUT_S, abs=1.0)


def test_model_threshold_is_the_median_calibration_score_and_core_rate_is_planted(monkeypatch, tmp_path) -> None:
    # Calibration clips with z_a = (1 + s) z_v for a unit z_v: Eq. 5 with w = 0.5 gives 0.5 s^2 (parallel
    # vectors, cosine term 0): scores 0.5, 2 and 4.5 for s = 1, 2, 3, whose median is 2. Embedding the
    # 6 throughput clips takes a planted 3 s: the core alone makes 2 clips/s.
    clock = Clock()
    unit = np.eye(4, dtype=np.float32)[0]
    calibration = [SimpleNamespace(z_v=unit, z_a=(1 + s) * unit) for s in (3.0, 1.0, 2.0)]
    videos = [SimpleNamespace(z_v=unit, z_a=unit) for _ in range(6)]

    class Model:
        def __init__(self, name: str, model: Any, config: dict[str, Any]) -> None:
            pass

        def embed(self, clips: list[Any]) -> tuple[np.ndarray, np.ndarray]:
            clock.advance(0.5 * len(clips) if clips is videos else 0.0)
            return np.stack([c.z_v for c in clips]), np.stack([c.z_a for c in clips])

    monkeypatch.setattr(pipeline, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(pipeline, "untrained_model", lambda directory, seed, profile: directory)
    monkeypatch.setattr(pipeline, "load_model", lambda directory: (None, {"w": 0.5}))
    monkeypatch.setattr(pipeline, "LoadedModel", Model)
    monkeypatch.setattr(pipeline, "clips_of", lambda files: videos)
    directory, clips, rate = pipeline.make_model(tmp_path, [Path("cam0.mp4")], calibration)
    assert (directory, clips, rate) == (tmp_path, 6, 2.0)
    saved = pipeline.Calibration.load(tmp_path / pipeline.CALIBRATION)
    assert saved.mean == pytest.approx(2.0) and saved.std == 0.0 and saved.threshold == pytest.approx(2.0)


def test_pipeline_ratios_and_latency_percentiles_from_planted_runs(monkeypatch, tmp_path) -> None:
    calls, scenes, brokers = [], [], []
    planted = {("inprocess", False): (2.0, 20.0, []), ("inprocess", True): (9.0, 1.0, [5.0, 1.0, 4.0, 2.0, 3.0]),
               ("kafka", False): (6.0, 10.0, []), ("kafka", True): (9.0, 1.0, [])}

    def scene(directory: Path, seed: int, duration: float, cameras: int) -> list[Path]:
        scenes.append((directory.name, seed, duration, cameras))
        return [directory / f"cam{i}.mp4" for i in range(cameras)]

    @contextmanager
    def broker_for(name: str) -> Iterator[str]:
        brokers.append(name)
        yield f"{name}://{len(brokers)}"

    def run_platform(videos: list[Path], model: Path, bus: str, data: Path, realtime: bool,
                     expected: int) -> tuple[float, float, list[float]]:
        calls.append((len(videos), model.name, bus, data.name, realtime, expected))
        return planted[bus.split(":")[0], realtime]

    monkeypatch.setattr(pipeline, "scene", scene)
    monkeypatch.setattr(pipeline, "clips_of", lambda videos: [None] * 12 * len(videos))
    monkeypatch.setattr(pipeline, "make_model", lambda directory, videos, live: (directory, 72, 40.0))
    monkeypatch.setattr(pipeline, "broker_for", broker_for)
    monkeypatch.setattr(pipeline, "run_platform", run_platform)
    r = pipeline.measure(36.0, 2, 6.0, 1, ("inprocess", "kafka"), tmp_path, log=lambda _: None)
    assert scenes == [("scene", 1, 36.0, 2), ("live-scene", 2, 6.0, 1)]  # two different scenes
    assert (r["clips"], r["core_clips_per_s"], r["cameras"], r["live_cameras"]) == (72, 40.0, 2, 1)
    # A fresh broker per run; throughput from the fast run, latency from the live-paced one.
    assert brokers == ["inprocess", "inprocess", "kafka", "kafka"]
    assert calls == [(2, "model", "inprocess://1", "inprocess-fast", False, 72),
                     (1, "model", "inprocess://2", "inprocess-live", True, 12),
                     (2, "model", "kafka://3", "kafka-fast", False, 72),
                     (1, "model", "kafka://4", "kafka-live", True, 12)]
    inprocess, kafka = r["buses"]["inprocess"], r["buses"]["kafka"]
    assert (inprocess["clips_per_s"], inprocess["ratio_to_core"], inprocess["startup_s"]) == (20.0, 0.5, 2.0)
    assert (kafka["clips_per_s"], kafka["ratio_to_core"], kafka["startup_s"]) == (10.0, 0.25, 6.0)
    # Latencies 1..5: p50 3, p95 at rank 0.95 * 4 = 3.8 between 4 and 5 (linear): 4.8.
    assert inprocess["latency_p50_s"] == 3.0 and inprocess["latency_p95_s"] == pytest.approx(4.8)
    assert kafka["latencies_s"] == [] and math.isnan(kafka["latency_p50_s"]) and math.isnan(kafka["latency_p95_s"])


# -- search (search_speed.py) ----------------------------------------------------------------------------


def test_search_latency_summary_of_planted_seconds() -> None:
    # 1 .. 20 s: median 10.5; p95 at rank 0.95 * 19 = 18.05, between 19 and 20: 19.05.
    assert search_speed.summary([float(s) for s in range(20, 0, -1)]) == pytest.approx(
        {"p50_s": 10.5, "p95_s": 19.05, "mean_s": 10.5})


def test_search_latencies_time_every_query_but_the_untimed_first(monkeypatch) -> None:
    clock, asked = Clock(), []

    def query(row: int) -> list[str]:
        asked.append(row)
        clock.advance(float(row))  # row r takes r seconds
        return [f"clip{row}"]

    monkeypatch.setattr(search_speed, "time", SimpleNamespace(perf_counter=clock))
    seconds, results = search_speed.latencies(query, [9, 1, 2, 3])
    assert asked == [9, 1, 2, 3] and seconds == [1.0, 2.0, 3.0] and results == [["clip1"], ["clip2"], ["clip3"]]


@pytest.mark.parametrize("candidates", [10_000, 4], ids=["every-clip", "grown"])
def test_platform_search_over_every_clip_agrees_fully_with_the_exact_scan(monkeypatch, candidates: int) -> None:
    # With as many candidates as clips, the platform re-ranks every clip exactly as the core's scan does:
    # the agreement must be exactly 1. 600 clips of 4 cameras span 150 s, so a 60 s exclusion and
    # separation leave results. Asked for 4 at first (the query itself among them, excluded), the search
    # asks for more until it has its 10 results, and agrees as fully.
    monkeypatch.setattr(EmbeddedVectors, "candidates", candidates)
    result = search_speed.measure_size(600, 3, efs=(16, 64), log=lambda _: None)
    assert [(figures["ef"], figures["agreement"]) for figures in result["platform"]] == [(16, 1.0), (64, 1.0)]
    assert (result["clips"], result["queries"]) == (600, 3) and result["fill_s"] > 0


# -- training (train_speed.py) ---------------------------------------------------------------------------


def test_timed_epochs_is_the_mean_seconds_of_the_epochs_run_in_order(monkeypatch) -> None:
    clock, ran = Clock(), []
    planted = {0: 1.0, 1: 2.0, 2: 6.0}

    class Trainer:
        def __init__(self, table: Any, out: Path, config: Any, progress: bool, log: Any) -> None:
            assert out.is_dir() and not progress

        def run_epoch(self, epoch: int) -> None:
            ran.append(epoch)
            clock.advance(planted[epoch])

    monkeypatch.setattr(train_speed, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(train_speed, "Trainer", Trainer)
    assert train_speed.timed_epochs(Table(8), train_speed.TrainConfig(), (0, 1, 2)) == 3.0
    assert ran == [0, 1, 2]


def test_training_seconds_per_hour_and_cache_speedup_from_planted_epoch_times(monkeypatch) -> None:
    # 1,800 clips are half an hour: seconds per epoch double to seconds per hour of video.
    calls = []
    planted = {("visual", True): 2.0, ("visual", False): 3.0, ("audio", True): 1.0, ("audio", False): 4.0}

    def timed_epochs(table: Table, config: Any, epochs: tuple[int, ...]) -> float:
        calls.append((len(table), config.method, config.cache_frozen, epochs))
        assert (config.profile, config.batch_size, config.schedule, config.audio_epochs) == ("tiny", 16, "layerwise",
                                                                                             3)
        if len(table) == train_speed.WARM_UP_CLIPS:
            return 100.0  # the warm-up: must not be counted
        return planted["visual" if epochs == (3,) else "audio", config.cache_frozen]

    monkeypatch.setattr(train_speed, "timed_epochs", timed_epochs)
    table = Table(1800)
    r = train_speed.measure(table, "tiny", "epg", 16)
    assert r == {"profile": "tiny", "method": "epg",
                 "visual_epoch_s_per_hour": 4.0, "visual_epoch_uncached_s_per_hour": 6.0, "visual_cache_speedup": 1.5,
                 "audio_epoch_s_per_hour": 2.0, "audio_epoch_uncached_s_per_hour": 8.0, "audio_cache_speedup": 4.0}
    # Warm-up on the first 4 clips with TPG, then each phase cached and not: the visual epoch comes after
    # the audio epochs (epoch 3), the audio-only epochs are 0, 1 and 2 in a row.
    assert calls == [(4, "tpg", True, (3,)), (1800, "epg", True, (3,)), (1800, "epg", False, (3,)),
                     (1800, "epg", True, (0, 1, 2)), (1800, "epg", False, (0, 1, 2))]
    assert table.masks[0].tolist() == [True] * 4 + [False] * 1796


# -- memory (service_memory.py) --------------------------------------------------------------------------


def test_memory_ratios_use_the_larger_of_sampled_and_kernel_peaks(monkeypatch, tmp_path) -> None:
    # Embedded: sampled 400 MB, kernel 500 MB: the baseline is 500. ingest 250 / 200 -> 250 (0.5x);
    # embedding 600 / 750 -> 750 (1.5x); together 1,000 MB, 2x the embedded process.
    seen = {}
    videos = [tmp_path / "cam0.mp4"]

    def embedded(files: list[Path], model: Path, root: Path, env: dict[str, str]) -> dict[str, float]:
        seen["embedded"] = (files, model, root.is_dir(), env["OMP_NUM_THREADS"])
        return {"peak_rss_mb": 400.0, "kernel_peak_rss_mb": 500.0}

    def distributed(files: list[Path], model: Path, clips: int, root: Path, env: dict[str, str],
                    log: Any) -> dict[str, Any]:
        seen["distributed"] = (files, model, clips, root.is_dir(), env["OMP_NUM_THREADS"])
        return {"services": {"ingest": {"peak_rss_mb": 250.0, "kernel_peak_rss_mb": 200.0},
                             "embedding": {"peak_rss_mb": 600.0, "kernel_peak_rss_mb": 750.0}},
                "infrastructure_peak_rss_mb": {"tansu": 30.0, "redis-server": 10.0}}

    monkeypatch.setattr(service_memory, "scene", lambda directory, seed, duration, cameras: videos)
    monkeypatch.setattr(service_memory, "clips_of", lambda files: [None] * 8)
    monkeypatch.setattr(service_memory, "make_model", lambda directory, files, clips: (directory, 8, 5.0))
    monkeypatch.setattr(service_memory, "embedded", embedded)
    monkeypatch.setattr(service_memory, "distributed", distributed)
    r = service_memory.measure(8.0, 1, tmp_path, log=lambda _: None)
    model = tmp_path / "model"
    assert seen == {"embedded": (videos, model, True, "1"), "distributed": (videos, model, 8, True, "1")}
    assert (r["duration_s"], r["cameras"], r["clips"]) == (8.0, 1, 8)
    assert r["services"]["ingest"]["ratio_to_embedded"] == 0.5
    assert r["services"]["embedding"]["ratio_to_embedded"] == 1.5
    assert r["services_total_mb"] == 1000.0 and r["total_ratio_to_embedded"] == 2.0
    assert r["infrastructure_peak_rss_mb"] == {"tansu": 30.0, "redis-server": 10.0}


def test_peak_rss_sees_a_child_holding_a_planted_block_of_memory() -> None:
    # The child holds 120 MiB (bytes it writes, so every page is resident) for a second, on top of an
    # interpreter of some 10 to 30 MB.
    child = subprocess.Popen([sys.executable, "-c", "import time; block = b'x' * (120 * 2**20); time.sleep(1.0)"])
    sampler = service_memory.PeakRss(interval_s=0.05)
    sampler.watch("child", child.pid)
    sampler.start()
    try:
        child.wait(timeout=30)
    finally:
        sampler.stop()
    assert 120 <= sampler.peak["child"] < 180
    assert sampler.high_water["child"] >= sampler.peak["child"]  # the kernel's mark is read after each sample
    assert service_memory.high_water_mb(child.pid) == 0.0  # reaped: no /proc entry left


# -- performance.py: the parts, run, plots and Markdown ----------------------------------------------------


def test_run_times_every_part_on_one_torch_thread_in_its_own_scratch_directory(monkeypatch, tmp_path) -> None:
    # Part i (from 1) takes a planted i seconds.
    clock, seen, drawn = Clock(), [], []

    def part(name: str, seconds: float) -> Any:
        def measure(settings: performance.Settings, scratch: Path, log: Any) -> dict[str, Any]:
            seen.append((name, settings, scratch.name, scratch.is_dir(), torch.get_num_threads()))
            clock.advance(seconds)
            return {"part": name}
        return measure

    monkeypatch.setattr(performance, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(performance, "PARTS", {name: part(name, float(i + 1))
                                               for i, name in enumerate(performance.PARTS)})
    monkeypatch.setattr(performance, "plots", lambda results, out: drawn.append(out.is_dir()) or {"search": "s.png"})
    with performance.torch_threads(2):  # a known count, so that "restored" means something
        results = performance.run(True, tmp_path / "out", log=lambda _: None)
        assert torch.get_num_threads() == 2
        full = performance.run(False, tmp_path / "full", log=lambda _: None)
    names = list(performance.PARTS)
    assert seen == [(name, settings, name, True, performance.THREADS)
                    for settings in (performance.QUICK, performance.FULL) for name in names]
    assert results["seconds"] == {name: float(i + 1) for i, name in enumerate(names)}
    assert results["quick"] is True and results["settings"] == asdict(performance.QUICK)
    assert full["quick"] is False and full["settings"] == asdict(performance.FULL)
    assert all(results[name] == {"part": name} for name in names)
    assert results["plots"] == {"search": "s.png"} and drawn == [True, True]
    assert results["machine"]["torch_threads"] == performance.THREADS
    assert json.loads(json.dumps(results))["settings"]["search_sizes"] == [1_000, 5_000]


def test_parts_pass_their_settings_to_the_bench_scripts(monkeypatch, tmp_path) -> None:
    calls: dict[str, list[tuple[Any, ...]]] = {}

    def recorder(name: str, result: Any) -> Any:
        def record(*args: Any, **named: Any) -> Any:
            args += tuple(named.values())  # e.g. search's log, passed by name after its defaulted efs
            calls.setdefault(name, []).append(args)
            return result(args) if callable(result) else result
        return record

    rates = {"loop_clips_per_s": 1.0, "batched_clips_per_s": {"1": 1.0}}
    monkeypatch.setattr(encoder_speed, "embedder_speed", recorder("embedder", lambda args: {**rates,
                                                                                         "profile": args[0]}))
    monkeypatch.setattr(segment_speed, "measure", recorder("segmentation", {
        "avsurv_x_realtime": 1.0, "naive_x_realtime": 1.0, "decode_only_x_realtime": 1.0}))
    for module, name in ((pipeline, "pipeline"), (search_speed, "search"), (service_memory, "memory")):
        monkeypatch.setattr(module, "measure", recorder(name, {}))
    quick, log = performance.QUICK, lambda _: None
    assert [p["profile"] for p in performance.embedder(quick, tmp_path, log)["profiles"]] == ["tiny", "paper"]
    performance.segmentation(quick, tmp_path, log)
    performance.pipeline_part(quick, tmp_path, log)
    performance.search(quick, tmp_path, log)
    performance.memory(quick, tmp_path, log)
    assert calls == {"embedder": [("tiny", (1, 4), 2, 4), ("paper", (1,), 1, 1)], "segmentation": [(4,)],
                     "pipeline": [(36, 1, 6, 1, ("inprocess", "kafka"), tmp_path, log)],
                     "search": [((1_000, 5_000), 10, log)], "memory": [(8, 1, tmp_path, log)]}


def test_training_part_trains_each_method_on_its_first_clips(monkeypatch) -> None:
    table, asked = Table(10), []
    times = {"visual_epoch_s_per_hour": 1.0, "visual_cache_speedup": 1.0, "audio_epoch_s_per_hour": 1.0,
             "audio_cache_speedup": 1.0}

    def measure(clips: Table, profile: str, method: str, batch: int) -> dict[str, Any]:
        return {"profile": profile, "method": method, "batch": batch, **times}

    monkeypatch.setattr(train_speed, "scene_clips", lambda seconds: asked.append(seconds) or table)
    monkeypatch.setattr(train_speed, "measure", measure)
    settings = performance.Settings(train_s=8, training=(performance.Training("tiny", ("epg", "tpg"), None),
                                                         performance.Training("paper", ("epg",), 6)))
    r = performance.training(settings, Path("."), lambda _: None)
    assert asked == [8] and (r["batch_size"], r["audio_epochs"]) == (performance.TRAIN_BATCH, train_speed.AUDIO_EPOCHS)
    assert [(row["profile"], row["method"], row["clips"], row["batch"]) for row in r["rows"]] == [
        ("tiny", "epg", 10, 32), ("tiny", "tpg", 10, 32), ("paper", "epg", 6, 32)]
    assert table.masks[0].tolist() == [True] * 6 + [False] * 4  # the paper profile's first 6 clips


def planted_results(quick: bool = True) -> dict[str, Any]:
    """Figures of every part, chosen so that each cell the Markdown computes is known by hand."""
    bus = {"clips_per_s": 10.0, "ratio_to_core": 0.5, "startup_s": 1.5, "latencies_s": [1.0, 2.0],
           "latency_p50_s": 1.5, "latency_p95_s": 1.95}
    return {
        "quick": quick, "machine": {"cpus": 2, "torch_threads": 1},
        "seconds": {"embedder": 30.0, "segmentation": 12.0, "pipeline": 60.0, "search": 6.0, "training": 24.0,
                    "memory": 48.0},
        "plots": {"embedder": "perf-embedder.png", "search": "perf-search.png", "memory": "perf-memory.png"},
        "embedder": {"profiles": [{"profile": "tiny", "repeats": 2, "loop_clips_per_s": 2.0,
                                   "batched_clips_per_s": {"1": 2.0, "4": 8.0}, "speedup": {"1": 1.0, "4": 4.0},
                                   "clips_timed": {"1": 4, "4": 4}}]},
        "segmentation": {"video_s": 4.0, "file_mb": 2.5, "avsurv_s": 2.0, "naive_s": 6.0, "decode_only_s": 1.0,
                         "avsurv_x_realtime": 2.0, "naive_x_realtime": 4 / 6, "decode_only_x_realtime": 4.0},
        "pipeline": {"cameras": 1, "duration_s": 36.0, "clips": 36, "core_clips_per_s": 20.0, "live_cameras": 1,
                     "live_duration_s": 6.0,
                     "buses": {"inprocess": bus, "kafka": bus | {"clips_per_s": 5.0, "ratio_to_core": 0.25,
                                                                  "startup_s": 4.0, "latencies_s": [2.0, 3.0, 4.0],
                                                                  "latency_p50_s": 3.0, "latency_p95_s": 3.9}}},
        "search": {"top_k": 10, "cameras": 4, "candidates": 512, "tmpfs": True,
                   "sizes": [{"clips": 1000, "exact": {"p50_s": 0.002, "p95_s": 0.004},
                              "platform": [{"ef": 8192, "p50_s": 0.003, "p95_s": 0.009,
                                            "p50_ratio_platform_to_exact": 1.5, "agreement": 1.0}],
                              "fill_s": 12.3}]},
        "training": {"batch_size": 32, "audio_epochs": 3, "rows": [
            {"profile": "tiny", "method": "epg", "clips": 8, "visual_epoch_s_per_hour": 1200.0,
             "visual_epoch_uncached_s_per_hour": 1500.0, "visual_cache_speedup": 1.25,
             "audio_epoch_s_per_hour": 600.0, "audio_epoch_uncached_s_per_hour": 1800.0, "audio_cache_speedup": 3.0}]},
        "memory": {"cameras": 1, "duration_s": 8.0, "clips": 8,
                   "embedded": {"peak_rss_mb": 400.0, "kernel_peak_rss_mb": 500.0},
                   "services": {"ingest": {"peak_rss_mb": 250.0, "kernel_peak_rss_mb": 200.0},
                                "embedding": {"peak_rss_mb": 600.0, "kernel_peak_rss_mb": 750.0}},
                   "services_total_mb": 1000.0, "total_ratio_to_embedded": 2.0,
                   "infrastructure_peak_rss_mb": {"tansu": 30.0, "redis-server": 10.0}},
    }


def test_markdown_tables_hold_the_planted_figures_and_the_ratios_they_imply() -> None:
    text = performance.markdown(planted_results(), "python bench/performance.py --quick")
    lines = text.splitlines()
    expected = [
        # embedder: B=4 at 8 clips/s against 2 clips/s one at a time
        "| tiny | 4 | 8.00 | 2.00 | 4.00x | 2 x 4 |",
        # segmentation: speed against the naive 6 s, computed by the table: 6 / 2, 6 / 6, 6 / 1
        "| avsurv `Segmenter` (clips + log-mels) | 2.00 | 2.00 | 3.00x |",
        "| naive baseline | 6.00 | 0.67 | 1.00x |", "| decode only (floor) | 1.00 | 4.00 | 6.00x |",
        # pipeline: throughput, then events counted and p50 against the in-process bus's 1.5 s
        "| kafka | 5.00 | 20.00 | 0.25x | 4.0 |",
        "| inprocess | 2 | 1.50 | 1.95 | 1.00x |", "| kafka | 3 | 3.00 | 3.90 | 2.00x |",
        # search, in ms
        "| 1,000 | 8192 | 2 / 4 | 3 / 9 | 1.50x | 1.00 | 12 |",
        "| tiny | epg | 8 | 1,200 s | 1,500 s | 1.25x | 600 s | 1,800 s | 3.00x |",
        # memory: the peak column is the larger of the two, ratios against the embedded 500 MB
        "| embedded `avsurv run` (baseline) | 400 | 500 | 500 | 1.00x |",
        "| `avsurv serve ingest` | 250 | 200 | 250 | 0.50x |", "| `avsurv serve embedding` | 600 | 750 | 750 | 1.50x |",
        "| the six services together (sum of peaks) | | | 1,000 | 2.00x |",
    ]
    for line in expected:
        assert line in lines
    assert ("Took embedder 30 s, segmentation 12 s, pipeline 60 s, search 6 s, training 24 s, memory 48 s "
            "(3.0 min).") in lines[0]
    assert "`python bench/performance.py --quick` (quick mode" in lines[0]
    assert "1 intra-op thread on a 2-CPU" in lines[0]
    assert f"With fewer than {performance.FEW_EVENTS} events" in text  # 2 and 3 events
    assert "Infrastructure of the distributed run (not in the sum): tansu 30 MB, redis-server 10 MB." in text
    assert "The store was written to tmpfs." in text and "n/a" not in text
    for heading in ("Embedder throughput", "Decode + segmentation", "Pipeline throughput", "Search latency",
                    "Training speed", "Peak memory"):
        assert sum(line.startswith(f"### {heading}") for line in lines) == 1
    for part, name in planted_results()["plots"].items():
        assert f"![{part}](results/{name})" in lines
    assert "![search](perf-search.png)" in performance.markdown(planted_results(), "c", images="").splitlines()


def test_markdown_shows_n_a_for_missing_figures_and_no_quick_note_in_full_mode() -> None:
    # Kafka embedded its scene in one batch (no rate) and produced no event (no latency): every cell
    # derived from them reads "n/a", ratios included.
    results = planted_results(quick=False)
    results["pipeline"]["buses"]["kafka"] |= {"clips_per_s": math.nan, "ratio_to_core": math.nan, "latencies_s": [],
                                              "latency_p50_s": math.nan, "latency_p95_s": math.nan}
    many = [1.0] * performance.FEW_EVENTS
    results["pipeline"]["buses"]["inprocess"]["latencies_s"] = many
    lines = performance.markdown(results, "python bench/performance.py").splitlines()
    assert "| kafka | n/a | 20.00 | n/a | 4.0 |" in lines
    assert "| kafka | 0 | n/a | n/a | n/a |" in lines and "| inprocess | 20 | 1.50 | 1.95 | 1.00x |" in lines
    assert "quick mode" not in lines[0]
    del results["pipeline"]["buses"]["kafka"]  # 20 events on every bus: no rough-figure note
    assert "With fewer than" not in performance.markdown(results, "python bench/performance.py")


def test_plots_of_planted_figures_are_written(tmp_path) -> None:
    names = performance.plots(planted_results(), tmp_path)
    assert names == {"embedder": "perf-embedder.png", "search": "perf-search.png", "memory": "perf-memory.png"}
    for name in names.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / name).stat().st_size > 1000


# -- one real quick run ----------------------------------------------------------------------------------


def test_quick_run_measures_every_part(quick_suite: Path) -> None:
    """What only real measurements can show; the arithmetic on them is tested above."""
    out = quick_suite / "results"
    figures = json.loads((out / "performance.json").read_text())
    assert set(figures["seconds"]) == set(performance.PARTS)
    assert {p["profile"] for p in figures["embedder"]["profiles"]} == {e.profile for e in performance.QUICK.embedders}
    assert figures["segmentation"]["clips"] == int(figures["segmentation"]["video_s"])  # one clip per second
    for bus in figures["pipeline"]["buses"].values():
        assert bus["latencies_s"], "the calibration makes about half the seconds anomalous: some events must come"
        # An event closes on the clip after its run: it cannot be published before that clip was captured.
        assert all(math.isfinite(s) and s > 0 for s in bus["latencies_s"])
    assert set(figures["pipeline"]["buses"]) == set(performance.QUICK.buses)
    assert [row["clips"] for row in figures["search"]["sizes"]] == list(performance.QUICK.search_sizes)
    # At 5,000 clips the default ef walks most of the joint graph: the platform finds the exact scan's results.
    assert figures["search"]["sizes"][-1]["platform"][0]["agreement"] == 1.0
    memory = figures["memory"]
    assert set(memory["services"]) == set(SERVICES)
    assert set(memory["infrastructure_peak_rss_mb"]) == set(service_memory.INFRASTRUCTURE)
    # A Python process that imported torch and the platform: far above 100 MB.
    assert all(p["peak_rss_mb"] > 100 for p in [memory["embedded"], *memory["services"].values()])
    for name in figures["plots"].values():
        assert (out / name).stat().st_size > 1000
    text = performance.markdown(figures, "python bench/performance.py --quick")
    assert "n/a" not in text  # every figure measured and finite

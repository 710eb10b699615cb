"""bench/many_cameras.py's arithmetic on planted inputs: what the bench reads of the embeddings topic (clips,
losses, latencies, backlog per window), and the CPU seconds it reads of each process of a distributed run."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import many_cameras

from avsurv.adapters.bus import InProcessBus
from avsurv.platform.messages import EMBEDDINGS, header
from avsurv.v1 import messages_pb2 as pb

NOW = 1_700_000_100.0


def _embedded(bus: InProcessBus, camera: str, capture_times: list[float]) -> None:
    for capture in capture_times:
        bus.publish(EMBEDDINGS, camera, pb.Embedding(
            header=header("site", camera, f"{camera}:{int(capture * 1000)}", capture)).SerializeToString())


def test_tally_counts_clips_losses_and_latencies_per_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency: wall clock at reading less the clip's capture end (capture time + 1 s); a live run may cut one
    clip less per camera than the core, a fast run may not."""
    bus = InProcessBus()
    tally = many_cameras.Tally(bus.subscribe("bench-embeddings", [EMBEDDINGS]))
    _embedded(bus, "cam0", [NOW - 3.0, NOW - 5.0, NOW - 7.0])  # latencies 2, 4 and 6 s
    _embedded(bus, "cam1", [NOW - 2.0])  # 1 s
    monkeypatch.setattr(many_cameras.time, "time", lambda: NOW)
    tally.collect(0.1)
    tally.sample(lambda: 10)  # 10 stored, 4 embedded
    expected = {"cam0": 3, "cam1": 3}
    fast = tally.result(expected, {"cam0": 3, "cam1": 3}, realtime=False)
    assert fast["embedded"] == 4 and fast["max_backlog"] == 6
    assert fast["cameras"]["cam0"] == {"expected": 3, "stored": 3, "embedded": 3, "lost": 0,
                                       "latency_p50_s": 4.0, "latency_p95_s": pytest.approx(5.8)}
    assert fast["cameras"]["cam1"]["lost"] == 2 and fast["cameras"]["cam1"]["latency_p50_s"] == 1.0
    assert fast["latency_p50_per_window_s"] == [3.0]  # all four read in the first 10 s of the run
    assert tally.result(expected, {"cam0": 3, "cam1": 3}, realtime=True)["cameras"]["cam1"]["lost"] == 1


def test_windows_group_samples_by_ten_seconds_of_the_run_and_keep_empty_ones() -> None:
    samples = [(0.5, 1.0), (9.9, 3.0), (25.0, 7.0)]
    assert many_cameras._windows(samples) == [[1.0, 3.0], [], [7.0]]
    assert many_cameras._windows([]) == []


def test_cpu_seconds_of_a_process_follow_its_own_clock() -> None:
    before, own_before = many_cameras.cpu_seconds(os.getpid()), sum(os.times()[:2])
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # 0.3 s of CPU
        pass
    spent, own = many_cameras.cpu_seconds(os.getpid()) - before, sum(os.times()[:2]) - own_before
    assert spent >= 0.25
    assert spent == pytest.approx(own, abs=0.05)

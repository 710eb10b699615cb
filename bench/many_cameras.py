"""Many cameras through the whole platform (issue 17 item 6): per camera, clips cut, stored and embedded, and
the embedding lag, embedded (in-process bus) and over Kafka.

    python bench/many_cameras.py [--cameras 32] [--duration 20] [--bus inprocess kafka] [--profile fg]

Generated scenes of ``--cameras`` cameras in all (16 per scene; 640x360 H.264 + AAC), an untrained model of
``--profile`` (by default the platform's, ``fg``, embedded in the precision ``auto`` picks; speed does not depend
on the weights; bench/pipeline.py's). Per bus, two runs on a fresh broker and data directory:
- as fast as the files decode: clips/s through the platform, from the first embedded clip to the last;
- paced like live cameras (capture time = wall clock): per camera, the latency from the capture end of a clip
  to its embedding on the embeddings topic (p50 / p95), and that latency's median over the clips embedded in
  each 10 s of the run: a latency that stops growing is a platform that keeps up. Both runs also report the
  backlog (clips stored but not yet embedded, sampled every 0.5 s) at its largest, overall and per 10 s; it
  leaves out the chunks still waiting for segmentation, so a backlog that holds steady is not enough.
In both, every camera's clips are counted against what the core alone cuts from its file (a live run may cut
one less per camera: its clip grid follows the wall clock): "lost" is a clip cut and never embedded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import TIMEOUT_S, broker_for, clips_of, make_model, scene, start_cameras

from avsurv.constants import DEFAULT_PROFILE, PROFILE_NAMES
from avsurv.media import Segmenter
from avsurv.platform.config import load_settings
from avsurv.platform.messages import EMBEDDINGS
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.v1 import messages_pb2 as pb

SAMPLE_S = 0.5
"""How often the backlog is sampled."""
WINDOW_S = 10.0
"""The latency and the backlog are also reported per window of this many seconds of the run."""
SCENE_CAMERAS = 16
"""The most cameras one generated scene films; more cameras are several scenes (other seeds), renamed."""


def run(videos: list[Path], model: Path, bus: str, data: Path, realtime: bool,
        expected: dict[str, int]) -> dict[str, Any]:
    """One run of the platform over ``videos``; ``expected``: clips the core cuts per camera."""
    settings = load_settings(environ={}, data_dir=data, model=str(model), grpc_port=0, bus=bus,
                             realtime_files=realtime, kafka_max_poll_interval_ms=5000, anomaly_detector="eq5")
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    embedded: Counter[str] = Counter()
    latencies: dict[str, list[float]] = defaultdict(list)
    timeline: list[tuple[float, float]] = []  # (seconds into the run, latency) of each embedded clip
    backlog: list[tuple[float, int]] = []  # (seconds into the run, clips stored but not embedded)
    first, last, started = None, None, time.monotonic()
    events = runtime.ports.bus.subscribe("bench-embeddings", [EMBEDDINGS])

    def collect(timeout_s: float) -> None:
        nonlocal first, last
        for message in events.poll(timeout_s=timeout_s, max_messages=1000):
            header = pb.Embedding.FromString(message.value).header
            now = time.time()
            first, last = first or now, now
            embedded[header.camera_id] += 1
            latencies[header.camera_id].append(now - header.capture_time - 1.0)
            timeline.append((time.monotonic() - started, latencies[header.camera_id][-1]))

    try:
        start_cameras(runtime, videos, events, collect)
        deadline, sampled = time.monotonic() + TIMEOUT_S, 0.0
        while not (runtime.workers["ingest"].finished() and runtime.workers["segmentation"].tracker.pending() == 0
                   and sum(embedded.values()) >= len(runtime.ports.archive)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sum(embedded.values())} clips embedded after {TIMEOUT_S:.0f} s")
            collect(0.1)
            if time.monotonic() - sampled >= SAMPLE_S:
                sampled = time.monotonic()
                backlog.append((sampled - started, len(runtime.ports.archive) - sum(embedded.values())))
        stored = {camera: len(runtime.ports.archive.clip_ids(camera)) for camera in expected}
    finally:
        events.close()
        runtime.stop()
    cameras = {camera: {"expected": n, "stored": stored[camera], "embedded": embedded[camera],
                        "lost": max(0, n - (1 if realtime else 0) - embedded[camera]),
                        "latency_p50_s": float(np.percentile(latencies[camera], 50)) if latencies[camera] else None,
                        "latency_p95_s": float(np.percentile(latencies[camera], 95)) if latencies[camera] else None}
               for camera, n in expected.items()}
    total = sum(embedded.values())
    return {"clips_per_s": total / (last - first) if first and last and last > first else float("nan"),
            "embedded": total, "max_backlog": max((n for _, n in backlog), default=0),
            "backlog_per_window": [max(w, default=0) for w in _windows(backlog)],
            "latency_p50_per_window_s": [float(np.median(w)) if w else None for w in _windows(timeline)],
            "cameras": cameras}


def _windows(samples: list[tuple[float, float]]) -> list[list[float]]:
    """The values of ``samples`` (seconds into the run, value) in each WINDOW_S of the run."""
    windows: dict[int, list[float]] = defaultdict(list)
    for t, value in samples:
        windows[int(t // WINDOW_S)].append(value)
    return [windows.get(i, []) for i in range(max(windows) + 1)] if windows else []


def report(bus: str, mode: str, result: dict[str, Any]) -> None:
    cameras = result["cameras"].values()
    lost = sum(c["lost"] for c in cameras)
    print(f"{bus:>9} {mode:>5}: {result['embedded']} clips embedded, {result['clips_per_s']:.1f} clips/s, "
          f"{lost} lost, largest backlog {result['max_backlog']} clips (per {WINDOW_S:g} s: "
          f"{', '.join(map(str, result['backlog_per_window']))})", flush=True)
    if mode == "live":
        p50 = [c["latency_p50_s"] for c in cameras if c["latency_p50_s"] is not None]
        p95 = [c["latency_p95_s"] for c in cameras if c["latency_p95_s"] is not None]
        print(f"{'':>16} per camera: latency p50 {min(p50):.2f}-{max(p50):.2f} s, p95 {min(p95):.2f}-{max(p95):.2f}"
              f" s; clips per camera {min(c['embedded'] for c in cameras)}-{max(c['embedded'] for c in cameras)}",
              flush=True)
        windows = ", ".join("-" if p is None else f"{p:.1f}" for p in result["latency_p50_per_window_s"])
        print(f"{'':>16} latency p50 per {WINDOW_S:g} s of the run: {windows} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the scene (20)")
    parser.add_argument("--bus", nargs="+", default=["inprocess", "kafka"], choices=["inprocess", "kafka"])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILE_NAMES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        videos, cameras = [], root / "cameras"
        cameras.mkdir()
        for part, first in enumerate(range(0, args.cameras, SCENE_CAMERAS)):
            count = min(SCENE_CAMERAS, args.cameras - first)
            for video in scene(root / f"scene{part}", 3 + part, args.duration, count):
                number = first + int(video.stem.removeprefix("cam"))
                videos.append(video.rename(cameras / f"cam{number}{video.suffix}"))
        expected = {video.stem: sum(1 for _ in Segmenter(str(video))) for video in videos}
        model, _, _ = make_model(root / "model", videos[:1], clips_of(videos[:2]), args.profile)
        print(f"{args.cameras} cameras x {args.duration:g} s: {sum(expected.values())} clips, {args.profile} "
              f"model; scene and counts in {time.perf_counter() - started:.0f} s", flush=True)
        for bus_name in args.bus:
            for mode, realtime in (("fast", False), ("live", True)):
                with broker_for(bus_name) as bus:
                    result = run(videos, model, bus, root / f"{bus_name}-{mode}", realtime, expected)
                report(bus_name, mode, result)


if __name__ == "__main__":
    main()

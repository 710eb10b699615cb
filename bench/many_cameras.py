"""Many cameras through the whole platform (issue 17 item 6): per camera, clips cut, stored and embedded, and
the embedding lag: the six services in one process, on the in-process bus and over Kafka, and (``processes``)
the distributed deployment, each service in its own process over Kafka as compose and k8s run them, with each
process's CPU seconds per clip.

    python bench/many_cameras.py [--cameras 32] [--duration 20] [--bus inprocess kafka processes] [--profile fg]

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
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import TIMEOUT_S, broker_for, clips_of, make_model, scene, start_cameras
from platformkit import Service, start_services, wait_for
from realparts import free_port, kafka_broker_process, redis_server_process

from avsurv.adapters.bus import Subscription
from avsurv.adapters.kafka_bus import KafkaBus
from avsurv.adapters.state import connect_state
from avsurv.constants import DEFAULT_PROFILE, PROFILE_NAMES
from avsurv.media import Segmenter
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import load_settings
from avsurv.platform.messages import EMBEDDINGS
from avsurv.platform.registry import Registry
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.v1 import messages_pb2 as pb

SAMPLE_S = 0.5
"""How often the backlog is sampled."""
WINDOW_S = 10.0
"""The latency and the backlog are also reported per window of this many seconds of the run."""
MAX_POLL_INTERVAL_MS = 5000
"""Kafka consumers' poll interval, the pipeline bench's (a Tansu group join takes about this long)."""
SETTLED = 30
"""A distributed run ends once every camera is read, every stored clip embedded, and the clip store has not
grown over this many polls of the embeddings topic (0.1 s each)."""
SCENE_CAMERAS = 16
"""The most cameras one generated scene films; more cameras are several scenes (other seeds), renamed."""


class Tally:
    """What the bench reads of the embeddings topic in one run: clips and latencies per camera, and the backlog."""

    def __init__(self, events: Subscription) -> None:
        self.events = events
        self.embedded: Counter[str] = Counter()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.timeline: list[tuple[float, float]] = []  # (seconds into the run, latency) of each embedded clip
        self.backlog: list[tuple[float, int]] = []  # (seconds into the run, clips stored but not embedded)
        self.first: float | None = None
        self.last: float | None = None
        self.started = time.monotonic()
        self._sampled = 0.0

    def collect(self, timeout_s: float) -> None:
        for message in self.events.poll(timeout_s=timeout_s, max_messages=1000):
            header = pb.Embedding.FromString(message.value).header
            now = time.time()
            self.first, self.last = self.first or now, now
            self.embedded[header.camera_id] += 1
            self.latencies[header.camera_id].append(now - header.capture_time - 1.0)
            self.timeline.append((time.monotonic() - self.started, self.latencies[header.camera_id][-1]))

    def total(self) -> int:
        return sum(self.embedded.values())

    def sample(self, stored: Callable[[], int]) -> None:
        """Every SAMPLE_S, the backlog: ``stored()`` clips less those embedded."""
        if time.monotonic() - self._sampled >= SAMPLE_S:
            self._sampled = time.monotonic()
            self.backlog.append((self._sampled - self.started, stored() - self.total()))

    def result(self, expected: dict[str, int], stored: dict[str, int], realtime: bool) -> dict[str, Any]:
        latencies = self.latencies
        cameras = {camera: {"expected": n, "stored": stored[camera], "embedded": self.embedded[camera],
                            "lost": max(0, n - (1 if realtime else 0) - self.embedded[camera]),
                            "latency_p50_s": float(np.percentile(latencies[camera], 50)) if latencies[camera] else None,
                            "latency_p95_s": float(np.percentile(latencies[camera], 95)) if latencies[camera] else None}
                   for camera, n in expected.items()}
        first, last = self.first, self.last
        return {"clips_per_s": self.total() / (last - first) if first and last and last > first else float("nan"),
                "embedded": self.total(), "max_backlog": max((n for _, n in self.backlog), default=0),
                "backlog_per_window": [max(w, default=0) for w in _windows(self.backlog)],
                "latency_p50_per_window_s": [float(np.median(w)) if w else None for w in _windows(self.timeline)],
                "cameras": cameras}


def run(videos: list[Path], model: Path, bus: str, data: Path, realtime: bool,
        expected: dict[str, int]) -> dict[str, Any]:
    """One run of the platform in one process over ``videos``; ``expected``: clips the core cuts per camera."""
    settings = load_settings(environ={}, data_dir=data, model=str(model), grpc_port=0, bus=bus,
                             realtime_files=realtime, kafka_max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
                             anomaly_detector="eq5")
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    tally = Tally(runtime.ports.bus.subscribe("bench-embeddings", [EMBEDDINGS]))
    try:
        start_cameras(runtime, videos, tally.events, tally.collect)
        deadline = time.monotonic() + TIMEOUT_S
        while not (runtime.workers["ingest"].finished() and runtime.workers["segmentation"].tracker.pending() == 0
                   and tally.total() >= len(runtime.ports.archive)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tally.total()} clips embedded after {TIMEOUT_S:.0f} s")
            tally.collect(0.1)
            tally.sample(lambda: len(runtime.ports.archive))
        stored = {camera: len(runtime.ports.archive.clip_ids(camera)) for camera in expected}
    finally:
        tally.events.close()
        runtime.stop()
    return tally.result(expected, stored, realtime)


def run_processes(videos: list[Path], model: Path, data: Path, realtime: bool,
                  expected: dict[str, int]) -> dict[str, Any]:
    """One run of the distributed deployment over ``videos``: the six services each in its own process
    (``avsurv serve NAME``, as compose and k8s run them) over a fresh Kafka broker, with Redis and Qdrant's local
    mode shared on disk. Adds to the result each process's CPU seconds from the cameras' start to the last clip
    embedded (``cpu_s``; start-up left out) and that run's wall seconds (``run_s``)."""
    logs = data / "logs"
    logs.mkdir(parents=True)
    with kafka_broker_process() as (broker, broker_process), \
            redis_server_process(data) as (redis_url, redis_process):
        env = {**os.environ, "AVSURV_BUS": f"kafka://{broker}", "AVSURV_STATE": redis_url,
               "AVSURV_VECTORS": f"local-shared://{data / 'qdrant'}", "AVSURV_DATA_DIR": str(data / "data"),
               "AVSURV_ARTIFACTS": str(data / "artifacts"), "AVSURV_CLIP_STORE": str(data / "clips"),
               "AVSURV_MODEL": str(model), "AVSURV_REALTIME_FILES": str(realtime).lower(),
               "AVSURV_KAFKA_MAX_POLL_INTERVAL_MS": str(MAX_POLL_INTERVAL_MS), "AVSURV_ANOMALY_DETECTOR": "eq5"}
        services = {name: Service(name, {**env, "AVSURV_GRPC_PORT": str(free_port())}, logs) for name in SERVICES}
        archive, registry = ClipArchive(data / "clips"), Registry(connect_state(redis_url), "default")
        try:
            start_services(services)
            wait_for(services["ingest"].serving, TIMEOUT_S, "ingest to serve")
            tally = Tally(KafkaBus(broker).subscribe("bench-embeddings", [EMBEDDINGS]))
            # The services subscribed before the bench: once its group has its partitions, theirs have.
            while not tally.events.consumer.assignment():
                tally.collect(0.1)
            pids = {name: service.process.pid for name, service in services.items()}
            pids |= {"broker": broker_process.pid, "redis": redis_process.pid, "bench": os.getpid()}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            tally.started = time.monotonic()
            for video in videos:
                registry.want_camera(video.stem, str(video))
            deadline, counts = time.monotonic() + TIMEOUT_S, [-1]
            while not ({c.status for c in registry.camera_states()} == {"finished"}
                       and tally.total() >= counts[-1] and len(counts) > SETTLED and len(set(counts[-SETTLED:])) == 1):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{tally.total()} clips embedded after {TIMEOUT_S:.0f} s")
                tally.collect(0.1)
                counts.append(len(archive))
                tally.sample(lambda: counts[-1])
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            tally.events.close()
        finally:
            codes = {name: service.stop() for name, service in services.items()}
            if any(code != 0 for code in codes.values()):
                print(f"exit codes after SIGTERM: {codes}; logs lost with the scratch directory", flush=True)
    stored = {camera: len(archive.clip_ids(camera)) for camera in expected}
    return {**tally.result(expected, stored, realtime), "cpu_s": cpu, "run_s": time.monotonic() - tally.started}


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a running process so far (``/proc``, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    if "cpu_s" in result:
        cpu, clips = result["cpu_s"], max(1, result["embedded"])
        print(f"{'':>16} CPU s over the {result['run_s']:.0f} s run ({sum(cpu.values()) / result['run_s']:.2f} cores;"
              f" ms per clip): " + ", ".join(f"{name} {s:.1f} ({1000 * s / clips:.0f})" for name, s in cpu.items()),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the scene (20)")
    parser.add_argument("--bus", nargs="+", default=["inprocess", "kafka"], choices=["inprocess", "kafka", "processes"],
                        help="inprocess and kafka: the six services in one process; processes: each in its own over "
                             "Kafka, the distributed deployment (default: inprocess kafka)")
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
                data = root / f"{bus_name}-{mode}"
                if bus_name == "processes":
                    result = run_processes(videos, model, data, realtime, expected)
                else:
                    with broker_for(bus_name) as bus:
                        result = run(videos, model, bus, data, realtime, expected)
                report(bus_name, mode, result)


if __name__ == "__main__":
    main()

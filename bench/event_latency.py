"""Anomaly event lifecycle latency (issue 16 item 1): from the capture end of an event's first anomalous clip
to its NEW message on ``avsurv.anomalies.v1``, against the end-of-run publication in the same run (from the
capture end of the event's last clip to its END message, which is when the single event message of before
the lifecycle went out).

    python bench/event_latency.py [--duration 60] [--cameras 3] [--bus inprocess kafka]
                                  [--chunk-seconds S] [--batch-wait-s S]

Cameras paced like live ones (capture time = wall clock) on a generated scene, through the whole embedded
platform, started once every consumer group has joined (``pipeline.start_cameras``: start-up is not
measured here); the untrained ``tiny`` model with the threshold at its median score on the scene, as in
``bench/pipeline.py`` (about half the seconds anomalous: the most events per second of video). A NEW
message's ``end_time`` is the capture end of the event's first clip, an END's of its last clip; the wall
clock at which the message is polled minus that is the latency. Events still open when the cameras end
close after ``IDLE_S`` (their END latency then includes it; they are left out of the END figures).
``--chunk-seconds`` and ``--batch-wait-s`` set the ingest chunk and embedding batch wait (default: the
settings' defaults), the two waits a clip has before it is scored.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package

import pipeline

from avsurv.platform.config import load_settings
from avsurv.platform.messages import ANOMALIES
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.v1 import messages_pb2 as pb

IDLE_S = pipeline.IDLE_S
PHASES = {pb.AnomalyEvent.NEW: "new", pb.AnomalyEvent.END: "end"}


def run(videos: list[Path], model: Path, bus: str, data: Path, **tuning: float) -> dict[str, list[float]]:
    """Latencies (s) of the NEW and END messages of a live-paced run, by phase name; ``tuning``: settings."""
    settings = load_settings(environ={}, data_dir=data, model=str(model), grpc_port=0, bus=bus, **tuning,
                             realtime_files=True, anomaly_run_idle_s=IDLE_S, kafka_max_poll_interval_ms=5000,
                             anomaly_detector="eq5")
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    latencies: dict[str, list[float]] = {name: [] for name in PHASES.values()}
    events = runtime.ports.bus.subscribe("bench-event-latency", [ANOMALIES])
    ingest, segmentation, embedder = (runtime.workers[n] for n in ("ingest", "segmentation", "embedding"))

    def collect(timeout_s: float, closing: bool = False) -> None:
        for message in events.poll(timeout_s=timeout_s):
            event = pb.AnomalyEvent.FromString(message.value)
            if event.phase in PHASES and not (closing and event.phase == pb.AnomalyEvent.END):
                latencies[PHASES[event.phase]].append(time.time() - event.end_time)

    try:
        pipeline.start_cameras(runtime, videos, events, collect)
        deadline = time.monotonic() + pipeline.TIMEOUT_S
        while not (ingest.finished() and segmentation.tracker.pending() == 0
                   and embedder.clips_embedded >= len(runtime.ports.archive)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{bus}: not every clip embedded after {pipeline.TIMEOUT_S:.0f} s")
            collect(0.1)
        drain_until = time.monotonic() + IDLE_S + 3  # the runs still open close after IDLE_S
        while time.monotonic() < drain_until:
            collect(0.5, closing=True)
    finally:
        events.close()
        runtime.stop()
    return latencies


def measure(duration: float, cameras: int, buses: Sequence[str], scratch: Path, **tuning: float) -> None:
    videos = pipeline.scene(scratch / "scene", 2, duration, cameras)
    model, _, _ = pipeline.make_model(scratch / "model", videos[:1], pipeline.clips_of(videos))
    for name in buses:
        with pipeline.broker_for(name) as bus:
            latencies = run(videos, model, bus, scratch / name, **tuning)
        for phase, values in latencies.items():
            p50, p95 = np.percentile(values, [50, 95]) if values else (np.nan, np.nan)
            print(f"{name:>9} {phase:>3}: capture end of the event's {'first' if phase == 'new' else 'last'} "
                  f"clip to its {phase.upper()} message: p50 {p50:.2f} s, p95 {p95:.2f} s over {len(values)} "
                  f"events", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the live-paced scene (60)")
    parser.add_argument("--cameras", type=int, default=3, help="cameras (3)")
    parser.add_argument("--bus", nargs="+", default=["inprocess", "kafka"], choices=["inprocess", "kafka"])
    parser.add_argument("--chunk-seconds", type=float, help="ingest chunk seconds (default: the setting's)")
    parser.add_argument("--batch-wait-s", type=float, help="embedding batch wait (default: the setting's)")
    args = parser.parse_args()
    tuning = {name: value for name, value in (("chunk_seconds", args.chunk_seconds),
                                              ("batch_wait_s", args.batch_wait_s)) if value is not None}
    with tempfile.TemporaryDirectory() as scratch:
        measure(args.duration, args.cameras, args.bus, Path(scratch), **tuning)


if __name__ == "__main__":
    main()

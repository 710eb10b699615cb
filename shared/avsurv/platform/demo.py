"""``avsurv demo``: the whole platform on one machine, on a generated scene. Renders a multi-camera
intersection, runs the six services in one process (the embedded default), trains a first model on the
site's clips, trains a second one and hot-swaps it in, then prints the anomalies and example searches
through the gRPC API, scores both against the scene's ground truth (event precision and recall, search
precision@5; also written to ``demo_quality.json``), and keeps serving until interrupted."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from avsurv.clipids import parse_clip_id
from avsurv.platform.auth import operator_channel
from avsurv.platform.config import load_settings
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.synth import SceneConfig, generate_scene
from avsurv.synth.truth import BACKGROUND
from avsurv.tasks.metrics import best_precision_at_k, event_precision_recall, label_precision_at_k
from avsurv.v1 import api_pb2, api_pb2_grpc

SEARCH_QUERIES = 5
"""Example searches: one per recurring class of the scene, the most frequent first."""
SEARCH_K = 5
"""Results per example search, scored as precision@SEARCH_K."""
DEMO_EXCLUSION_S = 10.0
"""Seconds around a clip that its searches and its novelty leave out (the API's 60 s default would leave
little of a 90 s scene)."""
DEMO_SEPARATION_S = 5.0
"""Least time between two results of the example searches (the API's 60 s default, likewise)."""


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
    # A 60 s novelty exclusion (the platform's) would leave only the last half minute of a 90 s scene
    # scorable: the demo compares a clip with its camera's clips 10 s or more before it, as its searches do.
    settings = load_settings(args.config, data_dir=out / "platform", cameras=cameras, grpc_port=args.grpc_port,
                             dashboard_port=args.dashboard_port,
                             bus="inprocess://", train_min_clips=min(60, int(args.duration)),
                             novelty_exclusion_s=DEMO_EXCLUSION_S)
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    try:
        _wait(runtime.workers["ingest"].finished, 1800, "reading every camera")
        _wait(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 600, "segmentation")
        print(f"2. platform: {len(runtime.ports.archive)} clips ingested and segmented; gRPC API on port "
              f"{runtime.port}; {_dashboard(runtime)}; data under {settings.data_dir}")
        with operator_channel(settings, runtime.port) as channel:
            control = api_pb2_grpc.ControlStub(channel)
            for step, epochs in ((3, args.first_epochs), (4, args.second_epochs)):
                status = _train_round(runtime, control, epochs)
                print(f"{step}. training round ({epochs} epoch{'s' if epochs > 1 else ''} of "
                      f"{settings.train_method.upper()}): {status.state}: "
                      f"{status.detail}")
            models = control.ListModels(api_pb2.ListModelsRequest()).models
            print("   model versions: " + ", ".join(
                f"{m.model_version}{' (active)' if m.active else ''}" for m in models))
            _report(channel, runtime, truth, out)
        if not args.exit:
            print(f"serving on port {runtime.port} ({_dashboard(runtime)}) until interrupted (Ctrl-C); see the README "
                  "for grpcurl examples")
            runtime.wait()
    finally:
        runtime.stop()
    return 0


def _dashboard(runtime: Runtime) -> str:
    return f"dashboard at {runtime.dashboard.url}" if runtime.dashboard else "no dashboard (see the log)"


def _report(channel: grpc.Channel, runtime: Runtime, truth: dict, out: Path) -> None:
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
    # All listed events, whichever version scored them: the list an operator gets from the API.
    scores = event_precision_recall(
        [(e.header.camera_id, e.start_time - start, e.end_time - start) for e in events],
        {camera: np.array([second["anomaly"] for second in seconds], dtype=bool)
         for camera, seconds in truth["seconds"].items()})
    search = api_pb2_grpc.EventSearchStub(channel)
    queries, found, version = _queries(runtime, truth), [], ""
    print(f"6. search: {len(queries)} example queries (one per recurring class of the scene), top {SEARCH_K}:")
    for clip_id, label in queries:
        response = search.Search(api_pb2.SearchRequest(clip_id=clip_id, top_k=SEARCH_K, exclusion_s=DEMO_EXCLUSION_S,
                                                       separation_s=DEMO_SEPARATION_S))
        version = response.model_version
        found.append([_truth_at(truth, r.camera_id, r.capture_time)["label"] for r in response.results])
        print(f"   {clip_id} '{label}' -> {', '.join(found[-1]) or 'nothing'}")
    precision_at_k = label_precision_at_k([label for _, label in queries], found, SEARCH_K)
    ceiling = _search_ceiling(runtime, truth, queries)
    print("7. quality against the scene's ground truth:")
    print(f"   events: precision {scores.precision:.2f} ({scores.true_events} of {scores.events} events listed by "
          f"the API overlap an anomalous second), recall {scores.recall:.2f} ({scores.found_episodes} of "
          f"{scores.episodes} anomalous episodes)")
    print(f"   search: precision@{SEARCH_K} {precision_at_k:.2f} over {len(queries)} queries (model {version}; "
          f"a result counts when its second has the query's label); a perfect ranking scores {ceiling:.2f} on "
          f"this scene (its separate moments of each class, {DEMO_EXCLUSION_S:.0f} s exclusion, "
          f"{DEMO_SEPARATION_S:.0f} s separation)")
    quality = {
        "events": {"scope": "all events listed by the API", "precision": _number(scores.precision),
                   "recall": _number(scores.recall), "events": scores.events, "true_events": scores.true_events,
                   "episodes": scores.episodes, "found_episodes": scores.found_episodes},
        "search": {"model_version": version, f"precision_at_{SEARCH_K}": _number(precision_at_k),
                   f"best_precision_at_{SEARCH_K}": _number(ceiling),
                   "queries": [{"clip_id": clip_id, "label": label, "results": labels}
                               for (clip_id, label), labels in zip(queries, found, strict=True)]},
    }
    (out / "demo_quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    print(f"   (written to {out / 'demo_quality.json'})")


def _search_ceiling(runtime: Runtime, truth: dict, queries: list[tuple[str, str]]) -> float:
    """Mean over the example searches of the precision@SEARCH_K a perfect embedding would reach: the scene
    holds only so many separate moments of each class outside a query's exclusion window."""
    times: dict[str, list[float]] = {}
    for camera in truth["seconds"]:
        for clip_id in runtime.ports.archive.clip_ids(camera):
            capture = parse_clip_id(clip_id)[1] / 1000
            times.setdefault(_truth_at(truth, camera, capture)["label"], []).append(capture)
    return float(np.mean([best_precision_at_k(parse_clip_id(clip_id)[1] / 1000, times.get(label, []), SEARCH_K,
                                              DEMO_EXCLUSION_S, DEMO_SEPARATION_S)
                          for clip_id, label in queries])) if queries else float("nan")


def _number(value: float) -> float | None:
    """JSON has no NaN: an undefined score (no events, no episodes, no queries) is null."""
    return None if math.isnan(value) else value


def _queries(runtime: Runtime, truth: dict) -> list[tuple[str, str]]:
    """(clip id, label) of the example searches: per recurring class (neither background nor an anomaly),
    the most frequent classes first, the middle clip of the class's longest run of non-anomalous seconds
    on one camera (well inside an event rather than its first glimpse)."""
    longest: dict[str, list[str]] = {}
    frequency: Counter[str] = Counter()
    for camera in truth["seconds"]:
        clip_ids = runtime.ports.archive.clip_ids(camera)
        seconds = [_truth_at(truth, camera, parse_clip_id(clip_id)[1] / 1000) for clip_id in clip_ids]
        labels = [None if second["anomaly"] else second["label"] for second in seconds]
        for label, run in itertools.groupby(zip(labels, clip_ids, strict=True), key=lambda pair: pair[0]):
            if label is None or label == BACKGROUND:  # None: an anomalous second
                continue
            run_ids = [clip_id for _, clip_id in run]
            frequency[label] += len(run_ids)
            if len(run_ids) > len(longest.get(label, [])):
                longest[label] = run_ids
    return [(longest[label][len(longest[label]) // 2], label) for label, _ in frequency.most_common(SEARCH_QUERIES)]


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
    parser.add_argument("--dashboard-port", type=int, help="web dashboard port (default: 8080; 0: none)")
    parser.add_argument("--config", type=Path, help="YAML file of platform settings")
    parser.add_argument("--exit", action="store_true", help="exit after the report instead of serving")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run_demo)

"""Per-camera normalization in the product (issue 12 item 4): the demo's platform with ``normalization: none``
and ``normalization: camera`` on the same generated scenes.

    python bench/normalized_product.py [--seeds 0 1 2] [--out results/normalized_product]

Per seed, one demo scene (``avsurv demo``'s: 90 s, 2 cameras, 30 anomalies per 10 minutes) is rendered once;
then, for each setting, the whole platform runs on it exactly as ``avsurv demo --exit`` does (ingest,
two training rounds, hot-swap, the detector's events, the example searches) and reports:
- events: precision and recall of the anomaly events the API lists (the demo's figures);
- search P@5: the demo's example searches over every camera;
- cross-camera P@5: the same queries restricted to the other cameras (query by example across cameras:
  where a camera's own look would rank its own clips first);
- index P@5 and other-camera share: every clip with audio whose second has a class (not background, not
  an anomaly) as the query, searched in the active version's stored vectors (``avsurv.tasks.search``,
  the demo's exclusion and separation): precision@5, that of a random ranking (chance) and the share of
  results from another camera. Five queries decide the demo's figure; these use every labelled clip.
Each run's figures are kept in ``OUT/seedN/SETTING/quality.json``; a rerun skips finished runs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from avsurv.adapters.state import close_state, connect_state
from avsurv.adapters.vectors import Hit, collection_name, open_vectors
from avsurv.clipids import parse_clip_id
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.normalization import NORMALIZATIONS
from avsurv.platform import demo
from avsurv.platform.auth import operator_channel
from avsurv.platform.config import load_settings
from avsurv.platform.registry import Registry
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.synth import SceneConfig, generate_scene
from avsurv.synth.truth import BACKGROUND
from avsurv.tasks.metrics import label_precision_at_k
from avsurv.tasks.search import search_by_clip
from avsurv.v1 import api_pb2, api_pb2_grpc

DEMO = SimpleNamespace(duration=90.0, cameras=2, first_epochs=2, second_epochs=5, anomalies_per_10min=30.0)
FIGURES = ("events_precision", "events_recall", "search_p5", "cross_camera_p5", "index_p5", "index_chance_p5",
           "other_camera_share")


def scene(seed: int, root: Path) -> Path:
    """The demo's scene for ``seed``, rendered once; returns its ground truth file."""
    truth = root / "scene" / "ground_truth.json"
    if not truth.is_file():
        generate_scene(SceneConfig(seed=seed, duration_s=DEMO.duration, cameras=DEMO.cameras, jobs=2,
                                   anomalies_per_10min=DEMO.anomalies_per_10min), root / "scene", progress=False)
    return truth


def platform_run(truth_path: Path, out: Path, normalization: str) -> dict[str, Any]:
    """The demo's platform run on a rendered scene with ``normalization``; its quality figures."""
    truth = json.loads(truth_path.read_text())
    cameras = {c["camera_id"]: str(truth_path.parent / c["file"]) for c in truth["cameras"]}
    settings = load_settings(None, data_dir=out / "platform", cameras=cameras, grpc_port=0, bus="inprocess://",
                             train_min_clips=min(60, int(DEMO.duration)), novelty_exclusion_s=demo.DEMO_EXCLUSION_S,
                             normalization=normalization)
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    try:
        demo._wait(runtime.workers["ingest"].finished, 1800, "reading every camera")
        demo._wait(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 600, "segmentation")
        with operator_channel(settings, runtime.port) as channel:
            control = api_pb2_grpc.ControlStub(channel)
            for epochs in (DEMO.first_epochs, DEMO.second_epochs):
                demo._train_round(runtime, control, epochs)
            demo._report(channel, runtime, truth, out)
            cross = cross_camera_precision(channel, runtime, truth)
    finally:
        runtime.stop()
    quality = json.loads((out / "demo_quality.json").read_text())
    events = quality["events"]
    return {"events_precision": events["precision"], "events_recall": events["recall"], "events": events["events"],
            "search_p5": quality["search"][f"precision_at_{demo.SEARCH_K}"], "cross_camera_p5": cross}


def cross_camera_precision(channel: Any, runtime: Runtime, truth: dict) -> float:
    """P@5 of the demo's example queries searched among the other cameras' clips only."""
    search = api_pb2_grpc.EventSearchStub(channel)
    queries, found = demo._queries(runtime, truth), []
    for clip_id, _ in queries:
        others = [camera for camera in truth["seconds"] if camera != parse_clip_id(clip_id)[0]]
        response = search.Search(api_pb2.SearchRequest(clip_id=clip_id, top_k=demo.SEARCH_K, camera_ids=others,
                                                       exclusion_s=demo.DEMO_EXCLUSION_S,
                                                       separation_s=demo.DEMO_SEPARATION_S))
        found.append([demo._truth_at(truth, r.camera_id, r.capture_time)["label"] for r in response.results])
    return label_precision_at_k([label for _, label in queries], found, demo.SEARCH_K)


def index_search(platform_dir: Path, truth: dict) -> dict[str, float]:
    """Index P@5 and the other-camera share of the active version's stored vectors (see the module doc)."""
    settings = load_settings(None, environ={}, data_dir=platform_dir)
    registry = Registry(connect_state(settings.state_url), settings.site)
    version = registry.active_version()
    w = registry.model(version).w
    close_state(registry.state)
    vectors = open_vectors(settings.vectors_url)
    try:
        hits = [h for camera in truth["seconds"]
                for h in vectors.window(collection_name(settings.site, version), camera, -math.inf, math.inf)]
    finally:
        vectors.close()
    index = _index(hits)
    labels = np.array([_label(truth, str(c), t) for c, t in zip(index.camera_id, index.capture_time, strict=True)])
    queries = [row for row in range(len(labels)) if labels[row] is not None and index.has_audio[row]]
    found, other, chance = [], [], []
    truths = np.array([_truth_label(truth, str(c), t)
                       for c, t in zip(index.camera_id, index.capture_time, strict=True)])
    for row in queries:
        far = index.has_audio & (np.abs(index.capture_time - index.capture_time[row]) >= demo.DEMO_EXCLUSION_S)
        chance.append(float(np.mean(truths[far] == labels[row])))  # a random ranking's expected precision
        results = search_by_clip(index, index, row, top_k=demo.SEARCH_K, exclusion_s=demo.DEMO_EXCLUSION_S,
                                 separation_s=demo.DEMO_SEPARATION_S, w=w)
        found.append([_truth_label(truth, r.camera_id, r.capture_time) for r in results])
        other += [r.camera_id != index.camera_id[row] for r in results]
    return {"index_p5": label_precision_at_k([labels[row] for row in queries], found, demo.SEARCH_K),
            "other_camera_share": float(np.mean(other)), "index_chance_p5": float(np.mean(chance)),
            "index_queries": len(queries)}


def _index(hits: list[Hit]) -> EmbeddingSet:
    capture = np.array([float(h.payload["capture_time"]) for h in hits])
    return EmbeddingSet(clip_start=capture, z_v=np.stack([h.z_v for h in hits]), z_a=np.stack([h.z_a for h in hits]),
                        clip_id=np.array([h.payload["clip_id"] for h in hits]),
                        camera_id=np.array([h.payload["camera_id"] for h in hits]), capture_time=capture,
                        has_audio=np.array([bool(h.payload["has_audio"]) for h in hits]),
                        source=np.array([h.payload["media_uri"] for h in hits]))


def _label(truth: dict, camera: str, capture_time: float) -> str | None:
    """The second's class, None for background and anomalous seconds (not queries)."""
    second = demo._truth_at(truth, camera, capture_time)
    return None if second["anomaly"] or second["label"] == BACKGROUND else second["label"]


def _truth_label(truth: dict, camera: str, capture_time: float | None) -> str:
    return demo._truth_at(truth, camera, capture_time)["label"]


def run(seeds: list[int], root: Path, log: Any = print) -> dict[int, dict[str, dict[str, Any]]]:
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for seed in seeds:
        started = time.perf_counter()
        truth = scene(seed, root / f"seed{seed}")
        for normalization in NORMALIZATIONS[::-1]:  # none (the baseline) first
            out = root / f"seed{seed}" / normalization
            kept = out / "quality.json"
            if not kept.is_file():
                out.mkdir(parents=True, exist_ok=True)
                kept.write_text(json.dumps(platform_run(truth, out, normalization), indent=1) + "\n")
            figures = json.loads(kept.read_text())
            if "index_chance_p5" not in figures:  # from the run's stores, which are kept with it
                figures |= index_search(out / "platform", json.loads(truth.read_text()))
                kept.write_text(json.dumps(figures, indent=1) + "\n")
            results.setdefault(seed, {})[normalization] = figures
        log(f"seed {seed}: {time.perf_counter() - started:.0f} s")
    return results


def table(results: dict[int, dict[str, dict[str, Any]]]) -> str:
    lines = ["| seed | normalization | events | events precision | events recall | search P@5 | cross-camera P@5 | "
             "index P@5 | (chance) | other-camera share |", "|---|---|---|---|---|---|---|---|---|---|"]
    for normalization in NORMALIZATIONS[::-1]:
        rows = [results[seed][normalization] for seed in sorted(results)]
        for seed, row in zip(sorted(results), rows, strict=True):
            lines.append(f"| {seed} | {normalization} | {row['events']} | " +
                         " | ".join(_figure(row[f]) for f in FIGURES) + " |")
        means = [np.nanmean([_nan(row[f]) for row in rows]) for f in FIGURES]
        lines.append(f"| mean | {normalization} | | " + " | ".join(_figure(m) for m in means) + " |")
    return "\n".join(lines)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _figure(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("results/normalized_product"))
    args = parser.parse_args()
    started = time.perf_counter()
    results = run(args.seeds, args.out)
    print(table(results))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

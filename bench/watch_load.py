"""Open live feeds against the gRPC API (issue 16 item 6): health and search latency with 0 and with N open
``Anomalies.Watch`` streams, in the same run, on loopback.

    python bench/watch_load.py [--streams 200] [--calls 200]

A search-only platform (embedded: Qdrant local mode, embedded Redis) with 200 indexed clips and a registered
model. First the baseline: ``--calls`` health checks and ``--calls`` searches by clip id (top 5), one at a
time, with no feed open. Then ``--streams`` Watch streams are opened (up to 50 per channel, as dashboards
would each hold one), an event is recorded and every stream must deliver it, and the same calls are timed
again while the feeds stay open. Printed: p50 and p95 of each call in milliseconds, calls that failed, how
many streams delivered the event and how long that took, and the Python threads the open streams added.
Before the asyncio server, each open Watch held one of the server's 16 worker threads: at 16 open feeds
every other call waited (issue 16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avsurv.adapters.vectors import Point, alias_name, collection_name
from avsurv.constants import EMBEDDING_DIM
from avsurv.platform.config import load_settings
from avsurv.platform.registry import ModelRecord
from avsurv.platform.runtime import Runtime
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

VERSION = "v1"
INDEXED = 200
STREAMS_PER_CHANNEL = 50
CALL_TIMEOUT_S = 5.0
"""A call that takes longer counts as failed (the old server made calls wait for a free thread)."""
WATCH_S = 600.0
"""Deadline of the open streams: past the whole measurement."""


@contextmanager
def platform(root: Path, indexed: int = INDEXED) -> Iterator[Runtime]:
    """A search-only runtime with an indexed model version of ``indexed`` clips."""
    settings = load_settings(environ={}, data_dir=root / "data", grpc_port=0, dashboard_port=0)
    runtime = Runtime(["search"], settings, embedded=True)
    runtime.start()
    try:
        ports = runtime.ports
        ports.registry.add_model(ModelRecord(version=VERSION, sha256="0" * 64, artifact_uri="", created_time=0,
                                             w=0.5, profile="tiny"))
        collection = collection_name(settings.site, VERSION)
        ports.vectors.ensure_collection(collection)
        rng = np.random.default_rng(0)
        ports.vectors.upsert(collection, VERSION, [
            Point(f"cam0:{1000 * t}", rng.normal(size=EMBEDDING_DIM), rng.normal(size=EMBEDDING_DIM),
                  {"camera_id": "cam0", "capture_time": float(t), "media_uri": ""}) for t in range(indexed)])
        ports.vectors.set_alias(alias_name(settings.site), collection)
        yield runtime
    finally:
        runtime.stop()


def _timed(call: Callable[[], object], calls: int) -> tuple[list[float], int]:
    """Latencies in ms of the calls that succeeded, and how many failed."""
    times, failed = [], 0
    for _ in range(calls):
        started = time.perf_counter()
        try:
            call()
        except grpc.RpcError:
            failed += 1
            continue
        times.append((time.perf_counter() - started) * 1000)
    return times, failed


def _summary(times: list[float], failed: int) -> dict[str, float]:
    if not times:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "failed": failed}
    return {"p50_ms": statistics.median(times), "p95_ms": float(np.percentile(times, 95)), "failed": failed}


def latencies(channel: grpc.Channel, calls: int) -> dict[str, dict[str, float]]:
    health = health_pb2_grpc.HealthStub(channel)
    search = api_pb2_grpc.EventSearchStub(channel)
    probe = health_pb2.HealthCheckRequest(service="avsurv.v1.EventSearch")
    query = api_pb2.SearchRequest(clip_id="cam0:10000", top_k=5)
    for call in (lambda: health.Check(probe, timeout=CALL_TIMEOUT_S),
                 lambda: search.Search(query, timeout=CALL_TIMEOUT_S)):
        _timed(call, 3)  # warm-up
    return {"health": _summary(*_timed(lambda: health.Check(probe, timeout=CALL_TIMEOUT_S), calls)),
            "search": _summary(*_timed(lambda: search.Search(query, timeout=CALL_TIMEOUT_S), calls))}


def _deliver(runtime: Runtime, streams: list[Any]) -> tuple[int, float]:
    """Once every stream is subscribed (its headers came), records one event and reads it from every stream:
    how many delivered it, and in how long."""
    for stream in streams:
        stream.initial_metadata()
    event = pb.AnomalyEvent(header=pb.Header(camera_id="cam0"), event_id="load-1", start_time=1.0, end_time=2.0)
    started = time.perf_counter()
    runtime.ports.registry.record_event(event.event_id, event.start_time, event.SerializeToString())
    delivered = 0
    for stream in streams:
        with suppress(grpc.RpcError, StopIteration):
            delivered += next(stream).event_id == event.event_id
    return delivered, time.perf_counter() - started


def run(streams: int, calls: int, root: Path, indexed: int = INDEXED, watch_s: float = WATCH_S) -> dict[str, Any]:
    """``watch_s``: the streams' deadline; a server that never starts some of them fails the run by then."""
    with platform(root, indexed) as runtime:
        target = f"127.0.0.1:{runtime.port}"
        with grpc.insecure_channel(target) as channel:
            baseline = latencies(channel, calls)
            threads = threading.active_count()
            feeds = [grpc.insecure_channel(target) for _ in range(-(-streams // STREAMS_PER_CHANNEL))]
            try:
                watches = [api_pb2_grpc.AnomaliesStub(feeds[i // STREAMS_PER_CHANNEL]).Watch(
                    api_pb2.WatchAnomaliesRequest(), timeout=watch_s) for i in range(streams)]
                delivered, delivery_s = _deliver(runtime, watches)  # every feed is open on the server
                loaded = latencies(channel, calls)
                added = threading.active_count() - threads
                for watch in watches:
                    watch.cancel()
            finally:
                for feed in feeds:
                    feed.close()
    return {"streams": streams, "calls": calls, "baseline": baseline, "loaded": loaded, "delivered": delivered,
            "delivery_s": delivery_s, "threads_added": added, "channels": len(feeds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200, help="open Watch streams (default 200)")
    parser.add_argument("--calls", type=int, default=200, help="timed calls of each kind per phase (default 200)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        result = run(args.streams, args.calls, Path(root))
    print(f"{'call':8} {'open Watch streams':>18} {'p50 ms':>8} {'p95 ms':>8} {'failed':>7}")
    for phase, open_streams in (("baseline", 0), ("loaded", result["streams"])):
        for call, figures in result[phase].items():
            print(f"{call:8} {open_streams:>18} {figures['p50_ms']:>8.2f} {figures['p95_ms']:>8.2f} "
                  f"{figures['failed']:>7}")
    print(f"event delivered by {result['delivered']} of {result['streams']} streams in {result['delivery_s']:.2f} s; "
          f"Python threads added by the open streams: {result['threads_added']} "
          f"(client channels: {result['channels']})")
    return 0 if result["delivered"] == result["streams"] else 1


if __name__ == "__main__":
    sys.exit(main())

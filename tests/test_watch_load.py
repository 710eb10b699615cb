"""Watch that scales (issue 16 item 6): with 200 Anomalies.Watch streams open on loopback, every stream
delivers a new event, health checks and searches all answer within a small multiple of their latency with
no stream open, and the open streams hold no server thread. The old server held one of its 16 worker
threads per stream, so calls past the 16th waited until timing out. Figures: ``python bench/watch_load.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("watch_load", Path(__file__).resolve().parents[1] / "bench" /
                                               "watch_load.py")
watch_load = importlib.util.module_from_spec(_SPEC)
sys.modules["watch_load"] = watch_load
_SPEC.loader.exec_module(watch_load)

STREAMS = 200
CALLS = 10
INDEXED = 40
"""Clips searched: fewer than the bench's, for a quicker test."""
WATCH_S = 60.0
"""The streams' deadline: where the server leaves some unstarted, the test fails then rather than hang."""
SLOWDOWN = 5.0
"""Loaded p95 at most this many times the baseline p95, plus :data:`SLACK_MS` (a shared CI machine)."""
SLACK_MS = 100.0
SPARE_THREADS = 4


def test_two_hundred_open_watch_streams_leave_health_and_search_answering(tmp_path: Path) -> None:
    result = watch_load.run(STREAMS, CALLS, tmp_path, INDEXED, WATCH_S)
    assert result["delivered"] == STREAMS
    for call in ("health", "search"):
        baseline, loaded = result["baseline"][call], result["loaded"][call]
        assert baseline["failed"] == loaded["failed"] == 0, result
        assert loaded["p95_ms"] <= SLOWDOWN * baseline["p95_ms"] + SLACK_MS, result
    # the client's channels may each start a thread, the server its one live-event reader (and a few spare);
    # the old server took one of its 16 worker threads per stream
    assert result["threads_added"] <= result["channels"] + SPARE_THREADS, result

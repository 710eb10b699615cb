"""The anomaly event lifecycle on ``avsurv.anomalies.v1`` (issue 16 item 1): NEW at the first anomalous clip,
rate-limited UPDATEs while the event goes on, END once, one event id; the registry (what the API's List and
Watch read) holds each event's latest message and hands every message to live watchers. Exactly once per
message under a detector's death: tests/test_chaos.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from realparts import redis_server
from test_chaos import NORMAL, ODD, VERSION, _publish_clips, _register, _run_until

from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.bus import InProcessBus
from avsurv.adapters.state import connect_state
from avsurv.platform.messages import ANOMALIES, event_id
from avsurv.platform.registry import Registry
from avsurv.services.anomaly_detector import UPDATE_INTERVAL_S, AnomalyService
from avsurv.v1 import messages_pb2 as pb

NEW, UPDATE, END = pb.AnomalyEvent.NEW, pb.AnomalyEvent.UPDATE, pb.AnomalyEvent.END


@pytest.fixture
def detector(tmp_path: Path) -> Iterator[AnomalyService]:
    with redis_server(tmp_path) as redis_url:
        registry = Registry(connect_state(redis_url), "site")
        _register(registry)
        yield AnomalyService(InProcessBus(), registry, DirectoryArtifacts(tmp_path / "artifacts"), tmp_path / "cache",
                             run_idle_s=60.0, detector="eq5")


def _on_topic(detector: AnomalyService) -> list[pb.AnomalyEvent]:
    return [pb.AnomalyEvent.FromString(v) for v in detector.bus.recent(ANOMALIES, "cam0", 100)]


def _listed(registry: Registry) -> list[pb.AnomalyEvent]:
    return [pb.AnomalyEvent.FromString(p) for p in registry.events(None, None, 100)]


def test_an_event_is_new_at_its_first_anomalous_clip_updated_at_a_limited_rate_and_ends_once(
        detector: AnomalyService) -> None:
    registry, bus = detector.registry, detector.bus
    live = registry.live_events()  # what Watch reads
    _publish_clips(bus, [(100, NORMAL), (101, ODD)])
    _run_until(detector, lambda: bool(_on_topic(detector)))
    [new] = _on_topic(detector)
    assert (new.phase, new.sequence, list(new.clip_ids)) == (NEW, 0, ["cam0:101000"])
    assert detector.runs, "NEW must go out while the run is still open"
    assert _listed(registry) == [new]

    _publish_clips(bus, [(second, ODD) for second in range(102, 108)] + [(108, NORMAL)])
    _run_until(detector, lambda: not detector.runs)
    messages = _on_topic(detector)
    assert [m.sequence for m in messages] == list(range(len(messages)))
    assert len({m.event_id for m in messages}) == 1
    phases = [m.phase for m in messages]
    assert phases[0] == NEW and phases[-1] == END and set(phases[1:-1]) == {UPDATE}
    # Six clips extended the event: one UPDATE per UPDATE_INTERVAL_S of capture time, not one per clip.
    assert phases.count(UPDATE) == int(6 // UPDATE_INTERVAL_S)
    updates = [m for m in messages if m.phase == UPDATE]
    assert all(b.end_time - a.end_time >= UPDATE_INTERVAL_S for a, b in pairwise([new, *updates]))
    end = messages[-1]
    assert (end.start_time, end.end_time, len(end.clip_ids)) == (101.0, 108.0, 7)
    assert _listed(registry) == [end]  # List: one event per id, its latest state
    deadline, watched = time.monotonic() + 5, []
    while len(watched) < len(messages) and time.monotonic() < deadline:
        if (item := live.get_message(timeout=0.2)) is not None:
            watched.append(pb.AnomalyEvent.FromString(item["data"]))
    live.close()
    assert watched == messages  # Watch: every lifecycle change
    assert detector.events_published == 1 and detector.messages_published == len(messages)


def test_an_event_recorded_before_the_lifecycle_is_not_published_again(detector: AnomalyService) -> None:
    """A whole event stored by the detector of before (one message, no phase) counts as ended: a replay of
    its clips publishes nothing."""
    _publish_clips(detector.bus, [(101, ODD), (102, NORMAL)])
    identifier = event_id("cam0", 101.0, VERSION, "")
    detector.registry.record_event(identifier, 101.0, pb.AnomalyEvent(event_id=identifier).SerializeToString())
    _run_until(detector, lambda: detector.tracker.pending() == 0 and not detector.runs)
    assert _on_topic(detector) == []

"""The anomaly event lifecycle on ``avsurv.anomalies.v1`` (issue 16 item 1): NEW at the first anomalous clip,
rate-limited UPDATEs while the event goes on, END once, one event id; the registry (what the API's List and
Watch read) holds each event's latest message and hands every message to live watchers. Exactly once per
message under a detector's death: tests/test_chaos.py. A head attached to a camera makes its events through
the same lifecycle (issue 16 item 1: "heads' events follow the same lifecycle")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from realparts import redis_server
from test_chaos import NORMAL, ODD, VERSION, _publish_clips, _register, _run_until

from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.bus import InProcessBus
from avsurv.adapters.state import connect_state
from avsurv.constants import EMBEDDING_DIM
from avsurv.heads import HeadSettings, train_head
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.platform.head_attachments import attach_head
from avsurv.platform.messages import ANOMALIES, event_id
from avsurv.platform.registry import Registry
from avsurv.services.anomaly_detector import UPDATE_INTERVAL_S, AnomalyService
from avsurv.v1 import messages_pb2 as pb

NEW, UPDATE, END = pb.AnomalyEvent.NEW, pb.AnomalyEvent.UPDATE, pb.AnomalyEvent.END
HEAD_WINDOW = 4
"""Clips of a head's window: its stream predicts every 4 clips, so an event's clips come a few at a time."""


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


def _listed_of(registry: Registry, detector: str) -> list[pb.AnomalyEvent]:
    return [e for e in _listed(registry) if e.detector == detector]


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
    assert {m.evidence_uri for m in messages} == {f"avsurv://site/events/{end.event_id}/evidence.mp4"}


def test_an_event_recorded_before_the_lifecycle_is_not_published_again(detector: AnomalyService) -> None:
    """A whole event stored by the detector of before (one message, no phase) counts as ended: a replay of
    its clips publishes nothing."""
    _publish_clips(detector.bus, [(101, ODD), (102, NORMAL)])
    identifier = event_id("cam0", 101.0, VERSION, "")
    detector.registry.record_event(identifier, 101.0, pb.AnomalyEvent(event_id=identifier).SerializeToString())
    _run_until(detector, lambda: detector.tracker.pending() == 0 and not detector.runs)
    assert _on_topic(detector) == []


@pytest.fixture
def one_thread() -> Iterator[None]:
    """A small head trains and predicts faster on one torch thread than on a loaded machine's every core
    (as in tests/test_heads.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _siren_head(directory: Path) -> Path:
    """A TACMA head trained on embeddings of the registered version's model (its sha256, as _register has it):
    "siren" where the sound is ODD, "background" where it is NORMAL, in runs of 3 to 8 seconds."""
    rng = np.random.default_rng(0)
    siren = np.zeros(240, dtype=bool)
    second = 0
    while second < len(siren):
        length = int(rng.integers(3, 9))
        siren[second:second + length] = rng.random() < 0.5
        second += length
    noise = 0.05 * rng.normal(size=(2, len(siren), EMBEDDING_DIM))
    seconds = np.arange(float(len(siren)))
    embeddings = EmbeddingSet(
        clip_start=seconds, z_v=NORMAL + noise[0], z_a=np.where(siren[:, None], ODD, NORMAL) + noise[1],
        clip_id=[f"train:{int(s) * 1000}" for s in seconds], camera_id=["train"] * len(siren), capture_time=seconds,
        has_audio=np.ones(len(siren), bool), source=[""] * len(siren), model_sha256="0" * 64, profile="tiny")
    labels = {("train", s): "siren" if flag else "background" for s, flag in enumerate(siren)}
    head = train_head(embeddings, labels, HeadSettings(kind="tacma", window=HEAD_WINDOW, epochs=30, hidden=16))
    head.save(directory)
    return directory


def test_an_attached_heads_event_goes_through_the_same_lifecycle(detector: AnomalyService, tmp_path: Path,
                                                                 one_thread: None) -> None:
    """Seven siren seconds between background ones: the head's event (its own detector and label, beside the
    label-free one's) is NEW at its first siren clip, UPDATEd at most once per UPDATE_INTERVAL_S of capture
    time, and ENDs once, with one event id and sequences 0, 1, 2, ... as the label-free detector's."""
    record = attach_head(_siren_head(tmp_path / "head"), "cam0", detector.registry, detector.artifacts,
                         name="sirens", labels=["siren"])
    sirens = range(104, 111)
    _publish_clips(detector.bus, [(second, ODD if second in sirens else NORMAL) for second in range(100, 116)])

    def head_messages() -> list[pb.AnomalyEvent]:
        return [m for m in _on_topic(detector) if m.detector == record.detector]

    _run_until(detector, lambda: any(m.phase == END for m in head_messages()))
    messages = head_messages()
    assert len({m.event_id for m in messages}) == 1
    assert messages[0].event_id == event_id("cam0", 104.0, VERSION, record.detector)
    assert [m.sequence for m in messages] == list(range(len(messages)))
    assert {m.label for m in messages} == {"siren"}
    assert list(messages[0].clip_ids) == ["cam0:104000"]
    end = messages[-1]
    # The head's window may carry its event a second past the sirens (its attention spans the window): the
    # event is the sirens' clips and at most one more, consecutive.
    assert end.start_time == 104.0 and end.end_time in (111.0, 112.0)
    assert list(end.clip_ids) == [f"cam0:{s * 1000}" for s in range(104, int(end.end_time))]
    phases = [m.phase for m in messages]
    assert phases[0] == NEW and phases[-1] == END and set(phases[1:-1]) == {UPDATE}
    updates = [m for m in messages if m.phase == UPDATE]  # at capture times 106, 108, 110
    assert [m.end_time - 1 for m in updates] == [106.0, 108.0, 110.0]
    assert {m.evidence_uri for m in messages} == {f"avsurv://site/events/{end.event_id}/evidence.mp4"}
    assert _listed_of(detector.registry, record.detector) == [end]  # List: the head's event, at its END

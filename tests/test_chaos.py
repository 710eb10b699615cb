"""Faults (issue 14 item 2): the anomaly detector dying between publishing an event and recording it, and
the chaos run: the distributed deployment with its services, the broker and Redis killed with SIGKILL at
seeded random points and restarted, checked by an independent Kafka client (librdkafka) that de-duplicates
nothing. The long variant is ``python bench/chaos.py`` (docs/RESULTS.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from realparts import kafka_broker, redis_server

from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.kafka_bus import KafkaBus
from avsurv.adapters.state import connect_state
from avsurv.constants import EMBEDDING_DIM
from avsurv.learning.calibration import Calibration
from avsurv.learning.scores import clip_scores
from avsurv.platform.messages import ANOMALIES, EMBEDDINGS, header
from avsurv.platform.registry import ModelRecord, Registry
from avsurv.services.anomaly_detector import AnomalyService
from avsurv.v1 import messages_pb2 as pb

VERSION, W = "v1", 0.5
NORMAL, ODD = np.eye(EMBEDDING_DIM, dtype=np.float32)[:2]


class Died(BaseException):
    """The detector's death at a chosen point (a BaseException: no service loop catches it)."""


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[KafkaBus, Registry]]:
    """A broker with the anomalies and embeddings topics, and a registry holding a calibrated version."""
    with kafka_broker() as broker, redis_server(tmp_path) as redis_url:
        bus = KafkaBus(broker, partitions=2, max_poll_interval_ms=5_000)
        bus.ensure_topics([EMBEDDINGS, ANOMALIES])
        registry = Registry(connect_state(redis_url), "site")
        registry.add_model(ModelRecord(version=VERSION, sha256="0" * 64, artifact_uri="", created_time=0.0, w=W,
                                       profile="tiny"))
        normal, odd = clip_scores(np.stack([NORMAL, NORMAL]), np.stack([NORMAL, ODD]), W)
        registry.set_calibration(VERSION, "cam0", Calibration(mean=(normal + odd) / 2, std=0.0, w=W))
        yield bus, registry
        bus.close()


def _publish_clips(bus: KafkaBus) -> None:
    """cam0's clips 100-104 s: 101-102 anomalous, then normal ones that end the event."""
    for second in range(100, 105):
        z_a = ODD if second in (101, 102) else NORMAL
        bus.publish(EMBEDDINGS, "cam0", pb.Embedding(
            header=header("site", "cam0", f"cam0:{second * 1000}", float(second)), model_version=VERSION,
            z_v=NORMAL, z_a=z_a, has_audio=True, point_id=str(second), w=W).SerializeToString())
    bus.flush()


def _detector(bus: KafkaBus, registry: Registry, tmp_path: Path) -> AnomalyService:
    return AnomalyService(bus, registry, DirectoryArtifacts(tmp_path / "artifacts"), tmp_path / "cache",
                          run_idle_s=60.0, detector="eq5")


def _run_until(detector: AnomalyService, done, steps: int = 60) -> None:
    for _ in range(steps):
        detector.step()
        if done():
            return
    raise AssertionError("the detector did not get there")


def _events_seen(bootstrap: str) -> list[str]:
    """Event ids on the anomalies topic as an independent client (librdkafka) reads them, duplicates kept:
    every partition from its start to its end, assigned (no consumer group to join)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "operators", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(ANOMALIES, timeout=10).topics[ANOMALIES].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(ANOMALIES, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(ANOMALIES, p, OFFSET_BEGINNING) for p in partitions])
        ids, read = [], dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + 30
        while any(read[p] < ends[p] for p in partitions) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                ids.append(pb.AnomalyEvent.FromString(message.value()).event_id)
                read[message.partition()] = message.offset() + 1
    finally:
        consumer.close()
    return ids


@pytest.mark.parametrize("dies_after", ["publish", "pending"])
def test_a_detector_dying_before_it_records_an_event_neither_repeats_nor_loses_it(
        parts: tuple[KafkaBus, Registry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dies_after: str) -> None:
    """Dying once the event is on the topic (``publish``) must not publish it again after the restart; dying
    once it is marked pending but before the send (``pending``) must still publish it."""
    bus, registry = parts
    _publish_clips(bus)
    first = _detector(bus, registry, tmp_path)

    def die(*args: object, **kwargs: object) -> None:
        raise Died

    with monkeypatch.context() as patch:
        patch.setattr(registry, "record_event", die)
        if dies_after == "pending":
            patch.setattr(bus, "publish", die)
        with pytest.raises(Died):
            _run_until(first, lambda: False)
    first.subscription.close()  # uncommitted: its embeddings go to the next detector of the group

    second = _detector(bus, registry, tmp_path)
    _run_until(second, lambda: second.tracker.pending() == 0 and len(registry.events(None, None, 10)) == 1)
    second.close()
    ids = _events_seen(bus.bootstrap_servers)
    assert len(ids) == 1, f"the anomalies topic holds {len(ids)} copies of the event"
    assert [pb.AnomalyEvent.FromString(p).event_id for p in registry.events(None, None, 10)] == ids

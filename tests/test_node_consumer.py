"""The README's Node consumer (examples/node-consumer, issue 16): installed from its lockfile with ``npm ci``,
it reads an event's NEW, UPDATE and END messages, published by the project's Kafka bus to a real
Kafka-protocol broker, and prints each one's fields as a JSON line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from realparts import kafka_broker

from avsurv.adapters.kafka_bus import KafkaBus
from avsurv.v1 import messages_pb2 as pb

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node-consumer"
TOPIC = "avsurv.anomalies.v1"


@pytest.fixture(scope="module")
def installed() -> Path:
    """The example with its locked dependencies (``npm ci``: from npm's cache when it holds them)."""
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is not on PATH: the Node consumer example needs Node 18+ and npm"
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"npm ci failed in {EXAMPLE}:\n{done.stdout}\n{done.stderr}"
    return EXAMPLE


def lifecycle() -> list[pb.AnomalyEvent]:
    """One event's messages: NEW at its first clip, UPDATE as its peak rises, END with the whole event."""
    start = 1767225688.0
    clips = [f"cam7:{int((start + 0.5 * i) * 1000)}" for i in range(4)]
    header = pb.Header(schema_version=pb.SCHEMA_VERSION_1, site="site1", camera_id="cam7", clip_id=clips[0],
                       capture_time=start)
    phases = [(pb.AnomalyEvent.NEW, 1, 0.61, pb.AnomalyEvent.VISUAL),
              (pb.AnomalyEvent.UPDATE, 3, 0.875, pb.AnomalyEvent.BOTH),
              (pb.AnomalyEvent.END, 4, 0.875, pb.AnomalyEvent.BOTH)]
    return [pb.AnomalyEvent(header=header, event_id="ev-cam7-1", start_time=start, end_time=start + 0.5 * count + 1.5,
                            peak_score=peak, threshold=0.4321, phase=phase, sequence=sequence, deviation=deviation,
                            clip_ids=clips[:count], detector="novelty")
            for sequence, (phase, count, peak, deviation) in enumerate(phases)]


def test_node_consumer_prints_each_lifecycle_message(installed: Path) -> None:
    events = lifecycle()
    with kafka_broker() as address:
        bus = KafkaBus(address)
        try:
            bus.ensure_topics([TOPIC])
            for event in events:
                bus.publish(TOPIC, event.header.camera_id, event.SerializeToString())
            bus.flush()
        finally:
            bus.close()
        done = subprocess.run(["node", "consumer.js", "--from-beginning", "--max-messages", str(len(events))],
                              cwd=installed, env={**os.environ, "KAFKA_BROKERS": address}, capture_output=True,
                              text=True, timeout=45)
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert printed == [{"event_id": event.event_id, "phase": pb.AnomalyEvent.Phase.Name(event.phase),
                        "sequence": event.sequence, "camera_id": event.header.camera_id,
                        "start_time": event.start_time, "end_time": event.end_time,
                        "peak_score": event.peak_score, "threshold": event.threshold,
                        "deviation": pb.AnomalyEvent.Deviation.Name(event.deviation),
                        "clip_ids": list(event.clip_ids)} for event in events]

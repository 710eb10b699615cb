"""The distributed deployment: the six services as separate processes (``avsurv serve NAME``) against a
real Kafka-protocol broker, a real Redis server and Qdrant local mode shared on disk. Anomaly events are
read by an independent Kafka client (librdkafka), search goes through gRPC, and the embedding service is
killed with SIGKILL mid-stream and restarted."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from confluent_kafka import Consumer
from platformkit import Service, small_scene, untrained_model, wait_for
from realparts import free_port, kafka_broker, redis_server

from avsurv.adapters.state import connect_state
from avsurv.adapters.vectors import QdrantVectors, alias_name
from avsurv.constants import ANOMALY_STDS
from avsurv.learning.calibration import Calibration
from avsurv.learning.modeldir import CALIBRATION, load_model
from avsurv.learning.scores import clip_scores
from avsurv.platform.archive import ClipArchive
from avsurv.platform.messages import ANOMALIES
from avsurv.platform.model_versions import LoadedModel
from avsurv.platform.registry import Registry
from avsurv.platform.runtime import SERVICES
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

RUN_IDLE_S = 25.0


def calibrated_model(directory: Path, clips_of: list[Path]) -> tuple[Path, float]:
    """An untrained tiny model whose calibration puts the threshold in the widest gap of its scores on the
    scene, so that some seconds are anomalous and none is within a hair of the threshold."""
    untrained_model(directory, seed=7)
    model, config = load_model(directory)
    from avsurv.media import Segmenter

    clips = [c for path in clips_of for c in Segmenter(str(path)) if c.has_audio]
    z_v, z_a = LoadedModel("v", model, {**config}).embed(clips)
    scores = np.sort(clip_scores(z_v, z_a))
    lo, hi = int(len(scores) * 0.6), int(len(scores) * 0.9)
    gap = lo + int(np.argmax(np.diff(scores[lo:hi])))
    threshold = float(scores[gap] + scores[gap + 1]) / 2
    Calibration(mean=threshold, std=0.0).save(directory / CALIBRATION)
    return directory, threshold


def expected_events(archive: ClipArchive, model: LoadedModel, threshold: float) -> set[tuple[str, float]]:
    """(camera, start) of every event, computed here from the stored clips: runs of consecutive anomalous
    seconds."""
    events = set()
    for camera in ("cam0", "cam1"):
        clips = list(archive.clips(archive.clip_ids(camera)))
        z_v, z_a = model.embed(clips)
        anomalous = [c.has_audio and s > threshold for c, s in zip(clips, clip_scores(z_v, z_a), strict=True)]
        previous = None
        for clip, flag in zip(clips, anomalous, strict=True):
            if flag and (previous is None or not previous[1] or clip.start - previous[0].start > 1.5):
                events.add((camera, clip.start))
            previous = (clip, flag)
    return events


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[dict[str, Service], dict[str, str], Path, float]]:
    scene = small_scene(tmp_path / "scene", duration_s=24)
    model_dir, threshold = calibrated_model(tmp_path / "model", [scene / "cam0.mp4", scene / "cam1.mp4"])
    with kafka_broker() as broker, redis_server(tmp_path) as redis_url:
        base = {**os.environ, "AVSURV_BUS": f"kafka://{broker}", "AVSURV_STATE": redis_url,
                "AVSURV_VECTORS": f"local-shared://{tmp_path / 'qdrant'}", "AVSURV_DATA_DIR": str(tmp_path / "data"),
                "AVSURV_ARTIFACTS": str(tmp_path / "artifacts"), "AVSURV_CLIP_STORE": str(tmp_path / "clips"),
                "AVSURV_KAFKA_MAX_POLL_INTERVAL_MS": "5000", "AVSURV_BATCH_SIZE": "4",
                "AVSURV_ANOMALY_RUN_IDLE_S": str(RUN_IDLE_S), "AVSURV_REALTIME_FILES": "true",
                "AVSURV_PARTITIONS": "2", "AVSURV_ANOMALY_DETECTOR": "eq5"}  # the planted calibration is Eq. 5's
        logs = tmp_path / "logs"
        logs.mkdir()
        services = {}
        for name in SERVICES:
            env = {**base, "AVSURV_GRPC_PORT": str(free_port())}
            if name == "ingest":
                env["AVSURV_CAMERAS"] = f"cam0={scene / 'cam0.mp4'},cam1={scene / 'cam1.mp4'}"
            if name == "embedding":
                env["AVSURV_MODEL"] = str(model_dir)
            services[name] = Service(name, env, logs)
        try:
            yield services, base, model_dir, threshold
        finally:
            codes = {name: service.stop() for name, service in services.items()}
            for path in sorted(logs.glob("*.log")):
                print(f"----- {path.name}\n{path.read_text()[-3000:]}")
            assert all(code == 0 for code in codes.values()), f"exit codes after SIGTERM: {codes}"


def test_six_processes_survive_a_killed_embedder_without_losing_or_repeating_anything(deployment, tmp_path):
    services, env, model_dir, threshold = deployment
    consumer = Consumer({"bootstrap.servers": env["AVSURV_BUS"].removeprefix("kafka://"), "group.id": "operators",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    for service in services.values():  # the embedder first creates the topics and publishes the model
        service.start()
        if service.name == "embedding":
            wait_for(service.serving, 60, "the embedding service to serve")
    try:
        wait_for(lambda: all(s.serving() for s in services.values()), 90, "every service to report SERVING")
        registry = Registry(connect_state(env["AVSURV_STATE"]), "default")
        vectors = QdrantVectors(env["AVSURV_VECTORS"])
        collection = lambda: vectors.alias_target(alias_name("default"))  # noqa: E731
        wait_for(lambda: collection() is not None and vectors.count(collection()) >= 6, 90, "the first embeddings")

        services["embedding"].kill()  # mid-stream: clips keep arriving for another ~15 s
        time.sleep(1.0)
        services["embedding"].start()

        wait_for(lambda: {c.status for c in registry.camera_states()} == {"finished"}, 120, "both cameras read")
        archive = ClipArchive(env["AVSURV_CLIP_STORE"])
        wait_for(lambda: len(archive) >= 40 and vectors.count(collection()) == len(archive), 120,
                 "every stored clip indexed")
        assert vectors.count(collection()) == len(set(archive.clip_ids()))  # one point per clip
        # Each camera's embedding statistics went on from the registry after the restart: every clip counts
        # (the batch redelivered after the kill may count twice); had they restarted from nothing, the clips
        # committed before the kill would be missing.
        counts = lambda: {camera: stats.count  # noqa: E731
                          for camera, stats in registry.all_camera_stats(registry.active_version()).items()}
        wait_for(lambda: set(counts()) == {"cam0", "cam1"} and sum(counts().values()) >= len(archive), 30,
                 "every clip in the cameras' embedding statistics")

        with grpc.insecure_channel(f"127.0.0.1:{services['search'].port}") as channel:
            response = api_pb2_grpc.EventSearchStub(channel).Search(api_pb2.SearchRequest(
                clip_id=archive.clip_ids("cam1")[5], top_k=3, exclusion_s=3, separation_s=2))
        assert len(response.results) == 3 and response.model_version == registry.active_version()

        model, config = load_model(model_dir)
        expected = expected_events(archive, LoadedModel("v", model, config), threshold)
        assert expected, "the calibration should make some seconds anomalous"
        consumer.subscribe([ANOMALIES])
        received: list[pb.AnomalyEvent] = []
        deadline = time.monotonic() + RUN_IDLE_S + 60
        while {(e.header.camera_id, e.start_time) for e in received} != expected and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                received.append(pb.AnomalyEvent.FromString(message.value()))
        time.sleep(2.0)  # anything duplicated would arrive by now
        while (message := consumer.poll(1.0)) is not None:
            if message.error() is None:
                received.append(pb.AnomalyEvent.FromString(message.value()))
        starts = [(e.header.camera_id, e.start_time) for e in received]
        assert set(starts) == expected  # none lost
        assert len(starts) == len(set(starts)) and len({e.event_id for e in received}) == len(received)  # none twice
        assert all(e.peak_score > e.threshold == pytest.approx(threshold + ANOMALY_STDS * 0.0) for e in received)
    finally:
        consumer.close()

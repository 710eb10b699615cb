"""What an anomaly event carries for an operator to act (issue 16 item 2): the peak clip's thumbnail from
the clip store, which modality deviated with the per-modality scores, the camera's nearest earlier normal
clips, and the URI of its evidence, in every lifecycle message. Planted embeddings, so the deviating modality
is known; the last test runs the embedded platform."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from platformkit import small_scene, untrained_model, wait_for
from realparts import redis_server
from test_chaos import NORMAL, ODD, _publish_clips, _register, _run_until
from test_platform import _runtime

from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.bus import InProcessBus
from avsurv.adapters.state import connect_state
from avsurv.adapters.vectors import Hit
from avsurv.constants import EMBEDDING_DIM
from avsurv.media.clipstore import encode_jpeg
from avsurv.platform.archive import ClipArchive
from avsurv.platform.messages import ANOMALIES, EMBEDDINGS, header
from avsurv.platform.model_versions import publish_model
from avsurv.platform.registry import Registry
from avsurv.services.anomaly_detector import THUMBNAIL_WIDTH, AnomalyService
from avsurv.tasks.novelty import NoveltyCalibration
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

VERSION, W, NORMAL_SECONDS, ODD_SECOND = "v1", 0.5, 60, 100
TWINS = (5, 25, 45)
"""Normal seconds that are copies of the odd clips but for the deviating modality: their nearest normal ones."""
Event = pb.AnomalyEvent


class _StoredClips:
    """A vector store holding cam0's stored clips, ``z_v``, ``z_a`` [N, D] at seconds 0..N-1 (the arrays
    themselves: a test may change them before the detector first reads its history)."""

    def __init__(self, z_v: np.ndarray, z_a: np.ndarray) -> None:
        self.z_v, self.z_a = z_v, z_a

    def window(self, collection: str, camera_id: str, start_time: float, end_time: float) -> list[Hit]:
        return [Hit(str(t), {"capture_time": float(t)}, self.z_v[t], self.z_a[t]) for t in range(len(self.z_v))
                if camera_id == "cam0" and start_time <= t <= end_time]


def _colour(second: int) -> tuple[int, int, int]:
    return (second * 2 % 256, 255 - second * 2 % 256, 90)


def _store(archive: ClipArchive, second: int) -> None:
    """cam0's clip at ``second``: 5 frames of 398x224, the middle one of the second's colour."""
    frames = [np.full((224, 398, 3), _colour(second) if i == 2 else 0, np.uint8) for i in range(5)]
    archive.put(pb.Clip(header=header("site", "cam0", f"cam0:{second * 1000}", float(second)), has_audio=True,
                        frames_jpeg=[encode_jpeg(f) for f in frames]))


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[AnomalyService, np.ndarray, np.ndarray]]:
    """A novelty detector on cam0 (5 stds) with a clip store and a calibration fitted on the normal clips
    stored before, which are its history as in the platform; yields it and the normal clips' z_v, z_a: near
    two fixed directions, hardly varying in their first dimension (where a planted odd clip deviates)."""
    rng = np.random.default_rng(0)
    base_v, base_a = rng.normal(size=(2, EMBEDDING_DIM)).astype(np.float32)
    spread = np.full(EMBEDDING_DIM, 0.1, np.float32)
    spread[0] = 0.001
    z_v, z_a = ((base + spread * rng.normal(size=(NORMAL_SECONDS, EMBEDDING_DIM))).astype(np.float32)
                for base in (base_v, base_a))
    archive = ClipArchive(tmp_path / "clips")
    for second in [*range(NORMAL_SECONDS), ODD_SECOND, ODD_SECOND + 1]:
        _store(archive, second)
    with redis_server(tmp_path) as redis_url:
        registry = Registry(connect_state(redis_url), "site")
        _register(registry)
        registry.set_novelty(VERSION, "cam0", NoveltyCalibration.fit(
            z_v, z_a, np.arange(NORMAL_SECONDS, dtype=float), w=W, exclusion_s=2.0))
        yield AnomalyService(InProcessBus(), registry, DirectoryArtifacts(tmp_path / "artifacts"), tmp_path / "cache",
                             run_idle_s=60.0, stds=5.0, detector="novelty", vectors=_StoredClips(z_v, z_a),
                             archive=archive), z_v, z_a


def _publish(bus: InProcessBus, second: int, z_v: np.ndarray, z_a: np.ndarray) -> None:
    bus.publish(EMBEDDINGS, "cam0", pb.Embedding(
        header=header("site", "cam0", f"cam0:{second * 1000}", float(second)), model_version=VERSION,
        z_v=z_v, z_a=z_a, has_audio=True, point_id=str(second), w=W).SerializeToString())


def _on_topic(detector: AnomalyService) -> list[Event]:
    return [Event.FromString(v) for v in detector.bus.recent(ANOMALIES, "cam0", 100)]


@pytest.mark.parametrize(("far", "deviation"), [("audio", Event.AUDIO), ("visual", Event.VISUAL),
                                                ("both", Event.BOTH)])
def test_an_event_says_which_modality_deviated_and_shows_its_peak_and_the_nearest_normal_clips(
        planted: tuple[AnomalyService, np.ndarray, np.ndarray], far: str, deviation: Event.Deviation) -> None:
    detector, z_v, z_a = planted
    z_v[list(TWINS)], z_a[list(TWINS)] = z_v[TWINS[0]], z_a[TWINS[0]]
    # Two odd clips, the twins' but for the first dimension of the far modality, the second one odder: the
    # peak moves to it.
    shift = np.eye(EMBEDDING_DIM, dtype=np.float32)[0]
    for second, size in ((ODD_SECOND, 1.0), (ODD_SECOND + 1, 2.0)):
        _publish(detector.bus, second, z_v[TWINS[0]] + size * shift * (far != "audio"),
                 z_a[TWINS[0]] + size * shift * (far != "visual"))
    _publish(detector.bus, ODD_SECOND + 2, z_v[0], z_a[0])
    detector.bus.flush()
    _run_until(detector, lambda: bool(_on_topic(detector)) and not detector.runs)

    messages = _on_topic(detector)
    assert [m.phase for m in messages] == [Event.NEW, Event.END] and messages[-1].clip_ids == [
        "cam0:100000", "cam0:101000"]
    for message, peak in zip(messages, (ODD_SECOND, ODD_SECOND + 1), strict=True):
        assert message.peak_clip_id == f"cam0:{peak * 1000}" and message.deviation == deviation
        thumbnail = Image.open(io.BytesIO(message.thumbnail_jpeg))
        assert thumbnail.format == "JPEG" and thumbnail.width == THUMBNAIL_WIDTH
        assert len(message.thumbnail_jpeg) < 5_000
        pixel = np.asarray(thumbnail.convert("RGB"))[thumbnail.height // 2, THUMBNAIL_WIDTH // 2]
        assert np.abs(pixel.astype(int) - _colour(peak)).max() <= 8  # the peak clip's middle frame
        modalities = {"visual": message.visual, "audio": message.audio}
        assert message.peak_score == pytest.approx((message.visual.score + message.audio.score) / 2)
        assert {m for m, s in modalities.items() if s.score > s.threshold == message.threshold} == (
            {"visual", "audio"} if far == "both" else {far})
        assert set(message.normal_clip_ids) == {f"cam0:{s * 1000}" for s in TWINS}


def test_an_eq5_event_says_that_sound_and_picture_disagree(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis_url:
        registry = Registry(connect_state(redis_url), "site")
        _register(registry)
        detector = AnomalyService(InProcessBus(), registry, DirectoryArtifacts(tmp_path / "artifacts"),
                                  tmp_path / "cache", run_idle_s=60.0, detector="eq5")
        _publish_clips(detector.bus, [(100, NORMAL), (101, ODD), (102, NORMAL)])
        _run_until(detector, lambda: len(_on_topic(detector)) == 2)
    for message in _on_topic(detector):
        assert (message.deviation, message.peak_clip_id) == (Event.DISAGREE, "cam0:101000")
        assert not message.HasField("visual") and not message.thumbnail_jpeg  # no clip store: no picture


def test_events_listed_through_the_api_carry_their_evidence(tmp_path: Path) -> None:
    """The embedded platform with its default detector (site novelty) on a generated scene: every event the
    API lists has its peak clip's thumbnail, an explanation by modality and normal clips of its camera."""
    scene = small_scene(tmp_path / "scene")
    model = untrained_model(tmp_path / "model", seed=4)
    runtime = _runtime(tmp_path, scene, None, anomaly_run_idle_s=3.0, anomaly_stds=0.5, novelty_exclusion_s=5.0)
    try:
        wait_for(runtime.workers["ingest"].finished, 120, "both cameras to be read")
        wait_for(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 60, "segmentation")
        publish_model(model, runtime.ports.registry, runtime.ports.artifacts, runtime.ports.bus)
        total = len(runtime.ports.archive)
        wait_for(lambda: runtime.workers["embedding"].clips_embedded >= total, 120, "every clip embedded")
        wait_for(lambda: runtime.workers["anomaly-detector"].tracker.pending() == 0
                 and not runtime.workers["anomaly-detector"].runs, 60, "every clip scored and its events closed")
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            anomalies = api_pb2_grpc.AnomaliesStub(channel)
            listed = anomalies.List(api_pb2.ListAnomaliesRequest(limit=1000)).events
            series = {c: anomalies.Scores(api_pb2.ScoresRequest(camera_id=c)).points for c in ("cam0", "cam1")}
            # The URI an event carries fetches its evidence: the same file as its id does.
            first = listed[-1]
            by_uri = anomalies.Export(api_pb2.ExportEvidenceRequest(event_id=first.evidence_uri), timeout=120)
            by_id = anomalies.Export(api_pb2.ExportEvidenceRequest(event_id=first.event_id), timeout=120)
    finally:
        runtime.stop()
    assert listed and {e.detector for e in listed} == {"novelty"}
    assert by_uri == by_id and by_uri.event_id == first.event_id and set(first.clip_ids) <= set(by_uri.clip_ids)
    for event in listed:
        assert event.phase == Event.END and event.peak_clip_id in event.clip_ids
        assert event.evidence_uri == f"avsurv://default/events/{event.event_id}/evidence.mp4"
        # The camera's score series (the dashboard's timeline) holds the event's clips, flagged, its peak among them.
        points = {p.capture_time: p for p in series[event.header.camera_id]}
        assert all(points[float(c.split(":")[1]) / 1000].anomalous for c in event.clip_ids)
        peak = points[event.peak_time]
        assert (peak.score, peak.threshold) == (event.peak_score, event.threshold)
        assert Image.open(io.BytesIO(event.thumbnail_jpeg)).size[0] == THUMBNAIL_WIDTH
        assert event.deviation in (Event.VISUAL, Event.AUDIO, Event.BOTH)
        assert event.peak_score == pytest.approx((event.visual.score + event.audio.score) / 2)
        assert event.normal_clip_ids and all(c.startswith(f"{event.header.camera_id}:") and c not in event.clip_ids
                                             for c in event.normal_clip_ids)

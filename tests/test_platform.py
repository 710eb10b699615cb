"""The platform in one process (the embedded default): ingest -> segmentation -> embedding -> anomaly
detector, the gRPC API, the trainer and hot-swapping, over the in-process bus, Qdrant local mode and an
embedded real Redis."""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from platformkit import small_scene, untrained_model, wait_for
from realparts import free_port

from avsurv.adapters.bus import InProcessBus
from avsurv.adapters.vectors import QdrantVectors, alias_name, collection_name, open_vectors, point_id
from avsurv.cli import main
from avsurv.constants import DEFAULT_PROFILE, SAMPLE_RATE
from avsurv.heads import HeadSettings, TrainedHead, train_head
from avsurv.labels import read_labels
from avsurv.learning.distance import distance
from avsurv.learning.embed import embed_inputs
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.modeldir import load_model
from avsurv.media import Segmenter
from avsurv.media.clipstore import encode_jpeg
from avsurv.media.decode import AudioChunk, MediaReader
from avsurv.media.segment import TOO_SHORT, ClipFeed
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import ConfigError, load_settings
from avsurv.platform.messages import ANOMALIES, CHUNKS, CLIPS, DEAD_LETTERS, EMBEDDINGS, clip_to_message, header
from avsurv.platform.model_versions import load_version, publish_model
from avsurv.platform.registry import Registry
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.services.ingest import CameraIngest, ChunkBuilder
from avsurv.services.segmentation import SegmentationService, chunk_events
from avsurv.services.trainer import significantly_worse
from avsurv.tasks.novelty import CameraHistory
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

T = TypeVar("T")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return untrained_model(root / "a", seed=1), untrained_model(root / "b", seed=2)


def test_a_camera_reads_on_while_the_state_store_is_away(scene: Path) -> None:
    """A failed state report (Redis away past redis-py's retries) costs that report, not the camera."""
    reports: list[str] = []

    def report(state) -> None:
        reports.append(state.status)
        if len(reports) <= 3:
            raise ConnectionError("the state store is away")

    bus = InProcessBus()
    camera = CameraIngest("cam0", str(scene / "cam0.mp4"), bus, "site", chunk_seconds=2.0, stall_timeout_s=5.0,
                          reconnect_max_s=1.0, realtime=False, report=report)
    camera.run()
    subscription = bus.subscribe("test", [CHUNKS])
    chunks = subscription.poll(timeout_s=0.5, max_messages=1_000)
    assert camera.chunks_published == len(chunks) >= 10  # the 20 s scene, 2 s chunks: none lost
    assert reports[-1] == "finished"


def test_chunks_carry_what_segmentation_needs_to_cut_the_same_clips(scene: Path) -> None:
    source = str(scene / "cam0.mp4")
    epoch = 1_700_000_000.25  # a grid that does not start at media time 0
    direct = list(Segmenter(source, "cam0", capture_start=epoch))
    with MediaReader(source) as reader:
        builder = ChunkBuilder("site", "cam0", source, epoch, reader.info.fps, reader.has_audio, chunk_seconds=2.0)
        feed = ClipFeed("cam0", source, capture_epoch=epoch, fps=reader.info.fps,
                        has_audio=reader.has_audio)
        chunks, clips, events = [], [], list(reader.events())
        for event in events:
            builder.add(event)
            if builder.full():
                chunks.append(builder.take())
        chunks.append(builder.take(end_of_stream=True))
    for chunk in chunks:
        for event in chunk_events(pb.Chunk.FromString(chunk.SerializeToString())):
            clips += feed.push(event)
    clips += feed.end()
    sent = sum(len(c.frames) for c in chunks)
    assert max(c.ByteSize() for c in chunks) < 1_000_000
    # Only the sampled frames travel (5 per second, the partial first and last seconds included), not 25.
    assert sent <= 5 * (len(direct) + 2)
    assert [c.clip_id for c in clips] == [c.clip_id for c in direct]
    # Frames are JPEG-encoded once, at ingest: the clip message carries the chunk's bytes, not a re-encoding.
    sent_jpegs = {f.jpeg for c in chunks for f in c.frames}
    assert all(set(clip_to_message(clip, "site").frames_jpeg) <= sent_jpegs for clip in clips)
    for ours, theirs in zip(clips, direct, strict=True):
        assert np.abs(ours.frames.astype(int) - theirs.frames).mean() < 3.0  # JPEG
        np.testing.assert_allclose(ours.log_mel, theirs.log_mel, atol=1e-3)  # float PCM travels exactly
        np.testing.assert_array_equal(ours.audio, theirs.audio)
        assert ours.has_audio == theirs.has_audio
    # The decoder's audio frames (1024 samples each) travel joined: one piece per chunk of continuous sound.
    assert all(len(chunk.audio) == 1 for chunk in chunks[:-1])


def test_ingest_joins_audio_that_follows_on_and_starts_a_piece_at_a_gap() -> None:
    builder = ChunkBuilder("site", "cam0", "file.mp4", 0.0, 25.0, True, chunk_seconds=10.0)
    pieces = [np.full(1024, i, np.float32) for i in range(4)]
    for i, samples in enumerate(pieces[:3]):
        builder.add(AudioChunk(i * 1024 / SAMPLE_RATE, samples))
    builder.add(AudioChunk(0.5, pieces[3]))  # a jump in the timestamps: a new piece
    chunk = pb.Chunk.FromString(builder.take().SerializeToString())
    assert [a.media_time for a in chunk.audio] == [0.0, 0.5]
    np.testing.assert_array_equal(np.frombuffer(chunk.audio[0].pcm_f32le, "<f4"), np.concatenate(pieces[:3]))
    np.testing.assert_array_equal(np.frombuffer(chunk.audio[1].pcm_f32le, "<f4"), pieces[3])
    builder.add(AudioChunk(0.5 + 1024 / SAMPLE_RATE, pieces[0]))  # follows on, but a new chunk starts a piece
    assert [a.media_time for a in builder.take().audio] == [0.5 + 1024 / SAMPLE_RATE]


def test_a_camera_session_with_no_clip_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera that connects and drops after 0.4 s gives no clip: segmentation logs the kind and the reason."""
    bus = InProcessBus()
    service = SegmentationService(bus, ClipArchive(tmp_path), "site")
    jpeg = encode_jpeg(np.zeros((224, 398, 3), np.uint8))
    chunk = pb.Chunk(header=header("site", "cam0"), session="s1", capture_epoch=1_700_000_000.0, fps=25.0,
                     frames=[pb.Frame(media_time=0.1 + 0.2 * k, jpeg=jpeg) for k in range(2)], end_of_stream=True)
    bus.publish(CHUNKS, "cam0", chunk.SerializeToString())
    with caplog.at_level("WARNING", logger="avsurv"):
        service.step()
    assert service.clips_published == 0
    assert f"cam0 session s1 ended with no clip ({TOO_SHORT}): its video lasts only" in caplog.text


def _segmented(bus: InProcessBus, archive: ClipArchive, chunks: list[bytes]) -> list[str]:
    """The clip ids the segmentation loop publishes from ``chunks`` once it is done with them, in order."""
    for chunk in chunks:
        bus.publish(CHUNKS, "cam0", chunk)
    service = SegmentationService(bus, archive, "site")
    service.start()
    try:
        wait_for(lambda: bus._committed[("segmentation", CHUNKS, 0)] == len(chunks), 60, "every chunk done")
    finally:
        service.stop()
    return [pb.Clip.FromString(v).header.clip_id for v in _read_all(bus, CLIPS)]


class _FailingOnce(ClipArchive):
    """A clip store that is away for the ``nth`` clip stored (an S3 outage, say)."""

    def __init__(self, root: Path, nth: int) -> None:
        super().__init__(root)
        self.puts, self.nth = 0, nth

    def put(self, message: pb.Clip) -> str:
        self.puts += 1
        if self.puts == self.nth:
            raise ConnectionError("the clip store is away")
        return super().put(message)


def test_segmentation_starts_over_after_a_failed_step_and_loses_no_clip(tmp_path: Path, scene: Path) -> None:
    """The clip store away in the middle of a poll of chunks: the loop starts over as a restart would and
    every clip is stored and published; before, the rest of the failed poll waited for the next restart."""
    bus = InProcessBus()
    CameraIngest("cam0", str(scene / "cam0.mp4"), bus, "site", chunk_seconds=2.0, stall_timeout_s=5.0,
                 reconnect_max_s=1.0, realtime=False, report=lambda state: None).run()
    chunks = [m.value for m in bus.subscribe("test", [CHUNKS]).poll(timeout_s=0.5, max_messages=1_000)]
    clean = _segmented(InProcessBus(), ClipArchive(tmp_path / "clean"), chunks)
    failing = _FailingOnce(tmp_path / "failing", nth=5)
    published = _segmented(InProcessBus(), failing, chunks)
    assert len(clean) >= 18 and failing.puts > failing.nth
    assert set(published) == set(clean) == set(failing.clip_ids())  # the clips before the failure come twice


def _runtime(tmp_path: Path, scene: Path, model: Path | None, **extra: object) -> Runtime:
    settings = load_settings(environ={}, data_dir=tmp_path / "data", grpc_port=0, model=str(model) if model else None,
                             cameras={"cam0": str(scene / "cam0.mp4"), "cam1": str(scene / "cam1.mp4")},
                             batch_size=8, batch_wait_s=0.2, **extra)
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    return runtime


def _read_all(bus: InProcessBus, topic: str) -> list[bytes]:
    subscription = bus.subscribe(f"test-{topic}", [topic])
    messages = subscription.poll(timeout_s=0.5, max_messages=100_000)
    subscription.close()
    return [m.value for m in messages]


def test_embedded_pipeline_from_video_to_search(tmp_path: Path, scene: Path, models: tuple[Path, Path]) -> None:
    runtime = _runtime(tmp_path, scene, models[0])
    try:
        bus = runtime.ports.bus
        assert isinstance(bus, InProcessBus)
        wait_for(runtime.workers["ingest"].finished, 120, "both cameras to be read")
        wait_for(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 60, "segmentation")
        clips = len(_read_all(bus, CLIPS))
        assert clips >= 36  # 2 cameras x ~20 s
        wait_for(lambda: runtime.workers["embedding"].clips_embedded >= clips, 120, "every clip embedded")
        version = runtime.ports.registry.active_version()
        vectors, collection = runtime.ports.vectors, collection_name("default", version or "")
        assert version and vectors.alias_target(alias_name("default")) == collection
        assert vectors.count(collection) == clips == len(runtime.ports.archive)
        embeddings = [pb.Embedding.FromString(v) for v in _read_all(bus, EMBEDDINGS)]
        assert {e.model_version for e in embeddings} == {version}
        assert len({e.header.clip_id for e in embeddings}) == clips

        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            search = api_pb2_grpc.EventSearchStub(channel)
            query = embeddings[3].header
            response = search.Search(api_pb2.SearchRequest(
                clip_at=api_pb2.ClipAt(camera_id=query.camera_id, capture_time=query.capture_time + 0.5),
                top_k=5, exclusion_s=2, separation_s=1))
            assert response.model_version == version and 1 <= len(response.results) <= 5
            assert all(abs(r.capture_time - query.capture_time) >= 2 or r.camera_id != query.camera_id
                       for r in response.results)
            distances = [r.distance for r in response.results]
            assert distances == sorted(distances)
            with pytest.raises(grpc.RpcError) as missing:
                search.Search(api_pb2.SearchRequest(clip_id="cam9:0"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            control = api_pb2_grpc.ControlStub(channel)
            cameras = control.ListCameras(api_pb2.ListCamerasRequest()).cameras
            assert {(c.camera_id, c.status) for c in cameras} == {("cam0", "finished"), ("cam1", "finished")}
            listed = api_pb2_grpc.AnomaliesStub(channel).List(api_pb2.ListAnomaliesRequest(limit=1000)).events
        wait_for(lambda: not runtime.workers["anomaly-detector"].runs, 30, "open anomaly runs to close")
        published = [pb.AnomalyEvent.FromString(v) for v in _read_all(bus, ANOMALIES)]
        assert len({(e.event_id, e.sequence) for e in published}) == len(published)  # each lifecycle message once
        ended = [e.event_id for e in published if e.phase == pb.AnomalyEvent.END]
        assert len(set(ended)) == len(ended) and {e.event_id for e in published} == set(ended)
        assert {e.event_id for e in listed} <= set(ended)
    finally:
        runtime.stop()


def _check_response(vectors: QdrantVectors, query: str, response: api_pb2.SearchResponse) -> None:
    """Every distance of the response recomputed in the response's version: a result from another
    version's space would not match."""
    collection = collection_name("default", response.model_version)
    ids = [query] + [r.clip_id for r in response.results]
    found = {h.payload["clip_id"]: h for h in vectors.retrieve(collection, [point_id(i, response.model_version)
                                                                           for i in ids])}
    q = found[query]
    for result in response.results:
        hit = found[result.clip_id]
        expected = np.mean([distance(torch.from_numpy(a), torch.from_numpy(b)).item()
                            for a, b in ((q.z_v, hit.z_v), (q.z_a, hit.z_a))])
        assert result.distance == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_a_model_published_mid_stream_is_indexed_then_swapped_in(tmp_path: Path, scene: Path,
                                                                  models: tuple[Path, Path]) -> None:
    runtime = _runtime(tmp_path, scene, models[0], realtime_files=True)
    try:
        ports, embedder = runtime.ports, runtime.workers["embedding"]
        wait_for(lambda: embedder.clips_embedded >= 8, 60, "the first clips to be embedded")
        first = ports.registry.active_version()
        assert first

        broken_dir = untrained_model(tmp_path / "broken", seed=3)
        (broken_dir / "model.safetensors").write_bytes(b"not weights")
        publish_model(broken_dir, ports.registry, ports.artifacts, ports.bus)  # its checksum file no longer fits
        wait_for(lambda: bool(embedder.failed_versions), 30, "the broken model to be refused")
        assert ports.registry.active_version() == first

        responses: list[api_pb2.SearchResponse] = []
        record = publish_model(models[1], ports.registry, ports.artifacts, ports.bus, parent=first)
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            search = api_pb2_grpc.EventSearchStub(channel)
            query = ports.archive.clip_ids("cam0")[2]
            deadline = time.monotonic() + 120
            while ports.registry.active_version() != record.version:
                assert time.monotonic() < deadline, "the new version was never activated"
                responses.append(search.Search(api_pb2.SearchRequest(clip_id=query, top_k=5, exclusion_s=0,
                                                                      separation_s=0)))
            for _ in range(3):
                responses.append(search.Search(api_pb2.SearchRequest(clip_id=query, top_k=5, exclusion_s=0,
                                                                      separation_s=0)))
        versions = [r.model_version for r in responses]
        assert versions[0] == first and versions[-1] == record.version
        assert versions == sorted(versions, key=[first, record.version].index)  # never back to the old one
        for response in responses:
            _check_response(ports.vectors, query, response)
        swap = embedder.swaps[-1]
        assert swap["version"] == record.version and swap["indexed"] >= swap["previously_indexed"]

        wait_for(runtime.workers["ingest"].finished, 120, "both cameras to be read")
        wait_for(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 60, "segmentation")
        total = len(ports.archive)
        wait_for(lambda: ports.vectors.count(collection_name("default", record.version)) == total, 60,
                 "every clip in the new version's collection")
        embedded = {pb.Embedding.FromString(v).header.clip_id for v in _read_all(ports.bus, EMBEDDINGS)}
        assert embedded == set(ports.archive.clip_ids())  # no clip dropped across the swap

        wait_for(lambda: embedder.tracker.pending() == 0, 30, "the last batch to be committed")
        stats = {version: ports.registry.all_camera_stats(version) for version in (first, record.version)}
        assert set(stats[record.version]) == {"cam0", "cam1"} and "cam0" in stats[first]
        for camera, own in stats[record.version].items():  # the backfill's, then the live batches'
            assert 0 < own.count <= len(ports.archive.clip_ids(camera))
            assert own.count == embedder.camera_stats[camera].count  # what the embedder holds is persisted
        assert not np.allclose(stats[first]["cam0"].mean["visual"], stats[record.version]["cam0"].mean["visual"])
    finally:
        runtime.stop()


def test_the_trainer_learns_on_site_and_its_model_is_swapped_in(tmp_path: Path, scene: Path) -> None:
    runtime = _runtime(tmp_path, scene, None, train_min_clips=20, train_epochs=1)
    try:
        ports = runtime.ports
        wait_for(runtime.workers["ingest"].finished, 120, "both cameras to be read")
        wait_for(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 60, "segmentation")
        assert runtime.workers["embedding"].clips_embedded == 0  # no model yet: clips wait, uncommitted
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            control = api_pb2_grpc.ControlStub(channel)
            control.TriggerTraining(api_pb2.TriggerTrainingRequest())
            wait_for(lambda: control.GetTrainingStatus(api_pb2.TrainingStatusRequest()).state == "published", 180,
                     "a training round")
            status = control.GetTrainingStatus(api_pb2.TrainingStatusRequest())
            wait_for(lambda: ports.registry.active_version() is not None, 60, "the trained model to be active")
            models = control.ListModels(api_pb2.ListModelsRequest()).models
            assert len(models) == 1 and models[0].active and models[0].indexed
            assert 0.0 <= models[0].metrics["heldout_recall_at_5"] <= 1.0
            assert models[0].model_version in status.detail
            with pytest.raises(grpc.RpcError) as no_rollback:
                control.RollbackModel(api_pb2.RollbackModelRequest())
            assert no_rollback.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        total = len(ports.archive)
        wait_for(lambda: runtime.workers["embedding"].clips_embedded >= total, 60, "the waiting clips to be embedded")
        assert ports.registry.calibration(models[0].model_version, "cam0") is not None
        version = models[0].model_version
        trained = load_version(version, ports.registry, ports.artifacts, tmp_path / "cache")
        assert trained.config["profile"] == DEFAULT_PROFILE
        assert trained.config["hyperparameters"]["views_weight"] == load_settings(environ={}).train_views_weight > 0
        # The fg input: the backfill and the live loop's later replay of the clips that waited for this model
        # each compare a clip with its camera's background before it, as offline; neither sees the other's.
        ids = ports.archive.clip_ids()
        z_v, _ = trained.embed(list(ports.archive.clips(ids)))
        stored = {hit.payload["clip_id"]: hit.z_v for hit in
                  ports.vectors.retrieve(collection_name("default", version), [point_id(i, version) for i in ids])}
        np.testing.assert_allclose(np.stack([stored[clip_id] for clip_id in ids]), z_v, atol=1e-5)
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            search = api_pb2_grpc.EventSearchStub(channel)
            uploads = [(scene / f"{camera}.mp4").read_bytes() for camera in ("cam0", "cam1", "cam0")]
            seconds = json.loads((scene / "ground_truth.json").read_text())["seconds"]["cam0"]
            busy = next(second["t"] for second in seconds if second["visible"])  # own median != middle frame
            replies = [search.Search(api_pb2.SearchRequest(media=api_pb2.MediaQuery(data=data, offset=busy + 0.5),
                                                           top_k=3)) for data in uploads]
        # An upload is no camera: the same upload finds the same clips whatever was uploaded before.
        assert [(r.clip_id, r.distance) for r in replies[0].results] == \
            [(r.clip_id, r.distance) for r in replies[2].results] != []
    finally:
        runtime.stop()


def _scored_after_publishing(tmp_path: Path, scene: Path, model: Path, read: Callable[[Registry, str], T],
                             **settings: object) -> tuple[str, list[pb.Embedding], list[pb.AnomalyEvent], T]:
    """Runs the platform on the scene and publishes ``model`` once every clip is stored (so the backfill
    calibrates each camera before any clip is scored); returns the version, the embeddings and anomaly
    events published, and what ``read`` takes from the registry for that version before the platform stops."""
    runtime = _runtime(tmp_path, scene, None, anomaly_run_idle_s=3.0, **settings)
    try:
        ports = runtime.ports
        wait_for(runtime.workers["ingest"].finished, 120, "both cameras to be read")
        wait_for(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 60, "segmentation")
        version = publish_model(model, ports.registry, ports.artifacts, ports.bus).version
        total = len(ports.archive)
        wait_for(lambda: runtime.workers["embedding"].clips_embedded >= total, 120, "every clip embedded")
        wait_for(lambda: runtime.workers["anomaly-detector"].tracker.pending() == 0
                 and not runtime.workers["anomaly-detector"].runs, 60, "every clip scored and its events closed")
        embeddings = [pb.Embedding.FromString(v) for v in _read_all(ports.bus, EMBEDDINGS)]
        published = [e for e in map(pb.AnomalyEvent.FromString, _read_all(ports.bus, ANOMALIES))
                     if e.phase == pb.AnomalyEvent.END]  # each whole event
        return version, embeddings, published, read(ports.registry, version)
    finally:
        runtime.stop()


def test_a_model_trained_with_another_w_flags_through_the_platform_what_it_flags_offline(
        tmp_path: Path, scene: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One contract per model version: the detector scores with the version's w (carried by the embedding
    message) on the scale of the calibration the embedder fitted with that w, so the platform's events are
    exactly `avsurv anomalies` on the same embeddings and calibration."""
    model = untrained_model(tmp_path / "model", seed=3, w=0.8)
    # Low stds so that an untrained model flags something; the detector and the offline run both use it.
    version, embeddings, published, (record, calibrations) = _scored_after_publishing(
        tmp_path, scene, model, lambda registry, version: (
            registry.model(version), {c: registry.calibration(version, c) for c in ("cam0", "cam1")}),
        anomaly_detector="eq5", anomaly_stds=0.5)
    assert {(e.model_version, e.w, e.profile) for e in embeddings} == {(version, 0.8, "tiny")}
    assert record is not None and record.w == 0.8
    platform = {(e.header.camera_id, round(e.start_time, 3), round(e.end_time, 3), len(e.clip_ids))
                for e in published}
    offline = set()
    for camera in ("cam0", "cam1"):
        calibration = calibrations[camera]
        assert calibration is not None and calibration.w == 0.8 and calibration.stds == 0.5
        mine = [e for e in embeddings if e.header.camera_id == camera]
        capture = np.array([e.header.capture_time for e in mine])
        EmbeddingSet(clip_start=capture, z_v=np.array([e.z_v for e in mine]), z_a=np.array([e.z_a for e in mine]),
                     clip_id=[e.header.clip_id for e in mine], camera_id=[camera] * len(mine), capture_time=capture,
                     has_audio=[e.has_audio for e in mine], source=[camera] * len(mine),
                     model_sha256=mine[0].model_sha256).save(tmp_path / f"{camera}.npz")
        calibration.save(tmp_path / f"{camera}.json")
        assert main(["anomalies", str(tmp_path / f"{camera}.npz"), "--calibration", str(tmp_path / f"{camera}.json"),
                     "--out", str(tmp_path / f"{camera}.jsonl")]) == 0
        offline |= {(e["camera_id"], round(e["capture_start"], 3), round(e["capture_end"], 3), e["clips"])
                    for e in map(json.loads, (tmp_path / f"{camera}.jsonl").read_text().splitlines())}
    capsys.readouterr()
    assert offline and platform == offline


def test_site_novelty_flags_through_the_platform_what_its_calibration_flags_offline(
        tmp_path: Path, scene: Path) -> None:
    """The default detector: each clip against its camera's earlier clips in the model's space (the stored
    ones the embedder indexed, then the live ones), with the calibration the embedder fitted per camera."""
    model = untrained_model(tmp_path / "model", seed=4)
    assert load_settings(environ={}).anomaly_detector == "novelty"
    _, embeddings, published, calibrations = _scored_after_publishing(
        tmp_path, scene, model, lambda registry, version: {c: registry.novelty(version, c) for c in ("cam0", "cam1")},
        anomaly_stds=0.5, novelty_exclusion_s=5.0)
    assert {e.detector for e in published} <= {"novelty"}
    platform = {(e.header.camera_id, round(e.start_time, 3), round(e.end_time, 3)) for e in published}
    offline = set()
    for camera, novelty in calibrations.items():
        assert novelty is not None and novelty.exclusion_s == 5.0 and novelty.calibration.stds == 0.5
        mine = sorted((e for e in embeddings if e.header.camera_id == camera), key=lambda e: e.header.capture_time)
        z_v, z_a = np.array([e.z_v for e in mine], np.float32), np.array([e.z_a for e in mine], np.float32)
        times = np.array([e.header.capture_time for e in mine])
        flags = []
        for i, e in enumerate(mine):
            score = novelty.score(z_v[i], z_a[i], times[i], CameraHistory.empty(z_v.shape[1]).added(
                z_v[:i], z_a[:i], times[:i]))
            flags.append(e.has_audio and score is not None and score > novelty.calibration.threshold)
        for flagged, run in itertools.groupby(zip(flags, times, strict=True), key=lambda pair: pair[0]):
            if flagged:
                starts = [start for _, start in run]
                offline.add((camera, round(starts[0], 3), round(starts[-1] + 1, 3)))
    assert offline and platform == offline


def test_the_trainer_profile_defaults_to_the_models_default() -> None:
    assert load_settings(environ={}).train_profile == DEFAULT_PROFILE
    assert load_settings(environ={"AVSURV_TRAIN_PROFILE": "tiny"}).train_profile == "tiny"
    with pytest.raises(ConfigError, match="train_profile"):
        load_settings(environ={"AVSURV_TRAIN_PROFILE": "huge"})
    assert load_settings(environ={"AVSURV_TRAIN_VIEWS_WEIGHT": "0"}).train_views_weight == 0.0
    with pytest.raises(ConfigError, match="train_views_weight"):
        load_settings(environ={"AVSURV_TRAIN_VIEWS_WEIGHT": "-1"})


def test_trainer_rejects_only_a_significantly_worse_model() -> None:
    assert not significantly_worse(0.31, 0.375, clips=16)  # noise on 16 clips
    assert significantly_worse(0.31, 0.375, clips=2000)
    assert significantly_worse(0.0, 0.5, clips=16)
    assert not significantly_worse(0.6, 0.5, clips=10_000)


def test_demo_runs_the_platform_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--exit", "--duration", "30", "--grpc-port", "0", "--first-epochs", "1",
                 "--second-epochs", "1", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for step in ("1. scene", "2. platform: 60 clips", "3. training round", "4. training round",
                 "5. anomaly events", "6. search", "7. quality", "events: precision", "search: precision@5"):
        assert step in out, out
    assert "published" in out.split("4. training round")[0]
    quality = json.loads((tmp_path / "demo_quality.json").read_text())
    assert quality["events"]["episodes"] >= 1 and quality["search"]["queries"]
    assert all(len(query["results"]) <= 5 for query in quality["search"]["queries"])
    # No ranking beats a perfect one: the ceiling counts the scene's separate moments of each query's class.
    assert "a perfect ranking scores" in out
    assert 0.0 <= quality["search"]["precision_at_5"] <= quality["search"]["best_precision_at_5"] <= 1.0


def test_bad_messages_go_to_the_dead_letter_topic_and_cameras_change_at_run_time(tmp_path: Path,
                                                                                   models: tuple[Path, Path]) -> None:
    metrics_port = free_port()
    settings = load_settings(environ={}, data_dir=tmp_path / "data", grpc_port=0, model=str(models[0]),
                             metrics_port=metrics_port, stall_timeout_s=1.0, reconnect_max_s=2.0)
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    try:
        # The counter is process-wide: earlier tests in the same run may have dead-lettered too.
        before = _dead_lettered(metrics_port, "segmentation")
        bus = runtime.ports.bus
        assert isinstance(bus, InProcessBus)
        bus.publish(CHUNKS, "cam0", b"\x08\x96\x01 not a chunk")
        bus.publish(CLIPS, "cam0", pb.Clip(header=pb.Header(schema_version=pb.SCHEMA_VERSION_1, camera_id="cam0",
                                                            clip_id="cam0:1000"), frames_jpeg=[b"x"] * 5,
                                           log_mel_f16=bytes(128 * 64 * 2)).SerializeToString())
        bus.publish(EMBEDDINGS, "cam0", pb.Embedding(header=pb.Header(camera_id="cam0")).SerializeToString())
        wait_for(lambda: len(_read_all(bus, DEAD_LETTERS)) == 3, 30, "three dead letters")
        letters = {letter.service: letter for letter in map(pb.DeadLetter.FromString, _read_all(bus, DEAD_LETTERS))}
        assert set(letters) == {"segmentation", "embedding", "anomaly-detector"}
        assert "not a Chunk" in letters["segmentation"].reason
        assert "not a JPEG" in letters["embedding"].reason
        assert "schema version 0" in letters["anomaly-detector"].reason
        assert letters["segmentation"].payload == b"\x08\x96\x01 not a chunk"

        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            control = api_pb2_grpc.ControlStub(channel)
            added = control.AddCamera(api_pb2.AddCameraRequest(camera_id="gate",
                                                               source="http://user:secret@127.0.0.1:9/live"))
            assert "secret" not in added.source
            wait_for(lambda: any(c.status == "reconnecting" for c in
                                 control.ListCameras(api_pb2.ListCamerasRequest()).cameras), 30, "a reconnect")
            camera = control.ListCameras(api_pb2.ListCamerasRequest()).cameras[0]
            assert camera.camera_id == "gate" and "retrying in" in camera.detail
            control.RemoveCamera(api_pb2.RemoveCameraRequest(camera_id="gate"))
            wait_for(lambda: not control.ListCameras(api_pb2.ListCamerasRequest()).cameras, 30, "the camera to go")
            with pytest.raises(grpc.RpcError) as bad:
                control.AddCamera(api_pb2.AddCameraRequest(camera_id="../x", source="a.mp4"))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            reply = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")])))
            names = {s.name for s in reply.list_services_response.service}
            assert {"avsurv.v1.EventSearch", "avsurv.v1.Anomalies", "avsurv.v1.Control",
                    "grpc.health.v1.Health"} <= names
        assert _dead_lettered(metrics_port, "segmentation") == before + 1
    finally:
        runtime.stop()


def _dead_lettered(metrics_port: int, service: str) -> float:
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    line = f'avsurv_messages_dead_lettered_total{{service="{service}"}} '
    values = [float(row.removeprefix(line)) for row in metrics.splitlines() if row.startswith(line)]
    return values[0] if values else 0.0


def test_avsurv_run_serves_cameras_until_their_files_end(tmp_path: Path, scene: Path,
                                                         models: tuple[Path, Path]) -> None:
    config = tmp_path / "avsurv.yaml"
    config.write_text("anomaly_run_idle_s: 2\nbatch_size: 4\n")
    assert main(["run", "--camera", f"cam0={scene / 'cam0.mp4'}", "--model", str(models[0]), "--data-dir",
                 str(tmp_path), "--grpc-port", "0", "--config", str(config), "--exit-when-done"]) == 0
    clips = len(ClipArchive(tmp_path / "clips"))
    vectors = open_vectors(f"local://{tmp_path / 'qdrant'}")
    try:
        assert clips >= 18 and vectors.count(vectors.alias_target(alias_name("default")) or "") == clips
    finally:
        vectors.close()


def _trained_head(model_dir: Path, scene: Path, out: Path) -> TrainedHead:
    """A TACMA head on the embeddings of cam0 by the model in ``model_dir``, with the scene's labels."""
    model, config = load_model(model_dir)
    embeddings = embed_inputs(model, config, [scene / "cam0.mp4"], progress=False)
    head = train_head(embeddings, read_labels(scene / "ground_truth.json"),
                      HeadSettings(kind="tacma", window=7, hidden=32))
    head.save(out)
    return head


def _as_set(embeddings: list[pb.Embedding], model_sha256: str) -> EmbeddingSet:
    return EmbeddingSet(clip_start=[e.header.capture_time for e in embeddings], z_v=[e.z_v for e in embeddings],
                        z_a=[e.z_a for e in embeddings], clip_id=[e.header.clip_id for e in embeddings],
                        camera_id=[e.header.camera_id for e in embeddings],
                        capture_time=[e.header.capture_time for e in embeddings],
                        has_audio=[e.has_audio for e in embeddings], source=[""] * len(embeddings),
                        model_sha256=model_sha256)


def test_heads_attached_to_cameras_publish_their_events(tmp_path: Path, scene: Path, models: tuple[Path, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    head = _trained_head(models[0], scene, tmp_path / "tacma")
    _trained_head(models[1], scene, tmp_path / "other")  # trained on another model's embeddings
    data = ["--data-dir", str(tmp_path / "data")]
    every_class = ["--labels", *head.classes]  # every clip a head labels is in one of its events
    assert main(["heads", "attach", "cam0", str(tmp_path / "tacma"), "--name", "loc", *every_class, *data]) == 0
    assert main(["heads", "attach", "cam1", str(tmp_path / "other"), "--name", "idle", *every_class, *data]) == 0
    assert "no model version of this platform" in capsys.readouterr().err  # none is published yet
    assert main(["heads", "attach", "cam0", str(tmp_path / "tacma"), "--labels", "unicorn", *data]) == 2
    assert "has no class ['unicorn']" in capsys.readouterr().err
    runtime = _runtime(tmp_path, scene, models[0], anomaly_run_idle_s=2.0)
    try:
        assert main(["heads", "attached", *data]) == 0  # shares the running platform's embedded state store
        assert "cam0\tloc\ttacma" in capsys.readouterr().out
        detector = runtime.workers["anomaly-detector"]
        wait_for(runtime.workers["ingest"].finished, 120, "both cameras to be read")
        wait_for(lambda: runtime.workers["segmentation"].tracker.pending() == 0, 60, "segmentation")
        clips = len(_read_all(runtime.ports.bus, CLIPS))
        wait_for(lambda: runtime.workers["embedding"].clips_embedded >= clips, 120, "every clip embedded")
        wait_for(lambda: detector.tracker.pending() == 0 and not detector.runs, 60, "every clip's events")
        embeddings = [pb.Embedding.FromString(v) for v in _read_all(runtime.ports.bus, EMBEDDINGS)]
        events = [e for e in map(pb.AnomalyEvent.FromString, _read_all(runtime.ports.bus, ANOMALIES))
                  if e.phase == pb.AnomalyEvent.END]  # each whole event
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            anomalies = api_pb2_grpc.AnomaliesStub(channel)
            listed = {detector: {e.event_id for e in anomalies.List(api_pb2.ListAnomaliesRequest(
                detectors=[detector], limit=1000)).events} for detector in ("", "head:tacma:loc")}
    finally:
        runtime.stop()
    assert {e.detector for e in events} <= {"", "head:tacma:loc"}  # the other head never read a clip
    assert listed == {d: {e.event_id for e in events if e.detector == d} for d in listed}
    head_events = sorted((e for e in events if e.detector), key=lambda e: e.start_time)
    assert head_events and all(e.header.camera_id == "cam0" and e.threshold == 0.0 for e in head_events)
    # The events hold every cam0 clip once, labelled as the head labels the whole recording.
    cam0 = _as_set([e for e in embeddings if e.header.camera_id == "cam0"], head.config["embeddings"]["model_sha256"])
    expected = head.predict(cam0)
    got = {clip: e.label for e in head_events for clip in e.clip_ids}
    assert sum(len(e.clip_ids) for e in head_events) == len(got) == len(expected.rows) == len(cam0)
    assert got == dict(zip(cam0.clip_id[expected.rows], expected.labels, strict=True))
    for before, after in itertools.pairwise(head_events):
        assert before.end_time <= after.start_time and (before.end_time < after.start_time
                                                        or before.label != after.label)
    assert all(e.end_time - e.start_time == len(e.clip_ids) for e in head_events)
    assert main(["heads", "attached", *data]) == 0
    assert [line.split("\t")[:3] for line in capsys.readouterr().out.splitlines()] == [
        ["cam0", "loc", "tacma"], ["cam1", "idle", "tacma"]]
    assert main(["heads", "detach", "cam1", "idle", *data]) == 0
    assert main(["heads", "detach", "cam1", "idle", *data]) == 2
    assert "cam1 has no head named 'idle'" in capsys.readouterr().err


def test_heads_are_configured_per_camera_from_yaml_or_the_environment(tmp_path: Path) -> None:
    environ = {"AVSURV_HEADS": "cam0=/heads/a, cam0=/heads/b,cam1=/heads/c"}
    assert load_settings(environ=environ).heads == {"cam0": ["/heads/a", "/heads/b"], "cam1": ["/heads/c"]}
    (tmp_path / "settings.yaml").write_text("heads:\n  gate: [/heads/avaca]\n")
    assert load_settings(tmp_path / "settings.yaml", environ={}).heads == {"gate": ["/heads/avaca"]}
    assert load_settings(environ={"AVSURV_HEADS": ""}).heads == {}
    with pytest.raises(ConfigError, match="heads must be CAMERA=DIR pairs"):
        load_settings(environ={"AVSURV_HEADS": "cam0"})

"""The gRPC API's limits (issue 14, the defects found by fuzzing it and item 5): every request field is
bounded and a request outside the bounds is refused with INVALID_ARGUMENT and a short reason; camera ids
are checked alike by the API and the clip store; camera sources are restricted; health answers for the
full service names; rollback walks back; training can be cancelled. One search-only runtime."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avsurv.adapters.vectors import alias_name, collection_name
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import ConfigError, load_settings
from avsurv.platform.registry import ModelRecord, Registry
from avsurv.platform.runtime import Runtime
from avsurv.services import trainer as trainer_service
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    root = tmp_path_factory.mktemp("api")
    (root / "videos").mkdir()
    settings = load_settings(environ={}, data_dir=root / "data", grpc_port=0, api_camera_roots=[str(root / "videos")])
    runtime = Runtime(["search"], settings, embedded=True)
    runtime.start()
    # One indexed version, so that searches get past "nothing indexed" to their query.
    collection = collection_name(settings.site, "v1")
    runtime.ports.vectors.ensure_collection(collection)
    runtime.ports.vectors.set_alias(alias_name(settings.site), collection)
    yield runtime
    runtime.stop()


@pytest.fixture(scope="module")
def channel(runtime: Runtime) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        yield channel


def refused(call: Callable[[], object], code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
    """The call's error detail, after checking its status (never UNKNOWN: that is a server traceback)."""
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() == code, error.value.details()
    return error.value.details()


def search(channel: grpc.Channel, **fields: object) -> api_pb2.SearchResponse:
    return api_pb2_grpc.EventSearchStub(channel).Search(api_pb2.SearchRequest(**fields), timeout=10)


@pytest.mark.parametrize("time", [math.nan, math.inf, -math.inf, 1e300])
def test_clip_at_needs_a_finite_capture_time(channel: grpc.Channel, time: float) -> None:
    detail = refused(lambda: search(channel, clip_at=api_pb2.ClipAt(camera_id="cam0", capture_time=time)))
    assert "clip_at.capture_time" in detail


def test_listing_anomalies_needs_a_finite_ordered_time_range(channel: grpc.Channel) -> None:
    anomalies = api_pb2_grpc.AnomaliesStub(channel)
    assert "start_time" in refused(lambda: anomalies.List(api_pb2.ListAnomaliesRequest(start_time=math.nan)))
    assert "end_time" in refused(lambda: anomalies.List(api_pb2.ListAnomaliesRequest(end_time=math.inf)))
    assert "after end_time" in refused(lambda: anomalies.List(api_pb2.ListAnomaliesRequest(start_time=2, end_time=1)))
    assert list(anomalies.List(api_pb2.ListAnomaliesRequest(start_time=1, end_time=2)).events) == []


def test_a_huge_id_is_refused_without_being_echoed(channel: grpc.Channel) -> None:
    control = api_pb2_grpc.ControlStub(channel)
    huge = "c" * MiB
    for call in (lambda: search(channel, clip_id=huge + ":1000"),
                 lambda: search(channel, clip_id=huge),
                 lambda: control.RemoveCamera(api_pb2.RemoveCameraRequest(camera_id=huge)),
                 lambda: control.ActivateModel(api_pb2.ActivateModelRequest(model_version=huge))):
        detail = refused(call)
        assert len(detail) < 200 and "characters" in detail
    # a malformed id within the length bound is quoted, cut short
    assert "(85 characters)" in refused(lambda: search(channel, clip_id="x" * 85))


def test_an_error_quotes_at_most_a_short_prefix_of_what_it_refuses(channel: grpc.Channel) -> None:
    control = api_pb2_grpc.ControlStub(channel)
    name = "v" * 128  # within the bound: looked up, not found, quoted cut short
    detail = refused(lambda: control.ActivateModel(api_pb2.ActivateModelRequest(model_version=name)),
                     grpc.StatusCode.NOT_FOUND)
    assert "(128 characters)" in detail and name not in detail


BAD_CAMERA_IDS = ["cam0\n", ".cam0", "..", "a/b", "cam 0", "cam:0", "", "c" * 65, "ca\x00m", "kamera\u00e9"]
GOOD_CAMERA_IDS = ["cam0", "gate-north.2", "A_b", "9", "c" * 64]


@pytest.mark.parametrize("camera_id", BAD_CAMERA_IDS)
def test_a_camera_id_the_clip_store_refuses_is_refused_by_the_api_and_the_settings(
        channel: grpc.Channel, tmp_path: Path, camera_id: str) -> None:
    control = api_pb2_grpc.ControlStub(channel)
    assert "camera id" in refused(lambda: control.AddCamera(api_pb2.AddCameraRequest(
        camera_id=camera_id, source="rtsp://camera.local/stream")))
    with pytest.raises(ValueError, match="not a clip id"):
        ClipArchive(tmp_path).path(f"{camera_id}:1000")
    with pytest.raises(ConfigError, match="camera id"):
        load_settings(environ={}, cameras={camera_id: "/videos/a.mp4"})


@pytest.mark.parametrize("camera_id", GOOD_CAMERA_IDS)
def test_a_camera_id_the_api_accepts_is_stored_by_the_clip_store(channel: grpc.Channel, tmp_path: Path,
                                                                 camera_id: str) -> None:
    control = api_pb2_grpc.ControlStub(channel)
    added = control.AddCamera(api_pb2.AddCameraRequest(camera_id=camera_id, source="rtsp://camera.local/stream"))
    assert added.camera_id == camera_id
    control.RemoveCamera(api_pb2.RemoveCameraRequest(camera_id=camera_id))
    archive = ClipArchive(tmp_path)
    archive.put(pb.Clip(header=pb.Header(camera_id=camera_id, clip_id=f"{camera_id}:1000")))
    assert archive.clip_ids() == [f"{camera_id}:1000"]


def test_health_answers_for_the_full_service_names(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "avsurv.v1.EventSearch", "avsurv.v1.Anomalies", "avsurv.v1.Control", "avsurv.search"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def _register(registry: Registry, *versions: str) -> None:
    """Publishes ``versions`` in turn, each activated as the embedder activates a target once indexed."""
    for number, version in enumerate(versions):
        registry.add_model(ModelRecord(version=version, sha256="0" * 64, artifact_uri="", created_time=number,
                                       w=0.5, profile="tiny"))
        registry.set_target(version)
        registry.activate(version)


def test_rollback_walks_back_the_version_history(runtime: Runtime, channel: grpc.Channel) -> None:
    registry, control = runtime.ports.registry, api_pb2_grpc.ControlStub(channel)
    _register(registry, "r1", "r2", "r3")
    for expected in ("r2", "r1"):
        assert control.RollbackModel(api_pb2.RollbackModelRequest()).model_version == expected
        assert registry.target_version() == expected
        registry.activate(registry.target_version())  # the embedder's hot-swap
    assert registry.active_version() == "r1"
    refused(lambda: control.RollbackModel(api_pb2.RollbackModelRequest()), grpc.StatusCode.FAILED_PRECONDITION)
    # a version activated after a rollback is rolled back from as usual
    control.ActivateModel(api_pb2.ActivateModelRequest(model_version="r3"))
    registry.activate("r3")
    assert control.RollbackModel(api_pb2.RollbackModelRequest()).model_version == "r1"


OUT_OF_BOUNDS = [
    ("top_k", lambda s: s.search(clip_id="cam0:0", top_k=101)),
    ("exclusion_s", lambda s: s.search(clip_id="cam0:0", exclusion_s=-1)),
    ("exclusion_s", lambda s: s.search(clip_id="cam0:0", exclusion_s=math.inf)),
    ("separation_s", lambda s: s.search(clip_id="cam0:0", separation_s=math.nan)),
    ("camera_ids", lambda s: s.search(clip_id="cam0:0", camera_ids=[f"c{i}" for i in range(257)])),
    ("camera_ids", lambda s: s.search(clip_id="cam0:0", camera_ids=["cam0\n"])),
    ("start_time", lambda s: s.search(clip_id="cam0:0", start_time=math.nan)),
    ("after end_time", lambda s: s.search(clip_id="cam0:0", start_time=5, end_time=4)),
    ("media.offset", lambda s: s.search(media=api_pb2.MediaQuery(data=b"x", offset=math.nan))),
    ("clip_id", lambda s: s.search(clip_id="no-separator")),
    ("limit", lambda s: s.anomalies.List(api_pb2.ListAnomaliesRequest(limit=10_001))),
    ("min_score", lambda s: s.anomalies.List(api_pb2.ListAnomaliesRequest(min_score=math.nan))),
    ("detectors", lambda s: s.anomalies.List(api_pb2.ListAnomaliesRequest(detectors=["d" * 129]))),
    ("camera_ids", lambda s: next(s.anomalies.Watch(api_pb2.WatchAnomaliesRequest(camera_ids=[".x"]), timeout=5))),
    ("epochs", lambda s: s.control.TriggerTraining(api_pb2.TriggerTrainingRequest(epochs=10**9))),
    ("epochs", lambda s: s.control.TriggerTraining(api_pb2.TriggerTrainingRequest(epochs=201))),
    ("site", lambda s: s.control.TriggerTraining(api_pb2.TriggerTrainingRequest(site="s" * 129))),
    ("source", lambda s: s.control.AddCamera(api_pb2.AddCameraRequest(camera_id="c", source="rtsp://h/" + "x" * 3000))),
]


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.anomalies = api_pb2_grpc.AnomaliesStub(channel)
        self.control = api_pb2_grpc.ControlStub(channel)

    def search(self, **fields: object) -> api_pb2.SearchResponse:
        return search(self.channel, **fields)


@pytest.mark.parametrize(("field", "call"), OUT_OF_BOUNDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(OUT_OF_BOUNDS)])
def test_a_request_field_out_of_bounds_is_refused_with_its_name(channel: grpc.Channel, field: str,
                                                                call: Callable[[Stubs], object]) -> None:
    assert field in refused(lambda: call(Stubs(channel)))


def test_the_demos_requests_are_within_bounds(runtime: Runtime, channel: grpc.Channel) -> None:
    refused(lambda: search(channel, clip_id="cam0:1767225642000", top_k=5, exclusion_s=10, separation_s=5),
            grpc.StatusCode.NOT_FOUND)  # checked, then looked up
    control = api_pb2_grpc.ControlStub(channel)
    for epochs in (2, 5, 200):
        control.TriggerTraining(api_pb2.TriggerTrainingRequest(epochs=epochs))
        assert runtime.ports.registry.take_training_request() == epochs


@pytest.mark.parametrize("source", [
    "rtsp://camera.local:554/stream1", "rtsps://user:secret@10.0.0.5/live", "http://10.0.0.6/mjpeg",
    "https://cam.example/hls.m3u8", "{videos}/a.mp4", "{videos}/sub/../b.mp4"])
def test_a_camera_source_of_an_allowed_scheme_or_under_a_root_is_accepted(
        runtime: Runtime, channel: grpc.Channel, source: str) -> None:
    videos = runtime.settings.api_camera_roots[0]
    control = api_pb2_grpc.ControlStub(channel)
    control.AddCamera(api_pb2.AddCameraRequest(camera_id="src", source=source.format(videos=videos)))
    control.RemoveCamera(api_pb2.RemoveCameraRequest(camera_id="src"))


@pytest.mark.parametrize("source", [
    "/etc/passwd", "{videos}/../escape.mp4", "{videos}-other/a.mp4", "a.mp4", "file:///etc/passwd",
    "concat:{videos}/a.mp4|/etc/passwd", "pipe:0", "/dev/video0", "rtmp://host/live", "udp://0.0.0.0:1234",
    "http:///no-host", "rtsp://host/\nInjected: 1", "{videos}/link-out/x.mp4", ""])
def test_any_other_camera_source_is_refused(runtime: Runtime, channel: grpc.Channel, source: str) -> None:
    videos = Path(runtime.settings.api_camera_roots[0])
    if not (videos / "link-out").exists():
        (videos / "link-out").symlink_to("/etc")  # inside the root by name, outside once resolved
    control = api_pb2_grpc.ControlStub(channel)
    assert "source" in refused(lambda: control.AddCamera(api_pb2.AddCameraRequest(
        camera_id="src", source=source.format(videos=videos))))
    assert "src" not in runtime.ports.registry.wanted_cameras()


def test_cancelling_drops_a_pending_training_request(runtime: Runtime, channel: grpc.Channel) -> None:
    control = api_pb2_grpc.ControlStub(channel)
    control.TriggerTraining(api_pb2.TriggerTrainingRequest(epochs=3))
    status = control.CancelTraining(api_pb2.CancelTrainingRequest())
    assert status.state == "cancelled" and "before it started" in status.detail
    assert runtime.ports.registry.take_training_request() is None
    refused(lambda: control.CancelTraining(api_pb2.CancelTrainingRequest()), grpc.StatusCode.FAILED_PRECONDITION)


class EpochsTrainer:
    """Stands in for avsurv's Trainer (too slow for this test): it logs after every epoch, as that one
    does, and asks the API to cancel after the second."""

    epochs_run = 0
    control: api_pb2_grpc.ControlStub

    def __init__(self, table: object, out_dir: Path, config: object, progress: bool, log: Callable[[str], None],
                 stopping: Callable[[], bool]):
        self.out_dir, self.config, self.log = out_dir, config, log
        out_dir.mkdir(parents=True)

    def run(self) -> None:
        for epoch in range(self.config.epochs):
            (self.out_dir / f"epoch{epoch}.ckpt").write_bytes(b"weights")
            EpochsTrainer.epochs_run += 1
            if epoch == 1:
                EpochsTrainer.control.CancelTraining(api_pb2.CancelTrainingRequest())
            self.log(f"epoch {epoch + 1}/{self.config.epochs}")
        raise AssertionError("the cancelled round ran to its end")


def test_a_cancelled_round_stops_after_its_epoch_publishes_nothing_and_leaves_no_scratch(
        runtime: Runtime, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_service, "Trainer", EpochsTrainer)
    EpochsTrainer.control = api_pb2_grpc.ControlStub(channel)
    ports, settings = runtime.ports, runtime.settings
    service = trainer_service.TrainerService(ports.bus, ports.registry, ports.artifacts, ports.archive, settings)
    models = len(ports.registry.models())
    assert service.train_round(epochs=1000) is None
    assert EpochsTrainer.epochs_run == 2
    status = EpochsTrainer.control.GetTrainingStatus(api_pb2.TrainingStatusRequest())
    assert status.state == "cancelled" and "1000 epochs" in status.detail
    assert len(ports.registry.models()) == models
    assert not list(settings.data_dir.glob("avsurv-train-*"))
    # the cancel named that round: the next one is not cancelled
    refused(lambda: EpochsTrainer.control.CancelTraining(api_pb2.CancelTrainingRequest()),
            grpc.StatusCode.FAILED_PRECONDITION)
    ports.registry.start_round("next")
    assert not ports.registry.round_cancelled("next")
    ports.registry.end_round()

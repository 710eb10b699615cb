"""The generated protobuf / gRPC code matches the protos (regenerated with the pinned grpcio-tools), and
the topic payloads round-trip."""

from __future__ import annotations

import runpy
from pathlib import Path

from avsurv.v1 import api_pb2, api_pb2_grpc, messages_pb2

GENERATOR = Path(__file__).resolve().parents[1] / "protos" / "generate.py"


def test_generated_code_is_up_to_date() -> None:
    check = runpy.run_path(str(GENERATOR))["check"]
    assert check() == []


def test_every_topic_payload_carries_the_common_header() -> None:
    for name in ("Chunk", "Clip", "Embedding", "AnomalyEvent", "ModelUpdate", "DeadLetter"):
        descriptor = getattr(messages_pb2, name).DESCRIPTOR
        assert descriptor.fields_by_name["header"].message_type.name == "Header", name
    assert set(messages_pb2.Header.DESCRIPTOR.fields_by_name) == {
        "schema_version", "site", "camera_id", "clip_id", "capture_time"}


def test_a_clip_round_trips_and_stays_far_below_kafkas_message_limit() -> None:
    clip = messages_pb2.Clip(
        header=messages_pb2.Header(schema_version=messages_pb2.SCHEMA_VERSION_1, site="s", camera_id="cam0",
                                   clip_id="cam0/1700000000", capture_time=1_700_000_000.0),
        frames_jpeg=[bytes(30_000)] * 5, log_mel_f16=bytes(128 * 64 * 2), has_audio=True)
    data = clip.SerializeToString()
    assert messages_pb2.Clip.FromString(data) == clip
    assert len(data) < 1_000_000 / 4


def test_the_services_have_their_methods() -> None:
    services = api_pb2.DESCRIPTOR.services_by_name
    assert set(services["EventSearch"].methods_by_name) == {"Search", "GetClip"}
    assert set(services["Anomalies"].methods_by_name) == {"List", "Watch", "Export", "Scores"}
    assert services["Anomalies"].methods_by_name["Watch"].server_streaming
    assert set(services["Control"].methods_by_name) == {
        "AddCamera", "RemoveCamera", "ListCameras", "TriggerTraining", "GetTrainingStatus", "ListModels",
        "ActivateModel", "RollbackModel", "CancelTraining"}
    assert hasattr(api_pb2_grpc, "EventSearchStub") and hasattr(api_pb2_grpc, "add_ControlServicer_to_server")

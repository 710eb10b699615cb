"""The gRPC API's security (issue 14 item 4): bearer tokens with read and control scopes, TLS from
configured files, loopback by default in one process, tokens never printed. One search-only runtime
with TLS and tokens (a self-signed certificate made here with the openssl command: the test extra has no
X.509 library)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avsurv.platform.auth import configured_tokens, operator_channel
from avsurv.platform.config import ConfigError, load_settings
from avsurv.platform.runtime import Runtime, bind_address
from avsurv.v1 import api_pb2, api_pb2_grpc

READ, CONTROL, FILE_READ, FILE_CONTROL = "read-7f3a", "control-91bc", "file-read-22d0", "file-control-5e11"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A new certificate for 127.0.0.1 and localhost in ``directory``, and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, bytes, str]]:
    """The runtime, its certificate and its start-up log."""
    root = tmp_path_factory.mktemp("auth")
    cert, key = self_signed(root)
    tokens_file = root / "tokens"
    tokens_file.write_text(f"# rotated monthly\nread {FILE_READ}\ncontrol {FILE_CONTROL}\n")
    settings = load_settings(environ={"AVSURV_API_READ_TOKEN": READ, "AVSURV_API_CONTROL_TOKEN": CONTROL},
                             data_dir=root / "data", grpc_port=0, grpc_tls_cert=str(cert), grpc_tls_key=str(key),
                             api_tokens_file=str(tokens_file))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("avsurv")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        runtime = Runtime(["search"], settings, embedded=True)
        runtime.start()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    yield runtime, cert.read_bytes(), "\n".join(r.getMessage() for r in records)
    runtime.stop()


@pytest.fixture(scope="module")
def channel(secured: tuple[Runtime, bytes, str]) -> Iterator[grpc.Channel]:
    runtime, cert, _ = secured
    with grpc.secure_channel(f"127.0.0.1:{runtime.port}", grpc.ssl_channel_credentials(cert)) as channel:
        yield channel


def status(call: Callable[..., object], request: object, token: str | None) -> grpc.StatusCode:
    """The call's status code with ``token`` (None: no authorization metadata)."""
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    try:
        reply = call(request, metadata=metadata, timeout=10)
        if isinstance(reply, grpc.Call) and hasattr(reply, "__next__"):  # a stream: its first answer
            reply.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def calls(channel: grpc.Channel) -> dict[str, tuple[Callable[..., object], object]]:
    search, anomalies = api_pb2_grpc.EventSearchStub(channel), api_pb2_grpc.AnomaliesStub(channel)
    control = api_pb2_grpc.ControlStub(channel)
    return {
        "Search": (search.Search, api_pb2.SearchRequest(clip_id="cam0:0")),
        "GetClip": (search.GetClip, api_pb2.GetClipRequest(clip_id="cam0:0")),
        "List": (anomalies.List, api_pb2.ListAnomaliesRequest()),
        "Export": (anomalies.Export, api_pb2.ExportEvidenceRequest(event_id="e0")),
        "Scores": (anomalies.Scores, api_pb2.ScoresRequest(camera_id="cam0")),
        "ListCameras": (control.ListCameras, api_pb2.ListCamerasRequest()),
        "GetTrainingStatus": (control.GetTrainingStatus, api_pb2.TrainingStatusRequest()),
        "ListModels": (control.ListModels, api_pb2.ListModelsRequest()),
        "AddCamera": (control.AddCamera, api_pb2.AddCameraRequest(camera_id="cam0", source="rtsp://cam.local/s")),
        "RemoveCamera": (control.RemoveCamera, api_pb2.RemoveCameraRequest(camera_id="cam0")),
        "TriggerTraining": (control.TriggerTraining, api_pb2.TriggerTrainingRequest(epochs=1)),
        "CancelTraining": (control.CancelTraining, api_pb2.CancelTrainingRequest()),
        "ActivateModel": (control.ActivateModel, api_pb2.ActivateModelRequest(model_version="v0")),
        "RollbackModel": (control.RollbackModel, api_pb2.RollbackModelRequest()),
    }


READS = {"Search", "GetClip", "List", "Export", "Scores", "ListCameras", "GetTrainingStatus", "ListModels"}
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def test_every_unary_rpc_of_the_api_is_checked(channel: grpc.Channel) -> None:
    """An RPC added to api.proto must be listed here, in READS or not (Watch, a stream, is checked apart)."""
    assert set(calls(channel)) == {method.name for service in api_pb2.DESCRIPTOR.services_by_name.values()
                                   for method in service.methods if not method.server_streaming}


def test_without_a_valid_token_every_call_is_unauthenticated(channel: grpc.Channel) -> None:
    for name, (call, request) in calls(channel).items():
        for token in (None, "wrong", "", READ + "x"):
            assert status(call, request, token) == grpc.StatusCode.UNAUTHENTICATED, (name, token)
    basic = [("authorization", f"Basic {CONTROL}")]
    with pytest.raises(grpc.RpcError) as error:
        api_pb2_grpc.ControlStub(channel).ListCameras(api_pb2.ListCamerasRequest(), metadata=basic, timeout=10)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as error:  # a stream too
        next(api_pb2_grpc.AnomaliesStub(channel).Watch(api_pb2.WatchAnomaliesRequest(), timeout=10))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", [READ, FILE_READ])
def test_a_read_token_reads_and_changes_nothing(channel: grpc.Channel, token: str) -> None:
    for name, (call, request) in calls(channel).items():
        code = status(call, request, token)
        if name in READS:
            assert code not in DENIED, name  # past the check (Search: NOT_FOUND, nothing indexed)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, name


@pytest.mark.parametrize("token", [CONTROL, FILE_CONTROL])
def test_a_control_token_may_do_everything(channel: grpc.Channel, token: str) -> None:
    for name, (call, request) in calls(channel).items():
        assert status(call, request, token) not in DENIED, name
    metadata = [("authorization", f"Bearer {token}")]
    cameras = api_pb2_grpc.ControlStub(channel).ListCameras(api_pb2.ListCamerasRequest(), metadata=metadata)
    assert [c.camera_id for c in cameras.cameras] == []  # added, then removed, by the calls above


def test_health_checks_need_no_token(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "avsurv.v1.Control"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_the_api_is_served_over_tls_only(secured: tuple[Runtime, bytes, str]) -> None:
    runtime, _, _ = secured
    plain = grpc.insecure_channel(f"127.0.0.1:{runtime.port}")
    other_cert = self_signed(runtime.settings.data_dir / "other")[0].read_bytes()  # not the server's
    forged = grpc.secure_channel(f"127.0.0.1:{runtime.port}", grpc.ssl_channel_credentials(other_cert))
    for channel in (plain, forged):
        with channel, pytest.raises(grpc.RpcError) as error:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tokens_are_never_printed(secured: tuple[Runtime, bytes, str]) -> None:
    runtime, _, log = secured
    assert "configuration" in log and "TLS, tokens" in log
    printed = str(runtime.settings.printable()) + repr(runtime.settings) + log
    for token in (READ, CONTROL, FILE_READ, FILE_CONTROL):
        assert token not in printed


def test_a_bad_tokens_file_is_refused_without_quoting_it(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("read good-token\nwrite s3cret-token\n")
    with pytest.raises(ConfigError, match=r"tokens:2: a line is") as error:
        configured_tokens(load_settings(environ={}, api_tokens_file=str(tokens_file)))
    assert "s3cret" not in str(error.value)
    with pytest.raises(ConfigError, match="cannot read"):
        configured_tokens(load_settings(environ={}, api_tokens_file=str(tmp_path / "missing")))
    assert configured_tokens(load_settings(environ={})) == {}  # no token: the API is open


def test_one_process_listens_on_loopback_unless_told_otherwise(secured: tuple[Runtime, bytes, str]) -> None:
    runtime, _, log = secured
    assert runtime.host == "127.0.0.1" and f"on 127.0.0.1 port {runtime.port}" in log
    assert bind_address(load_settings(environ={}), embedded=True) == "127.0.0.1"
    assert bind_address(load_settings(environ={}), embedded=False) == "[::]"  # avsurv serve: a container
    assert bind_address(load_settings(environ={"AVSURV_GRPC_HOST": "0.0.0.0"}), embedded=True) == "0.0.0.0"
    with pytest.raises(ConfigError, match="go together"):
        load_settings(environ={}, grpc_tls_cert="server.crt")


def test_the_operator_channel_speaks_tls_and_the_control_token(secured: tuple[Runtime, bytes, str]) -> None:
    """What the demo calls through: the API serves TLS only and every call needs a token."""
    runtime, _, _ = secured
    with operator_channel(runtime.settings, runtime.port) as channel:
        for name, (call, request) in calls(channel).items():
            try:
                call(request, timeout=10)
            except grpc.RpcError as error:
                assert error.code() not in DENIED | {grpc.StatusCode.UNAVAILABLE}, name

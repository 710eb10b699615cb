"""The dashboard's gateway without a browser (issue 14 item 4, issue 16 items 2 and 4): DNS rebinding and
cross-site POSTs refused, liveness and readiness for the probes of its Deployment, a clip's pictures served as
JPEG through ``EventSearch.GetClip``, against a stand-in API (a real gRPC server with the standard health
service, a Control servicer that counts the calls that reach it and an EventSearch one that knows one clip)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from realparts import free_port

from avsurv.platform.config import load_settings
from avsurv.platform.runtime import start_dashboard
from avsurv.services.dashboard import Dashboard, allowed_host, serve
from avsurv.v1 import api_pb2, api_pb2_grpc

CONFIGURED = ("dash.example.org", ".example.net")


@dataclass
class _Control(api_pb2_grpc.ControlServicer):
    trainings: list[int] = field(default_factory=list)

    def ListModels(self, request: api_pb2.ListModelsRequest, context: Any) -> api_pb2.ListModelsResponse:
        return api_pb2.ListModelsResponse(models=[api_pb2.ModelVersion(model_version="v1", active=True)])

    def TriggerTraining(self, request: api_pb2.TriggerTrainingRequest, context: Any) -> api_pb2.TrainingStatus:
        self.trainings.append(request.epochs)
        return api_pb2.TrainingStatus()


FRAMES = [b"\xff\xd8frame-%d" % i for i in range(5)]
STORED_CLIP = "cam0:1000"


@dataclass
class _EventSearch(api_pb2_grpc.EventSearchServicer):
    tokens: list[str] = field(default_factory=list)

    def GetClip(self, request: api_pb2.GetClipRequest, context: Any) -> api_pb2.ClipMedia:
        self.tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        if request.clip_id != STORED_CLIP:
            context.abort(grpc.StatusCode.NOT_FOUND, f"clip {request.clip_id} is not in the clip store")
        return api_pb2.ClipMedia(clip_id=STORED_CLIP, frames_jpeg=FRAMES, thumbnail_jpeg=FRAMES[2])


@dataclass
class Api:
    server: grpc.Server
    health: health.HealthServicer
    control: _Control
    search: _EventSearch


@dataclass
class Setup:
    api: Api
    dashboard: Dashboard

    @property
    def port(self) -> int:
        return self.dashboard.server.server_address[1]

    def request(self, method: str, path: str, host: str = "", headers: dict[str, str] | None = None,
                body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        return _request(self.port, method, path, host, headers, body)


def _request(port: int, method: str, path: str, host: str = "", headers: dict[str, str] | None = None,
             body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One request with the given ``Host`` (default: 127.0.0.1:PORT), as a browser or curl would send it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = {"Host": host or f"127.0.0.1:{port}", **(headers or {})}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        sent["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.fixture
def setup() -> Iterator[Setup]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_servicer, control = health.HealthServicer(), _Control()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    api_pb2_grpc.add_ControlServicer_to_server(control, server)
    search = _EventSearch()
    api_pb2_grpc.add_EventSearchServicer_to_server(search, server)
    api_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    dashboard = serve(f"127.0.0.1:{api_port}", "127.0.0.1", 0, hosts=CONFIGURED)
    try:
        yield Setup(Api(server, health_servicer, control, search), dashboard)
    finally:
        dashboard.stop()
        server.stop(None)


@pytest.mark.parametrize(("host", "served"), [
    ("localhost:8080", True), ("LOCALHOST.", True), ("127.0.0.1", True), ("[::1]:8080", True), ("10.1.2.3:8080", True),
    ("[fd00::5]:80", True), ("dash.example.org", True), ("example.net:8080", True), ("a.b.example.net", True),
    ("evil.example", False), ("xexample.net", False), ("ash.example.org", False), ("localhost.evil.example", False),
    ("", False)])
def test_served_hosts_are_ip_addresses_loopback_names_and_the_configured_ones(host: str, served: bool) -> None:
    assert allowed_host(host, {"dash.example.org", ".example.net"}) is served


def test_a_rebound_name_is_refused_and_served_names_reach_the_api(setup: Setup) -> None:
    status, body = setup.request("GET", "/api/models", host=f"attacker.example:{setup.port}")
    assert status == 421 and "dashboard_hosts" in body["error"]
    status, _ = setup.request("POST", "/api/training", host="attacker.example", body={"epochs": 1})
    assert status == 421 and setup.api.control.trainings == []
    for host in (f"localhost:{setup.port}", f"127.0.0.1:{setup.port}", "dash.example.org", "cams.example.net"):
        status, body = setup.request("GET", "/api/models", host=host)
        assert (status, body["models"][0]["model_version"]) == (200, "v1"), host
    assert setup.request("GET", "/", host="attacker.example")[0] == 421  # the page too: its script would follow


@pytest.mark.parametrize("headers", [
    {"Origin": "http://attacker.example"}, {"Origin": "http://localhost:3000"}, {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}])
def test_a_cross_site_post_is_refused_before_the_api(setup: Setup, headers: dict[str, str]) -> None:
    status, body = setup.request("POST", "/api/training", host=f"localhost:{setup.port}", headers=headers,
                                 body={"epochs": 1})
    assert status == 403 and "cross-site" in body["error"]
    assert setup.api.control.trainings == []


def test_the_page_s_own_posts_and_scripts_without_origin_reach_the_api(setup: Setup) -> None:
    host = f"localhost:{setup.port}"
    page = {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    assert setup.request("POST", "/api/training", host=host, headers=page, body={"epochs": 2})[0] == 200
    assert setup.request("POST", "/api/training", host=host, body={"epochs": 3})[0] == 200  # curl, a script
    assert setup.api.control.trainings == [2, 3]


def test_liveness_is_the_process_and_readiness_the_api_s_health(setup: Setup) -> None:
    assert setup.request("GET", "/healthz") == (200, {"status": "serving"})
    assert setup.request("GET", "/readyz") == (200, {"api_serving": True})
    setup.api.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert setup.request("GET", "/readyz") == (503, {"api_serving": False})
    setup.api.server.stop(None)  # the API gone: unready, not dead (the kubelet must not restart the gateway)
    assert setup.request("GET", "/readyz") == (503, {"api_serving": False})
    assert setup.request("GET", "/healthz")[0] == 200


def _get_raw(port: int, path: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": "Bearer read-token"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def test_a_clip_s_pictures_are_served_as_jpeg_through_get_clip(setup: Setup) -> None:
    assert _get_raw(setup.port, f"/api/clip.jpg?clip_id={STORED_CLIP}") == (200, "image/jpeg", FRAMES[2])
    for index, frame in enumerate(FRAMES):
        assert _get_raw(setup.port, f"/api/clip.jpg?clip_id={STORED_CLIP}&frame={index}") == (200, "image/jpeg", frame)
    assert setup.api.search.tokens == ["Bearer read-token"] * 6  # the user's own token reaches the API
    for path, status in (("/api/clip.jpg?clip_id=cam0:2000", 404), ("/api/clip.jpg", 400),
                         (f"/api/clip.jpg?clip_id={STORED_CLIP}&frame=5", 400),
                         (f"/api/clip.jpg?clip_id={STORED_CLIP}&frame=-1", 400),
                         (f"/api/clip.jpg?clip_id={STORED_CLIP}&frame=x", 400)):
        code, kind, body = _get_raw(setup.port, path)
        assert (code, kind) == (status, "application/json"), path
        assert json.loads(body)["error"], path


def test_dashboard_hosts_is_a_comma_separated_setting_that_reaches_the_embedded_gateway() -> None:
    settings = load_settings(environ={"AVSURV_DASHBOARD_HOSTS": "dash.example.org, .example.net"})
    assert settings.dashboard_hosts == ["dash.example.org", ".example.net"]
    assert load_settings(environ={}).dashboard_hosts == []
    port = free_port()
    dashboard = start_dashboard(settings.model_copy(update={"dashboard_port": port}), "127.0.0.1", 1)
    assert dashboard is not None
    try:  # no API behind it: liveness only
        assert _request(port, "GET", "/healthz", host="cams.example.net")[0] == 200
        assert _request(port, "GET", "/healthz", host="attacker.example")[0] == 421
    finally:
        dashboard.stop()

"""An event's evidence on the dashboard (issue 16 items 3 and 4): the gateway serves ``Anomalies.Export`` at
``/api/events/<event_id>/evidence.mp4``, with the user's token, from a real platform with API tokens: an
mp4 that PyAV decodes into the event's pictures and sound, named for saving; the API's refusals and the
gateway's own (token, host, cross-site) as HTTP statuses."""

from __future__ import annotations

import http.client
import io
import json
from collections.abc import Iterator
from email.message import Message

import av
import pytest
from platformkit import small_scene, wait_for
from realparts import free_port
from test_export import _event

from avsurv.constants import FRAMES_PER_CLIP, SAMPLE_RATE
from avsurv.platform.config import load_settings
from avsurv.platform.messages import clip_from_message
from avsurv.platform.runtime import Runtime

READ = "read-token-for-the-evidence-test"
SCENE_S = 8


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, float]]:
    """The platform with its dashboard, once the scene's clips are stored, and the first clip's capture time."""
    root = tmp_path_factory.mktemp("evidence")
    scene = small_scene(root / "scene", duration_s=SCENE_S, cameras=1)
    settings = load_settings(environ={}, data_dir=root / "data", grpc_port=0, dashboard_port=free_port(),
                             api_read_token=READ, cameras={"cam0": str(scene / "cam0.mp4")})
    runtime = Runtime(["ingest", "segmentation", "search"], settings, embedded=True)
    runtime.start()
    try:
        archive = runtime.ports.archive
        wait_for(lambda: len(archive.clip_ids("cam0")) >= SCENE_S - 1, 60, "the scene's clips in the clip store")
        first = clip_from_message(archive.get(archive.clip_ids("cam0")[0])).capture_time
        assert first is not None
        yield runtime, first
    finally:
        runtime.stop()


def _get(runtime: Runtime, path: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """A GET as the page sends it (the read token, this host), ``headers`` replacing or adding to those."""
    assert runtime.dashboard is not None
    port = runtime.dashboard.server.server_address[1]
    sent = {"Host": f"127.0.0.1:{port}", "Authorization": f"Bearer {READ}", **(headers or {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers={k: v for k, v in sent.items() if v})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def test_an_event_s_evidence_is_an_mp4_with_its_pictures_and_sound(platform: tuple[Runtime, float]) -> None:
    runtime, first = platform
    event = _event(runtime, "cam0", first + 3, first + 4)
    status, headers, body = _get(runtime, f"/api/events/{event}/evidence.mp4?margin_s=1")
    assert status == 200, body[:200]
    assert headers["Content-Type"] == "video/mp4"
    assert headers["Content-Disposition"] == f'attachment; filename="evidence-cam0-{event}.mp4"'
    with av.open(io.BytesIO(body)) as container:
        assert container.streams.audio[0].sample_rate == SAMPLE_RATE
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(io.BytesIO(body)) as container:
        sound = sum(f.samples for f in container.decode(audio=0))
    assert frames == 3 * FRAMES_PER_CLIP  # seconds 2 to 4: the event's and one either side
    assert sound >= 3 * SAMPLE_RATE
    # The API's default margin (2 s) when the page gives none.
    assert _get(runtime, f"/api/events/{event}/evidence.mp4")[0] == 200


@pytest.mark.parametrize(("path", "headers", "status"), [
    ("/api/events/{event}/evidence.mp4", {"Authorization": ""}, 401),  # no token: the API refuses
    ("/api/events/{event}/evidence.mp4", {"Authorization": "Bearer wrong"}, 401),
    (f"/api/events/{'0' * 32}/evidence.mp4", {}, 404),  # no such event
    ("/api/events/{event}/evidence.mp4?margin_s=many", {}, 400),  # refused by the gateway
    ("/api/events/{event}/evidence.mp4?margin_s=61", {}, 400),  # refused by the API
    ("/api/events/{long}/evidence.mp4", {}, 409),  # longer than an export holds
    ("/api/events/{event}/evidence.mp4", {"Host": "attacker.example"}, 421),  # DNS rebinding
    ("/api/events/{event}/evidence.mp4", {"Sec-Fetch-Site": "cross-site"}, 403),  # another site's <video src>
    ("/api/events/{event}/evidence.mp4", {"Origin": "http://attacker.example"}, 403),
    ("/api/events/{event}/other.mp4", {}, 404),
])
def test_refused_evidence_requests_are_http_errors(platform: tuple[Runtime, float], path: str,
                                                   headers: dict[str, str], status: int) -> None:
    runtime, first = platform
    event, long = _event(runtime, "cam0", first + 3, first + 4), _event(runtime, "cam0", first, first + 900)
    code, answer_headers, body = _get(runtime, path.format(event=event, long=long), headers)
    assert (code, answer_headers["Content-Type"]) == (status, "application/json")
    assert json.loads(body)["error"]

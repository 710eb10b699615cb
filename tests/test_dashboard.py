"""The web dashboard (issue 16 items 3 to 5) in a real browser: Debian's headless Chromium driven by
Playwright, against the embedded platform on a generated scene read at its own pace, as live cameras. The
platform runs with API tokens, so the page must be given one: a read token sees, only a control token
changes things. Screenshots go to a temporary folder, or to docs/screenshots/ (shown in the README) with
AVSURV_UPDATE_SCREENSHOTS=1, so a test run leaves the checkout as it was.

Chromium is installed by the README's test command and .ci/run (``apt-get install chromium``); this test
installs nothing and fails, rather than skips, without it."""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from platformkit import small_scene, untrained_model, wait_for
from playwright.sync_api import Browser, Page, expect, sync_playwright
from realparts import free_port

from avsurv.platform.config import load_settings
from avsurv.platform.model_versions import publish_model
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.v1 import api_pb2, api_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("AVSURV_UPDATE_SCREENSHOTS") == "1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
READ, CONTROL = "read-token-for-the-dashboard-test", "control-token-for-the-dashboard-test"
SCENE_S = 12
SCENE_CLIPS = SCENE_S - 1
"""Clips the live ingest cuts from each camera's scene file at least (its last second makes one only in
some runs)."""
SCENE_SEED = 6
"""A scene whose first seconds are quiet on cam0: with the untrained model below and the threshold of the
fixture, each camera has an event that starts after normal clips (offline, 0.6 std or more from the threshold
on both sides of its start, whether 11 or 12 clips are calibrated on)."""
LIVE_S = 60
"""Longest wait for the first live event: the scene is read at its own pace and scored as it comes."""


@dataclass
class Platform:
    runtime: Runtime
    model: Path

    def publish_model(self) -> None:
        """Publishes the first model version once each camera has stored the whole scene (as a trainer would
        publish one): the embedder calibrates each camera on all of its clips, so the threshold, and with it
        which clips the detector flags, moves little from run to run. The clips wait in the bus, unscored, until
        then; the detector scores them as the embedder takes them."""
        archive = self.runtime.ports.archive
        wait_for(lambda: all(len(archive.clip_ids(c)) >= SCENE_CLIPS for c in ("cam0", "cam1")), SCENE_S * 4,
                 "the scene's clips to calibrate on")
        ports = self.runtime.ports
        publish_model(self.model, ports.registry, ports.artifacts, ports.bus)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("dashboard")
    scene = small_scene(root / "scene", duration_s=SCENE_S, seed=SCENE_SEED)
    model = untrained_model(root / "model", seed=1)
    # Eq. 5 at 0.01 std above the mean score of the camera's clips: about half of an untrained model's clips
    # cross it, in events with normal clips before them (an event at a camera's first scored second has none).
    settings = load_settings(environ={}, data_dir=root / "data", grpc_port=0, dashboard_port=free_port(),
                             realtime_files=True, batch_size=4, batch_wait_s=0.2, anomaly_detector="eq5",
                             anomaly_stds=0.01, anomaly_run_idle_s=1,
                             api_read_token=READ, api_control_token=CONTROL,
                             cameras={"cam0": str(scene / "cam0.mp4"), "cam1": str(scene / "cam1.mp4")})
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    try:
        yield Platform(runtime, model)
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it as the README's test command does (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _shot(page: Page, name: str) -> None:
    folder = SCREENSHOTS if UPDATE_SCREENSHOTS else Path(tempfile.gettempdir()) / "avsurv-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _log_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login button")
    page.wait_for_load_state()


def test_the_dashboard_follows_a_live_scene_opens_events_and_finds_similar_clips(platform: Platform,
                                                                                   browser: Browser) -> None:
    dashboard = platform.runtime.dashboard
    assert dashboard is not None
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(dashboard.url)
    expect(page.locator("#notice")).to_contain_text("needs a token")  # the API refused the tokenless page
    _log_in(page, READ)
    expect(page.locator("#feed-state")).to_have_text("feed: live")
    expect(page.locator("#feed tbody tr")).to_have_count(0)
    platform.publish_model()
    # Events published while the page is open reach it through Watch, each row marked with its lifecycle
    # message (new, update, end); once the scene is scored every event has ended.
    expect(page.locator("#feed tbody tr:has(.badge)").first).to_be_visible(timeout=LIVE_S * 1000)
    wait_for(platform.runtime.drained, 60, "the whole scene scored and indexed, so that it can be searched")
    live = page.locator("#feed tbody tr:has(.badge.end)")
    expect(live.first).to_be_visible()
    page.wait_for_selector("svg.timeline circle.peak")
    # The per-camera timeline (issue 16 item 4): each camera's score line has a vertex per clip of the series
    # the API gives (Anomalies.Scores, the last 600 clips), and the threshold line is drawn under it.
    with grpc.insecure_channel(f"127.0.0.1:{platform.runtime.port}") as channel:
        anomalies, token = api_pb2_grpc.AnomaliesStub(channel), [("authorization", f"Bearer {READ}")]
        series = {camera: anomalies.Scores(api_pb2.ScoresRequest(camera_id=camera, limit=600), timeout=10,
                                           metadata=token).points for camera in ("cam0", "cam1")}
        events = anomalies.List(api_pb2.ListAnomaliesRequest(), timeout=10, metadata=token).events
    for camera, points in series.items():
        assert len(points) >= SCENE_CLIPS, (camera, len(points))  # every clip of the scene, scored once
        chart = page.locator(f"svg.timeline[data-camera={camera}]")
        expect(chart.locator("path.scores")).to_have_attribute("data-points", str(len(points)))  # redrawn every 2 s
        assert chart.locator("path.scores").get_attribute("d").count("L") == len(points) - 1
        assert chart.locator("path.threshold").get_attribute("d").count("L") == 2 * len(points) - 1
        expect(chart.locator("circle.anomalous")).to_have_count(sum(p.anomalous for p in points))
    _shot(page, "live")

    # An event with normal clips: one that starts before any normal clip of its camera is scored has none.
    event_id = next((e.event_id for e in events if e.normal_clip_ids), None)
    assert event_id is not None, [(e.event_id, e.start_time) for e in events]
    row = page.locator(f"#feed tbody tr[data-event='{event_id}']")
    camera = row.locator("td").nth(1).inner_text()
    row.locator("a").click()
    expect(page.locator("#event")).to_contain_text(event_id)
    expect(page.locator("#evidence-uri")).to_have_text(f"avsurv://default/events/{event_id}/evidence.mp4")
    frames = page.locator(".frames img")  # the peak clip's, through EventSearch.GetClip
    expect(frames).to_have_count(5)
    for index in range(5):
        expect(frames.nth(index)).to_have_attribute("src", re.compile("^blob:"))
    # Why (issue 16 item 2): the event's own thumbnail, its explanation (Eq. 5 here) and the camera's
    # nearest normal clips, their pictures through GetClip.
    expect(page.locator("#event-thumbnail")).to_have_attribute("src", re.compile("^data:image/jpeg;base64,."))
    expect(page.locator("#deviation")).to_have_attribute("data-deviation", "DISAGREE")
    expect(page.locator("#normal-clips img.thumb[src^='blob:']").first).to_be_visible()
    # The event's seconds with their sound (issue 16 items 3 and 4): Anomalies.Export through the gateway,
    # fetched with the token and played from a blob URL. Debian's chromium decodes H.264 and AAC.
    video = page.locator("video#evidence")
    expect(video).to_have_attribute("data-source", f"/api/events/{event_id}/evidence.mp4?margin_s=2")
    expect(video).to_have_attribute("src", re.compile("^blob:"))
    expect(page.locator("#evidence-download")).to_have_attribute("download", f"evidence-{camera}-{event_id}.mp4")
    page.wait_for_function("document.querySelector('#evidence').readyState >= 1")  # its metadata loaded
    assert video.evaluate("v => [v.videoWidth, v.videoHeight, v.duration > 0]") == [398, 224, True]
    played = "v => { v.muted = true; return v.play().then(() => new Promise((done) => setTimeout(done, 1500))); }"
    video.evaluate(played)
    assert video.evaluate("v => v.webkitAudioDecodedByteCount") > 0  # it has sound, and chromium decodes it
    _shot(page, "event")

    page.click("a.find[data-mode=av]")
    results = page.locator("#search .result")
    expect(results.first).to_be_visible()
    thumbnails = page.locator("#search .result .thumb")
    assert thumbnails.count() == results.count() >= 1
    expect(page.locator("#search .result img.thumb[src^='blob:']")).to_have_count(results.count())
    _shot(page, "search")
    page.click("text=sound only")
    expect(page.locator("#search h2")).to_contain_text("sound only")

    page.goto(dashboard.url + "#/system")
    expect(page.locator("#cameras")).to_contain_text("cam1")
    expect(page.locator("#models tbody tr")).to_have_count(1)
    page.click("#train")  # a read token sees, but cannot train
    expect(page.locator("#notice")).to_contain_text("needs a control token")
    _log_in(page, CONTROL)
    page.click("#train")
    expect(page.locator("#notice")).to_be_hidden()  # the API took the control call
    registry = platform.runtime.ports.registry
    wait_for(lambda: registry.state.get("avsurv:default:trainer:requested") is not None
             or registry.trainer_status().get("state", "idle") != "idle", 10, "the training request")
    _shot(page, "system")
    page.close()


def test_the_gateway_refuses_posts_that_are_not_json(platform: Platform) -> None:
    """A cross-site form cannot send JSON without a CORS preflight, which the gateway never grants."""
    dashboard = platform.runtime.dashboard
    assert dashboard is not None
    request = urllib.request.Request(dashboard.url + "api/training", data=b"epochs=1", method="POST",
                                     headers={"Authorization": f"Bearer {CONTROL}",
                                              "Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 415
    request = urllib.request.Request(dashboard.url + "api/training", data=b'{"epochs": "many"}', method="POST",
                                     headers={"Authorization": f"Bearer {CONTROL}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    request = urllib.request.Request(dashboard.url + "api/models",
                                     headers={"Authorization": f"Bearer {READ}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert [m["active"] for m in json.load(response)["models"]] == [True]

"""Writing a scene: one H.264 + AAC .mp4 per camera and the ground-truth JSON.

Encoding is single-threaded (libx264 threads=1) so the same seed and options give bit-identical
files; cameras are rendered in parallel processes instead when jobs > 1.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from .config import ANOMALY_CLASSES, AUDIO_RATE, CLASSES, SOUND_ONLY_CLASSES, SceneConfig
from .render import FrameRenderer
from .scene import LIGHT_LEVELS, CameraRig, Event, light_level, make_cameras, rain_per_second, schedule_events
from .sound import event_source, mix_camera
from .truth import camera_seconds

AAC_FRAME = 1024
GROUND_TRUTH = "ground_truth.json"
Progress = Callable[[int], None]


def open_output(path: Path, config: SceneConfig) -> tuple[Any, Any, Any]:
    container = av.open(str(path), "w", format="mp4")
    stamp = datetime.fromtimestamp(config.capture_start, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    container.metadata["creation_time"] = stamp
    video = container.add_stream("libx264", rate=config.fps)
    video.width, video.height, video.pix_fmt = config.width, config.height, "yuv420p"
    video.options = {"preset": "ultrafast", "crf": "23", "threads": "1"}
    video.codec_context.thread_count = 1
    audio = container.add_stream("aac", rate=AUDIO_RATE)
    audio.layout = "stereo"
    audio.format = "fltp"
    return container, video, audio


def encode_audio(container: Any, stream: Any, stereo: np.ndarray, start: int, stop: int) -> None:
    """Encode samples [start, stop) as 1024-sample frames (start is a multiple of 1024)."""
    for i in range(start, stop, AAC_FRAME):
        chunk = stereo[:, i : i + AAC_FRAME]
        if chunk.shape[1] < AAC_FRAME:  # pad the last frame: audio may end < 1024 samples late
            chunk = np.pad(chunk, ((0, 0), (0, AAC_FRAME - chunk.shape[1])))
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = AUDIO_RATE, i
        container.mux(stream.encode(frame))


def _write_media(path: Path, config: SceneConfig, renderer: FrameRenderer, stereo: np.ndarray,
                 progress: Progress | None) -> None:
    container, video, audio = open_output(path, config)
    seconds = np.arange(config.seconds)
    levels = np.round(light_level(config, seconds + 0.5) * (LIGHT_LEVELS - 1)).astype(int)
    rain = rain_per_second(config)
    audio_done = 0
    for s in seconds:
        for k in range(config.fps):
            index = s * config.fps + k
            img = renderer.frame(index, index / config.fps, levels[s], float(rain[s]))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        # Interleave audio up to the end of this second (rounded up to whole AAC frames).
        target = min(stereo.shape[1], -(-(s + 1) * AUDIO_RATE // AAC_FRAME) * AAC_FRAME)
        encode_audio(container, audio, stereo, audio_done, target)
        audio_done = target
        if progress:
            progress(1)
    container.mux(video.encode(None))
    container.mux(audio.encode(None))
    container.close()


def render_camera(config: SceneConfig, index: int, out_dir: Path, progress: Progress | None = None,
                  events: list[Event] | None = None,
                  sources: dict[int, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Render camera `index` to out_dir/<camera_id>.mp4 and return its per-second ground truth."""
    events = schedule_events(config) if events is None else events
    sources = {e.event_id: event_source(e) for e in events} if sources is None else sources
    rig: CameraRig = make_cameras(config)[index]
    audio = mix_camera(config, index, rig, events, sources)
    renderer = FrameRenderer(rig, config, events)
    _write_media(out_dir / f"{rig.camera_id}.mp4", config, renderer, audio.stereo, progress)
    return camera_seconds(config, rig, events, audio)


def _render_parallel(config: SceneConfig, out_dir: Path, bar: tqdm | None) -> list[list[dict[str, Any]]]:
    """One process per camera (spawned: no forked threads); progress counted per finished camera."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(config.jobs, config.cameras), mp_context=context) as pool:
        futures = [pool.submit(render_camera, config, i, out_dir) for i in range(config.cameras)]
        results = []
        for future in futures:
            results.append(future.result())
            if bar is not None:
                bar.update(config.seconds)
    return results


def generate_scene(config: SceneConfig, out_dir: Path, progress: bool = True) -> Path:
    """Render every camera of the scene into out_dir and write out_dir/ground_truth.json (returned)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    events = schedule_events(config)
    rigs = make_cameras(config)
    bar = tqdm(total=config.seconds * config.cameras, unit="s", desc="synth", disable=not progress)
    with bar:
        if config.jobs > 1 and config.cameras > 1:
            per_camera = _render_parallel(config, out_dir, bar)
        else:
            sources = {e.event_id: event_source(e) for e in events}
            per_camera = [render_camera(config, i, out_dir, bar.update, events, sources)
                          for i in range(config.cameras)]
    truth = _ground_truth(config, rigs, events, per_camera)
    path = out_dir / GROUND_TRUTH
    path.write_text(json.dumps(truth, indent=1) + "\n")
    return path


def _ground_truth(config: SceneConfig, rigs: list[CameraRig], events: list[Event],
                  per_camera: list[list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "format": "avsurv-scene-v1",
        "seed": config.seed,
        "capture_start": config.capture_start,
        "duration_s": float(config.seconds),
        "fps": config.fps,
        "width": config.width,
        "height": config.height,
        "audio_rate": AUDIO_RATE,
        "lighting": config.lighting,
        "weather": config.weather,
        "classes": list(CLASSES),
        "anomaly_classes": list(ANOMALY_CLASSES),
        "sound_only_classes": list(SOUND_ONLY_CLASSES),
        "cameras": [
            {"camera_id": r.camera_id, "file": f"{r.camera_id}.mp4", "viewpoint": r.viewpoint,
             "description": r.description}
            for r in rigs
        ],
        "events": [e.to_json() for e in events],
        "seconds": {r.camera_id: seconds for r, seconds in zip(rigs, per_camera, strict=True)},
    }

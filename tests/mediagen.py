"""Writes small real media files with known content for decoder and segmentation tests.

Frame ``i`` of a video is a flat grey of level ``level(i)`` so a test can tell which frame was sampled;
"flash" instants make frames white. Audio is a quiet 440 Hz tone with loud noise bursts ("clicks") at
given presentation times, so alignment can be checked against the frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def level(index: int) -> int:
    """Grey level of frame ``index``: distinct for 25 consecutive frames, far from black and white."""
    return 20 + 8 * (index % 25)


@dataclass
class Spec:
    vcodec: str = "libx264"
    acodec: str | None = "aac"
    fps: Fraction = Fraction(25)
    duration: float = 3.0
    width: int = 160
    height: int = 96
    audio_rate: int = 48_000
    layout: str = "stereo"
    audio_offset: float = 0.0
    """Presentation time of the first audio sample."""
    video_offset: float = 0.0
    silent: bool = False
    flashes: tuple[float, ...] = ()
    clicks: tuple[float, ...] = ()
    video_gaps: tuple[tuple[float, float], ...] = ()
    audio_gaps: tuple[tuple[float, float], ...] = ()
    vfr: bool = False
    """Alternate frame durations of 0.6 and 1.4 frame periods (variable frame rate)."""
    options: dict[str, str] = field(default_factory=dict)
    """Video encoder options."""
    container_options: dict[str, str] = field(default_factory=dict)


PIXEL_FORMAT = {"mjpeg": "yuvj420p"}
SAMPLE_FORMAT = {"pcm_s16le": "s16", "libmp3lame": "s16p", "libopus": "flt"}


def frame_times(spec: Spec) -> list[float]:
    period = 1.0 / float(spec.fps)
    times, t, index = [], spec.video_offset, 0
    while t < spec.video_offset + spec.duration - 1e-9:
        if not any(a <= t < b for a, b in spec.video_gaps):
            times.append(t)
        t += period * ((0.6 if index % 2 == 0 else 1.4) if spec.vfr else 1.0)
        index += 1
    return times


def audio_signal(spec: Spec) -> np.ndarray:
    """Mono samples from ``audio_offset`` to the end; the tone keeps phase with presentation time."""
    n = round(spec.duration * spec.audio_rate)
    t = spec.audio_offset + np.arange(n) / spec.audio_rate
    signal = np.zeros(n) if spec.silent else 0.05 * np.sin(2 * np.pi * 440.0 * t)
    rng = np.random.default_rng(0)
    for click in spec.clicks:
        burst = (t >= click) & (t < click + 0.05)
        signal[burst] = 0.8 * rng.uniform(-1, 1, burst.sum())
    return signal.astype(np.float32)


def _video(container: av.container.OutputContainer, spec: Spec) -> None:
    stream = container.add_stream(spec.vcodec, rate=spec.fps if not spec.vfr else None, options=spec.options)
    stream.width, stream.height = spec.width, spec.height
    stream.pix_fmt = PIXEL_FORMAT.get(spec.vcodec, "yuv420p")
    stream.codec_context.time_base = Fraction(1, 1000) if spec.vfr else 1 / spec.fps
    if spec.vfr:
        stream.time_base = Fraction(1, 1000)
    spec._video_stream = stream  # type: ignore[attr-defined]


def _encode_video(container: av.container.OutputContainer, spec: Spec) -> None:
    stream = spec._video_stream  # type: ignore[attr-defined]
    for index, t in enumerate(frame_times(spec)):
        grey = 255 if any(f <= t < f + 0.2 for f in spec.flashes) else level(index)
        image = np.full((spec.height, spec.width, 3), grey, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = round(t / stream.codec_context.time_base)
        frame.time_base = stream.codec_context.time_base
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _encode_audio(container: av.container.OutputContainer, spec: Spec) -> None:
    stream = container.add_stream(spec.acodec, rate=spec.audio_rate)
    stream.layout = spec.layout
    stream.format = SAMPLE_FORMAT.get(spec.acodec, "fltp")
    stream.time_base = Fraction(1, spec.audio_rate)
    channels = 2 if spec.layout == "stereo" else 1
    signal = audio_signal(spec)
    step = stream.codec_context.frame_size or 1024
    for start in range(0, len(signal) - step + 1, step):
        t = spec.audio_offset + start / spec.audio_rate
        if any(a <= t < b for a, b in spec.audio_gaps):
            continue
        chunk = np.repeat(signal[None, start : start + step], channels, axis=0)
        planar = stream.format.is_planar
        data = chunk if planar else chunk.T.reshape(1, -1)
        if stream.format.name.startswith("s16"):
            data = (data * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=stream.format.name, layout=spec.layout)
        frame.sample_rate = spec.audio_rate
        frame.pts = round(t * spec.audio_rate)
        frame.time_base = Fraction(1, spec.audio_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write(path: Path, spec: Spec) -> Path:
    """Writes ``spec`` to ``path``; the container follows the file suffix."""
    with av.open(str(path), "w", options=spec.container_options) as container:
        _video(container, spec)
        if spec.acodec:
            _encode_audio(container, spec)
        _encode_video(container, spec)
    return path

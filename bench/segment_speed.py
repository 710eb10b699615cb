"""Decode + segmentation speed on a 1080p30 H.264 + AAC file, in times real time on one core.

    python bench/segment_speed.py [--seconds 20] [--keep FILE]

Prints, for the same file in the same run:
- decode only: every packet decoded, nothing converted (the floor any segmenter pays);
- naive baseline: every frame converted to full-size RGB, the sampled ones resized with Pillow, then
  the same audio path: what a straightforward decoder loop does;
- avsurv: ``Segmenter`` (only sampled frames converted, resized by swscale), clips and log-mels made;
and the ratio avsurv / naive. Decoding uses one thread and numpy one core, so "x real time" is per core.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch load: per-core figures

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from avsurv.constants import FRAME_HEIGHT, FRAME_WIDTH, VIDEO_FPS
from avsurv.media import Segmenter

WIDTH, HEIGHT, FPS, RATE = 1920, 1080, 30, 48_000


def write_test_file(path: Path, seconds: float) -> None:
    """A textured street-like picture with moving boxes and noise, so the encoder has real work."""
    rng = np.random.default_rng(0)
    texture = np.kron(rng.integers(40, 200, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "23"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("aac", rate=RATE)
        audio.layout = "stereo"
        samples_per_frame = RATE // FPS
        for index in range(int(seconds * FPS)):
            picture = np.roll(texture, index * 4, axis=1)
            x = (index * 23) % (WIDTH - 300)
            picture[500:700, x : x + 300] = (230, 200, 30)
            noise = rng.integers(0, 12, (HEIGHT, WIDTH, 1), dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(picture + noise, format="rgb24")))
            t = (index * samples_per_frame + np.arange(samples_per_frame)) / RATE
            tone = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = RATE, index * samples_per_frame
            container.mux(audio.encode(frame))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def decode_only(path: Path) -> float:
    started = time.perf_counter()
    with av.open(str(path)) as container:
        container.streams.video[0].thread_count = 1
        for _ in container.decode(video=0, audio=0):
            pass
    return time.perf_counter() - started


def naive(path: Path) -> float:
    """Full-size RGB for every frame, Pillow resize of the sampled ones, audio resampled per frame."""
    started = time.perf_counter()
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=44_100)
    next_sample = 0.1
    with av.open(str(path)) as container:
        container.streams.video[0].thread_count = 1
        for frame in container.decode(video=0, audio=0):
            if isinstance(frame, av.VideoFrame):
                rgb = frame.to_ndarray(format="rgb24")
                if frame.time >= next_sample:
                    np.asarray(Image.fromarray(rgb).resize((FRAME_WIDTH, FRAME_HEIGHT), Image.BILINEAR))
                    next_sample += 1.0 / VIDEO_FPS
            else:
                for out in resampler.resample(frame):
                    out.to_ndarray()
    return time.perf_counter() - started


def ours(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    clips = sum(1 for _ in Segmenter(path, threads=1))
    return time.perf_counter() - started, clips


def measure(seconds: float, keep: Path | None = None) -> dict[str, float]:
    """Wall seconds and times real time of decoding alone, the naive baseline and avsurv on one test file.

    Torch runs on one thread meanwhile (the log-mel), as the figures are per core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            path = keep or Path(scratch) / "bench-1080p30.mp4"
            started = time.perf_counter()
            write_test_file(path, seconds)
            result = {"video_s": seconds, "file_mb": path.stat().st_size / 1e6,
                      "write_s": time.perf_counter() - started,
                      "decode_only_s": decode_only(path), "naive_s": naive(path)}
            result["avsurv_s"], result["clips"] = ours(path)
    finally:
        torch.set_num_threads(threads)
    for name in ("decode_only", "naive", "avsurv"):
        result[f"{name}_x_realtime"] = seconds / result[f"{name}_s"]
    result["speedup_over_naive"] = result["naive_s"] / result["avsurv_s"]
    result["overhead_over_decode"] = result["avsurv_s"] / result["decode_only_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the test file (default: 20)")
    parser.add_argument("--keep", type=Path, help="write the test file here and keep it")
    args = parser.parse_args()
    r = measure(args.seconds, args.keep)
    print(f"test file: {args.seconds:.0f} s of {WIDTH}x{HEIGHT} {FPS} fps H.264 + AAC 48 kHz stereo, "
          f"{r['file_mb']:.1f} MB, written in {r['write_s']:.1f} s")
    for label, name in (("decode only", "decode_only"), ("naive baseline", "naive"), ("avsurv segment", "avsurv")):
        print(f"{label:>15}: {r[f'{name}_s']:6.2f} s wall, {r[f'{name}_x_realtime']:5.2f} x real time on one core")
    print(f"avsurv made {r['clips']} clips; speed-up over the naive baseline: {r['speedup_over_naive']:.2f}x; "
          f"overhead over decoding alone: {r['overhead_over_decode']:.2f}x")


if __name__ == "__main__":
    main()

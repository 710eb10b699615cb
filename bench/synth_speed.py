"""Rendering speed of `avsurv synth` for one camera on one core, against plain encoding of the same length.

Usage: python bench/synth_speed.py [--duration 60] [--width 640 --height 360]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: set before numpy / torch are imported
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from avsurv.synth import SceneConfig, generate_scene
from avsurv.synth.config import AUDIO_RATE
from avsurv.synth.generate import encode_audio, open_output


def encode_only(config: SceneConfig, path: Path) -> float:
    """Wall seconds to encode the same number of frames of a constant image and silence."""
    start = time.perf_counter()
    container, video, audio = open_output(path, config)
    image = np.full((config.height, config.width, 3), 110, np.uint8)
    silence = np.zeros((2, config.seconds * AUDIO_RATE), np.float32)
    for index in range(config.frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        container.mux(video.encode(frame))
    encode_audio(container, audio, silence, 0, silence.shape[1])
    container.mux(video.encode(None))
    container.mux(audio.encode(None))
    container.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of video (default 60)")
    parser.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    parser.add_argument("--height", type=int, default=360, help="frame height (default 360)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    args = parser.parse_args()
    config = SceneConfig(seed=args.seed, duration_s=args.duration, cameras=1, width=args.width,
                         height=args.height, fps=25, jobs=1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_scene(config, Path(tmp) / "scene", progress=False)
        render = time.perf_counter() - start
        baseline = encode_only(config, Path(tmp) / "plain.mp4")
    print(f"video: {config.seconds} s, {config.width}x{config.height} at {config.fps} fps, 1 camera, 1 core")
    print(f"render total (scene, audio, frames, H.264+AAC): {render:.2f} s wall = "
          f"{config.seconds / render:.1f}x real time")
    print(f"encode only (constant image, silence): {baseline:.2f} s wall = "
          f"{config.seconds / baseline:.1f}x real time")
    print(f"render total / encode only: {render / baseline:.2f}")


if __name__ == "__main__":
    main()

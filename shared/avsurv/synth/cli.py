"""The `avsurv synth` sub-command."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from avsurv.clisupport import add_command

from .config import FRAME_RATES, LIGHTINGS, MAX_CAMERAS, WEATHERS, SceneConfig
from .generate import GROUND_TRUTH, generate_scene

_DEFAULTS = SceneConfig()


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` sub-command."""
    p = add_command(subparsers, "synth", _run,
                    help="render a synthetic street scene (several cameras, .mp4) with ground truth")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output directory for cam0.mp4, cam1.mp4, ... and ground_truth.json; new or empty "
                   "unless --force (required)")
    p.add_argument("--force", action="store_true",
                   help="render into a non-empty --out: first delete the scene files there (ground_truth.json "
                   "and camN.mp4), leaving other files alone (default: refuse)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                   help=f"random seed, an integer >= 0 (default {_DEFAULTS.seed})")
    p.add_argument("--duration", type=float, default=_DEFAULTS.duration_s,
                   help=f"scene length in whole seconds, 5 to 3600 (default {_DEFAULTS.duration_s:g})")
    p.add_argument("--cameras", type=int, default=_DEFAULTS.cameras,
                   help=f"number of cameras, 1 to {MAX_CAMERAS}; viewpoints cycle reference, similar, "
                   f"challenging, similar, ... (default {_DEFAULTS.cameras})")
    p.add_argument("--fps", type=int, default=_DEFAULTS.fps,
                   help=f"video frame rate, one of {', '.join(map(str, FRAME_RATES))} "
                   f"(default {_DEFAULTS.fps})")
    p.add_argument("--width", type=int, default=_DEFAULTS.width,
                   help=f"frame width in pixels, even, 64 to 1920 (default {_DEFAULTS.width})")
    p.add_argument("--height", type=int, default=_DEFAULTS.height,
                   help=f"frame height in pixels, even, 64 to 1080 (default {_DEFAULTS.height})")
    p.add_argument("--lighting", default=_DEFAULTS.lighting,
                   help=f"one of {', '.join(LIGHTINGS)}; cycle turns day into night over the scene "
                   f"(default {_DEFAULTS.lighting})")
    p.add_argument("--weather", default=_DEFAULTS.weather,
                   help=f"one of {', '.join(WEATHERS)}; mixed has rain showers that come and go "
                   f"(default {_DEFAULTS.weather})")
    p.add_argument("--anomalies-per-10min", type=float, default=_DEFAULTS.anomalies_per_10min,
                   help="mean number of anomalies (forklift, horse, sports_car, crash) per 10 minutes, "
                   f"0 to 60 (default {_DEFAULTS.anomalies_per_10min:g})")
    p.add_argument("--traffic", type=float, default=_DEFAULTS.traffic,
                   help=f"multiplier of every recurring event rate, 0 to 10 (default {_DEFAULTS.traffic:g})")
    p.add_argument("--jobs", type=int, default=_DEFAULTS.jobs,
                   help=f"cameras rendered in parallel processes, 1 to 64 (default {_DEFAULTS.jobs})")
    p.add_argument("--no-progress", action="store_true",
                   help="do not show the progress bar (default: shown)")


def _run(args: argparse.Namespace) -> int:
    """Render a synthetic street intersection filmed by several cameras at once: one H.264 + AAC (48 kHz stereo)
    .mp4 per camera and ground_truth.json with the visible and audible classes of every second. Same seed and
    options give identical files."""
    try:
        config = SceneConfig(
            seed=args.seed, duration_s=args.duration, cameras=args.cameras, fps=args.fps,
            width=args.width, height=args.height, lighting=args.lighting, weather=args.weather,
            anomalies_per_10min=args.anomalies_per_10min, traffic=args.traffic, jobs=args.jobs,
        )
    except ValueError as exc:
        print(f"avsurv synth: error: {exc}", file=sys.stderr)
        return 2
    problem = _prepare_out(args.out, args.force)
    if problem:
        print(f"avsurv synth: error: {problem}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    truth_path = generate_scene(config, args.out, progress=not args.no_progress)
    wall = time.perf_counter() - start
    _summary(truth_path, config, wall)
    return 0


_SCENE_FILE = re.compile(rf"^(cam\d+\.mp4|{re.escape(GROUND_TRUTH)})$")
"""What a render writes: the files --force deletes first."""


def _prepare_out(out: Path, force: bool) -> str | None:
    """Why ``out`` cannot take a new scene, or None once it can. Rendering over an old scene would leave
    its extra cameras' files beside a ground truth that does not list them."""
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a directory"
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if not entries:
        return None
    if not force:
        names = ", ".join(e.name for e in entries[:5]) + (", ..." if len(entries) > 5 else "")
        return f"{out} is not empty ({names}); choose a new --out, or pass --force to replace its scene files"
    for entry in entries:
        if entry.is_file() and _SCENE_FILE.match(entry.name):
            entry.unlink()
    return None


def _summary(truth_path: Path, config: SceneConfig, wall: float) -> None:
    truth = json.loads(truth_path.read_text())
    counts = Counter(e["class"] for e in truth["events"])
    anomalies = sum(e["anomaly"] for e in truth["events"])
    files = ", ".join(str(truth_path.parent / c["file"]) for c in truth["cameras"])
    print(f"wrote {files} and {truth_path}")
    print(f"duration {config.seconds} s x {config.cameras} camera(s) at {config.width}x{config.height} "
          f"{config.fps} fps, {config.lighting}, {config.weather}")
    print("events: " + (", ".join(f"{c} {counts[c]}" for c in truth["classes"] if counts[c]) or "none"))
    print(f"anomalies: {anomalies}")
    print(f"render speed: {config.seconds * config.cameras / wall:.1f}x real time ({wall:.1f} s wall)")

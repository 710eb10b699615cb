"""Helpers for the platform tests: a small generated scene, models to serve, and waiting on conditions."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from avsurv.learning.modeldir import save_model
from avsurv.models import build_model
from avsurv.synth import SceneConfig, generate_scene


def small_scene(out: Path, duration_s: float = 20, cameras: int = 2, seed: int = 5) -> Path:
    generate_scene(SceneConfig(seed=seed, duration_s=duration_s, cameras=cameras, width=320, height=180,
                               weather="clear"), out, progress=False)
    return out


def untrained_model(out: Path, seed: int) -> Path:
    """A tiny model with seeded random weights: the pipeline's mechanics do not depend on training."""
    torch.manual_seed(seed)
    save_model(build_model("tiny").eval(), out, {"format": "avsurv-model-v1", "profile": "tiny", "method": "epg",
                                                 "hyperparameters": {"w": 0.5}, "seed": seed})
    return out


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")

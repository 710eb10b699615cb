"""Synthetic street-intersection scenes with ground truth: `avsurv synth`.

Renders several cameras filming one street (H.264 + AAC 48 kHz stereo .mp4 each) and a
ground_truth.json saying, for every second of every camera, which classes are visible and audible.
"""

from .cli import register_cli
from .config import ANOMALY_CLASSES, CLASSES, SOUND_ONLY_CLASSES, SceneConfig
from .generate import generate_scene

__all__ = [
    "ANOMALY_CLASSES",
    "CLASSES",
    "SOUND_ONLY_CLASSES",
    "SceneConfig",
    "generate_scene",
    "register_cli",
]

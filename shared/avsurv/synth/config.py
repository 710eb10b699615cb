"""Options of the synthetic scene generator and the class vocabulary it renders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CLASSES: Final = (
    "bus",
    "truck",
    "car",
    "police",
    "ambulance",
    "motorbike",
    "bicycle",
    "pedestrian",
    "train",
    "forklift",
    "horse",
    "sports_car",
    "crash",
)
"""Every event class, in ground-truth order."""

ANOMALY_CLASSES: Final = ("forklift", "horse", "sports_car", "crash")
"""Rare classes that count as anomalies."""

SOUND_ONLY_CLASSES: Final = ("train",)
"""Classes that are heard but never seen (the train runs behind the buildings)."""

SIREN_CLASSES: Final = ("police", "ambulance")

LIGHTINGS: Final = ("day", "night", "cycle")
WEATHERS: Final = ("clear", "rain", "mixed")
FRAME_RATES: Final = (25, 30)
AUDIO_RATE: Final = 48_000
MAX_CAMERAS: Final = 16


@dataclass(frozen=True)
class SceneConfig:
    """What to render. Validated on construction: a bad value raises ValueError naming the option.

    Attributes:
        seed: random seed; the same seed and options give bit-identical files.
        duration_s: scene length in seconds (whole seconds, 5 to 3600).
        cameras: number of cameras filming the same scene (1 to 16); viewpoints cycle
            reference, similar, challenging, similar, challenging, ...
        fps: video frame rate, 25 or 30.
        width, height: frame size in pixels, even, 64..1920 by 64..1080.
        lighting: "day", "night" or "cycle" (day turning into night over the scene).
        weather: "clear", "rain" or "mixed" (rain showers come and go).
        anomalies_per_10min: mean number of anomaly events (forklift, horse, sports_car, crash) per
            10 minutes, 0 to 60.
        traffic: multiplies the rate of every recurring class (0 to 10).
        jobs: camera files rendered in parallel processes (1 to 64).
        capture_start: epoch seconds (UTC) of the scene's first instant, written as every file's
            creation_time so that clips of all cameras lie on one capture time line (whole seconds).
    """

    seed: int = 0
    duration_s: float = 120.0
    cameras: int = 2
    fps: int = 25
    width: int = 640
    height: int = 360
    lighting: str = "day"
    weather: str = "mixed"
    anomalies_per_10min: float = 3.0
    traffic: float = 1.0
    jobs: int = 1
    capture_start: int = 1_767_225_600  # 2026-01-01T00:00:00Z

    def __post_init__(self) -> None:
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", "an integer >= 0")
        _check(
            5 <= self.duration_s <= 3600 and float(self.duration_s).is_integer(),
            "duration",
            "a whole number of seconds from 5 to 3600",
        )
        _check(1 <= self.cameras <= MAX_CAMERAS, "cameras", f"1 to {MAX_CAMERAS}")
        _check(self.fps in FRAME_RATES, "fps", "25 or 30")
        _check(64 <= self.width <= 1920 and self.width % 2 == 0, "width", "an even number from 64 to 1920")
        _check(
            64 <= self.height <= 1080 and self.height % 2 == 0, "height", "an even number from 64 to 1080"
        )
        _check(self.lighting in LIGHTINGS, "lighting", "day, night or cycle")
        _check(self.weather in WEATHERS, "weather", "clear, rain or mixed")
        _check(0 <= self.anomalies_per_10min <= 60, "anomalies-per-10min", "a number from 0 to 60")
        _check(0 <= self.traffic <= 10, "traffic", "a number from 0 to 10")
        _check(1 <= self.jobs <= 64, "jobs", "1 to 64")
        _check(0 <= self.capture_start < 2**33, "capture_start", "epoch seconds from 0")

    @property
    def seconds(self) -> int:
        """Whole seconds in the scene."""
        return int(self.duration_s)

    @property
    def frames(self) -> int:
        return self.seconds * self.fps

    @property
    def camera_ids(self) -> list[str]:
        return [f"cam{i}" for i in range(self.cameras)]


def _check(ok: bool, option: str, allowed: str) -> None:
    if not ok:
        raise ValueError(f"invalid --{option}: must be {allowed}")

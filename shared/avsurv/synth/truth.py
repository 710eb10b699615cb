"""Per-second ground truth of one camera, from the same geometry and signals that were rendered.

Rules, for second [t, t+1) of a camera's file:
- visible: the event's on-screen box (clipped to the frame) covers at least VISIBLE_AREA of the frame
  in at least a third of that second's frames (occlusion by other objects is ignored);
- audible: the RMS of the event's own contribution at the microphone exceeds AUDIBLE_RATIO times the
  RMS of the ambient bed in that second;
- visual_label: the visible class with the largest mean on-screen area, else "background";
- audio_label: the loudest audible class (largest event RMS at the microphone), else "background";
- label: visual_label if anything is visible, else audio_label.
Ties go to the first class name in sorted order, so one scene always gives one file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import ANOMALY_CLASSES, SceneConfig
from .render import screen_box
from .scene import CameraRig, Event
from .sound import CameraAudio

VISIBLE_AREA = 0.005
AUDIBLE_RATIO = 0.5
BACKGROUND = "background"


def _visible_area(event: Event, rig: CameraRig, config: SceneConfig) -> np.ndarray:
    """Per second: mean covered frame fraction if visible by the rule, else 0."""
    times = np.arange(config.frames) / config.fps
    box = screen_box(event, rig, config.width, config.height, times)
    if box is None:
        return np.zeros(config.seconds)
    alive = (times >= event.start_s) & (times < event.end_s)
    area = (box.visible_fraction(config.width, config.height) * alive).reshape(config.seconds, config.fps)
    enough = (area >= VISIBLE_AREA).sum(axis=1) * 3 >= config.fps
    return np.where(enough, area.mean(axis=1), 0.0)


def camera_seconds(config: SceneConfig, rig: CameraRig, events: list[Event],
                   audio: CameraAudio) -> list[dict[str, Any]]:
    """The `seconds` list of one camera in the ground-truth file."""
    seconds: list[dict[str, Any]] = [
        {"visible": {}, "audible": {}, "event_ids": []} for _ in range(config.seconds)
    ]
    threshold = AUDIBLE_RATIO * audio.ambient_rms
    for event in events:
        area = _visible_area(event, rig, config)
        loud = audio.event_rms[event.event_id]
        for t in np.flatnonzero((area > 0) | (loud > threshold)):
            entry = seconds[t]
            entry["event_ids"].append(event.event_id)
            if area[t] > 0:
                entry["visible"][event.cls] = max(entry["visible"].get(event.cls, 0.0), float(area[t]))
            if loud[t] > threshold[t]:
                entry["audible"][event.cls] = max(entry["audible"].get(event.cls, 0.0), float(loud[t]))
    return [second_entry(t, entry["visible"], entry["audible"], entry["event_ids"])
            for t, entry in enumerate(seconds)]


def second_entry(t: int, visible: dict[str, float], audible: dict[str, float],
                 event_ids: list[int]) -> dict[str, Any]:
    """One entry of ``seconds``, from class -> mean on-screen area of the visible classes and class -> event
    RMS of the audible ones."""
    visual_label, audio_label = _strongest(visible), _strongest(audible)
    return {
        "t": t,
        "visible": sorted(visible),
        "audible": sorted(audible),
        "event_ids": sorted(event_ids),
        "anomaly": any(c in ANOMALY_CLASSES for c in set(visible) | set(audible)),
        "label": visual_label if visible else audio_label,
        "visual_label": visual_label,
        "audio_label": audio_label,
    }


def _strongest(scores: dict[str, float]) -> str:
    """The class with the largest score (ties to the first name in sorted order), else the background."""
    return max(sorted(scores), key=scores.__getitem__) if scores else BACKGROUND

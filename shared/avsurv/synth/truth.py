"""Per-second ground truth of one camera, from the same geometry and signals that were rendered.

Rules, for second [t, t+1) of a camera's file:
- visible: the event's on-screen box (clipped to the frame) covers at least VISIBLE_AREA of the frame
  in at least a third of that second's frames (occlusion by other objects is ignored);
- audible: the RMS of the event's own contribution at the microphone exceeds AUDIBLE_RATIO times the
  RMS of the ambient bed in that second;
- label: the visible class with the largest mean on-screen area, else the loudest audible class, else
  "background".
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
    return [_finish(t, entry) for t, entry in enumerate(seconds)]


def _finish(t: int, entry: dict[str, Any]) -> dict[str, Any]:
    visible: dict[str, float] = entry["visible"]
    audible: dict[str, float] = entry["audible"]
    if visible:
        label = max(sorted(visible), key=visible.__getitem__)
    elif audible:
        label = max(sorted(audible), key=audible.__getitem__)
    else:
        label = "background"
    classes = set(visible) | set(audible)
    return {
        "t": t,
        "visible": sorted(visible),
        "audible": sorted(audible),
        "event_ids": sorted(entry["event_ids"]),
        "anomaly": any(c in ANOMALY_CLASSES for c in classes),
        "label": label,
    }

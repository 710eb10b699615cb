"""Privacy before storage (issue 14 item 6): per-camera masks blacked out, and faces or licence plates
blurred, in every frame before it leaves ingest, as NVRs mask parts of a picture (Frigate's masks) and
AVACA / MAVAD anonymise on the device. The live ingest service and the offline ``avsurv segment`` apply the
same :class:`PrivacyFilter` to the same 398x224 frame, so both store the same pictures.

The ``privacy`` setting maps a camera id (``"*"``: every camera without an entry of its own) to:

    masks: [[[x, y], [x, y], [x, y], ...], ...]  # polygons, normalized: (0, 0) top left, (1, 1) bottom right
    frame_size: [1920, 1080]                     # optional: the masks are pixels of a picture of this size
    blur: [faces, plates]                        # optional: detections to blur

Masked pixels are set to exactly 0; a pixel the polygon's outline touches counts as masked. Detection runs on
the 398x224 frame with the Haar cascades OpenCV ships (nothing is downloaded): a face needs about 27 pixels
at that size (the cascade's 24-pixel window) and the plate cascade was trained on Russian plates, so small
faces and other plates can pass unblurred; masks are the guarantee, blur a best effort.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from avsurv.clipids import check_camera_id

EVERY_CAMERA = "*"
CAMERA_KEYS = ("masks", "frame_size", "blur")


@dataclass(frozen=True)
class Detector:
    """A Haar cascade shipped in ``cv2.data.haarcascades`` and how strict its vote is."""

    cascade: str
    min_neighbors: int


DETECTORS: dict[str, Detector] = {
    "faces": Detector("haarcascade_frontalface_default.xml", min_neighbors=5),
    "plates": Detector("haarcascade_russian_plate_number.xml", min_neighbors=3),
}
SCALE_FACTOR = 1.1
"""Step between the detection window's sizes (OpenCV's default)."""
BLUR_MARGIN = 0.2
"""Share of a detection's size added on each side before blurring: cascades box the inner face or plate."""
BLUR_SIGMA = 0.25
"""Gaussian sigma of the blur, as a share of the blurred box's longer side: nothing of the face survives."""
SUBPIXEL_BITS = 8
"""Fractional bits of polygon vertices when rasterized (cv2.fillPoly's shift)."""

Polygon = tuple[tuple[float, float], ...]
Box = tuple[int, int, int, int]  # x, y, width, height


class PrivacyError(ValueError):
    """A privacy setting that cannot be used; the message names the camera, the mask and the point."""


@dataclass(frozen=True)
class CameraPrivacy:
    masks: tuple[Polygon, ...] = ()
    """Polygons normalized to [0, 1] of the picture's width and height."""
    blur: tuple[str, ...] = ()
    """Keys of :data:`DETECTORS`."""


# -- settings ------------------------------------------------------------------------------------
def parse_privacy(raw: Mapping[str, Any]) -> dict[str, CameraPrivacy]:
    """camera id (or ``"*"``) -> its privacy, from the setting's YAML / JSON form; raises PrivacyError."""
    if not isinstance(raw, Mapping):
        raise PrivacyError("privacy must map camera ids to their masks and blur")
    parsed = {}
    for camera, entry in raw.items():
        if not isinstance(camera, str):
            raise PrivacyError(f"privacy: camera ids are strings, got {camera!r}")
        if camera != EVERY_CAMERA:
            try:
                check_camera_id(camera)
            except ValueError as error:
                raise PrivacyError(f"privacy: {error}") from None
        parsed[camera] = parse_camera_privacy(camera, entry)
    return parsed


def parse_camera_privacy(camera: str, raw: Any) -> CameraPrivacy:
    where = f"privacy.{camera}"
    if not isinstance(raw, Mapping):
        raise PrivacyError(f"{where}: expected a mapping with {', '.join(CAMERA_KEYS)}, got {raw!r:.80}")
    unknown = sorted(set(raw) - set(CAMERA_KEYS))
    if unknown:
        raise PrivacyError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(CAMERA_KEYS)}")
    size = _frame_size(where, raw["frame_size"]) if "frame_size" in raw else None
    masks = raw.get("masks") or []
    if not isinstance(masks, list):
        raise PrivacyError(f"{where}.masks: expected a list of polygons, got {masks!r:.80}")
    blur = raw.get("blur") or []
    if not isinstance(blur, list) or any(target not in DETECTORS for target in blur):
        raise PrivacyError(f"{where}.blur: expected a list of {' and '.join(DETECTORS)}, got {blur!r:.80}")
    return CameraPrivacy(tuple(_polygon(f"{where}.masks[{i}]", mask, size) for i, mask in enumerate(masks)),
                         tuple(dict.fromkeys(blur)))


def privacy_for(privacy: Mapping[str, CameraPrivacy], camera_id: str) -> CameraPrivacy | None:
    """The camera's own entry, else the ``"*"`` one, else None (frames pass untouched)."""
    chosen = privacy.get(camera_id, privacy.get(EVERY_CAMERA))
    return chosen if chosen is not None and (chosen.masks or chosen.blur) else None


def load_privacy_file(path: str | Path) -> dict[str, CameraPrivacy]:
    """The ``privacy`` section of a YAML file (the platform's configuration file, or one holding only it)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise PrivacyError(f"cannot read privacy settings from {path}: {error}") from None
    if not isinstance(loaded, Mapping) or "privacy" not in loaded:
        raise PrivacyError(f"{path}: no 'privacy' section (camera id -> masks, frame_size, blur)")
    return parse_privacy(loaded["privacy"] or {})


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PrivacyError(f"{where}: expected a finite number, got {value!r:.40}")
    return float(value)


def _frame_size(where: str, raw: Any) -> tuple[float, float]:
    if not isinstance(raw, list) or len(raw) != 2:
        raise PrivacyError(f"{where}.frame_size: expected [width, height] in pixels, got {raw!r:.80}")
    width, height = (_number(f"{where}.frame_size", v) for v in raw)
    if width < 1 or height < 1:
        raise PrivacyError(f"{where}.frame_size: width and height must be at least 1 pixel, got {raw}")
    return width, height


def _polygon(where: str, raw: Any, size: tuple[float, float] | None) -> Polygon:
    """A normalized polygon from normalized or (with ``size``) pixel points: at least three, inside the
    picture, enclosing an area, its edges crossing nowhere."""
    if not isinstance(raw, list) or len(raw) < 3:
        raise PrivacyError(f"{where}: a polygon needs at least 3 [x, y] points, got {raw!r:.80}")
    width, height = size or (1.0, 1.0)
    units = f"pixels of {width:g}x{height:g} (frame_size)" if size else "normalized to [0, 1] (or give frame_size)"
    points = []
    for i, point in enumerate(raw):
        if not isinstance(point, list | tuple) or len(point) != 2:
            raise PrivacyError(f"{where}[{i}]: expected [x, y], got {point!r:.40}")
        x, y = (_number(f"{where}[{i}]", v) for v in point)
        if not (0 <= x <= width and 0 <= y <= height):
            raise PrivacyError(f"{where}[{i}]: point ({x:g}, {y:g}) lies outside the picture; points are {units}")
        points.append((x / width, y / height))
    crossing = _crossing_edges(points)
    if crossing is not None:
        raise PrivacyError(f"{where}: edges {crossing[0]} and {crossing[1]} cross; list the points in order "
                           "around the outline")
    if abs(_area(points)) < 1e-9:
        raise PrivacyError(f"{where}: the polygon encloses no area (its points are on one line or repeated)")
    return tuple(points)


def _area(points: Sequence[tuple[float, float]]) -> float:
    xs, ys = np.array(points).T
    return 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))


def _crossing_edges(points: Sequence[tuple[float, float]]) -> tuple[int, int] | None:
    """The first two non-adjacent edges (edge i runs from point i to point i+1) that touch, else None."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 2, n):
            if (j + 1) % n != i and _segments_touch(*edges[i], *edges[j]):
                return i, j
    return None


def _segments_touch(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float],
                    d: tuple[float, float]) -> bool:
    def side(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def within(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> bool:
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    d1, d2, d3, d4 = side(c, d, a), side(c, d, b), side(a, b, c), side(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    return any(s == 0 and within(p, q, r) for s, p, q, r in ((d1, c, d, a), (d2, c, d, b), (d3, a, b, c),
                                                              (d4, a, b, d)))


# -- frames --------------------------------------------------------------------------------------
def mask_pixels(masks: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """bool [height, width]: the pixels any polygon covers, its outline included (pixel i spans [i, i+1) of
    x * width)."""
    canvas = np.zeros((height, width), np.uint8)
    scale = np.array([width, height]) * (1 << SUBPIXEL_BITS)
    half = 0.5 * (1 << SUBPIXEL_BITS)  # pixel centres lie at i + 0.5
    outlines = [np.round(np.array(polygon) * scale - half).astype(np.int32) for polygon in masks]
    if outlines:
        cv2.fillPoly(canvas, outlines, 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
        cv2.polylines(canvas, outlines, isClosed=True, color=1, thickness=1, lineType=cv2.LINE_8,
                      shift=SUBPIXEL_BITS)
    return canvas.astype(bool)


def blur_boxes(frame: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """A copy of ``frame`` with each box, grown by :data:`BLUR_MARGIN`, Gaussian-blurred."""
    out = frame.copy()
    height, width = frame.shape[:2]
    for x, y, w, h in boxes:
        grow_x, grow_y = round(w * BLUR_MARGIN), round(h * BLUR_MARGIN)
        x0, y0 = max(0, x - grow_x), max(0, y - grow_y)
        x1, y1 = min(width, x + w + grow_x), min(height, y + h + grow_y)
        sigma = BLUR_SIGMA * max(x1 - x0, y1 - y0)
        out[y0:y1, x0:x1] = cv2.GaussianBlur(out[y0:y1, x0:x1], (0, 0), sigmaX=sigma, sigmaY=sigma)
    return out


class PrivacyFilter:
    """One camera's privacy applied to its RGB uint8 frames: detections blurred, then masks set to 0 (last,
    so that nothing blurs colour back into them). Counts what it did (:attr:`frames`, :attr:`blurred`)."""

    def __init__(self, privacy: CameraPrivacy) -> None:
        self.privacy = privacy
        self.cascades = [(_cascade(DETECTORS[target].cascade), DETECTORS[target]) for target in privacy.blur]
        self._covered: dict[tuple[int, int], np.ndarray] = {}
        self.frames = 0
        self.blurred = 0
        """Regions blurred, over all frames."""

    def detect(self, frame: np.ndarray) -> list[Box]:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return [tuple(int(v) for v in box) for cascade, detector in self.cascades
                for box in cascade.detectMultiScale(grey, SCALE_FACTOR, detector.min_neighbors)]

    def covered(self, height: int, width: int) -> np.ndarray:
        """bool [height, width]: the masked pixels at this frame size."""
        if (height, width) not in self._covered:
            self._covered[(height, width)] = mask_pixels(self.privacy.masks, height, width)
        return self._covered[(height, width)]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        boxes = self.detect(frame) if self.cascades else []
        out = blur_boxes(frame, boxes) if boxes else frame.copy()
        out[self.covered(*frame.shape[:2])] = 0
        self.frames += 1
        self.blurred += len(boxes)
        return out

    def summary(self) -> str:
        return (f"privacy: {len(self.privacy.masks)} mask(s) blacked out in {self.frames} frames; "
                f"{self.blurred} {' or '.join(self.privacy.blur) or 'region'} blurred")


def privacy_filter(privacy: Mapping[str, CameraPrivacy], camera_id: str) -> PrivacyFilter | None:
    """The camera's filter, or None when it has no masks and no blur."""
    chosen = privacy_for(privacy, camera_id)
    return PrivacyFilter(chosen) if chosen is not None else None


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():  # OpenCV 5 ships no cascades: pyproject pins opencv-python-headless below 5
        raise PrivacyError(f"cannot load the Haar cascade {path}: install opencv-python-headless 4.x")
    return cascade

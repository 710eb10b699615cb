"""Frames of one camera: a precomputed background per lighting level, blitted sprites and rain.

Projection is a pinhole camera at height CAMERA_HEIGHT_M looking horizontally across the street: a
point at depth d (metres from the camera, across the street) and along-street offset dx lands at
column W/2 + mirror * dx * f / d, and its ground contact at row horizon + f * h / d. Everything costly
(backgrounds, sprites, rain streaks) is computed once and reused, so a frame costs a copy and a few
masked slice assignments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SOUND_ONLY_CLASSES, SceneConfig
from .scene import (
    BUILDINGS_Y,
    CAMERA_HEIGHT_M,
    CROSS_STREET_X,
    LIGHT_LEVELS,
    ROAD_Y,
    SIDEWALKS_Y,
    CameraRig,
    Event,
)
from .sprites import SIZES_M, draw_sprite, phase_count

ASPHALT = np.array((78, 78, 84), np.float32)
PAVEMENT = np.array((150, 145, 136), np.float32)
MARKING = np.array((225, 225, 215), np.float32)
SKY_DAY = np.array((140, 185, 235), np.float32)
SKY_NIGHT = np.array((12, 14, 30), np.float32)
FACADES = np.array(((170, 120, 95), (200, 190, 170), (120, 110, 105), (185, 160, 120), (150, 160, 170)),
                   np.float32)
WINDOW_DAY = np.array((70, 90, 110), np.float32)
WINDOW_LIT = np.array((255, 215, 130), np.float32)
LAMP_SPACING_M = 25.0
RAIN_LAYERS = 8


@dataclass(frozen=True)
class Box:
    """On-screen boxes of an event at several times (pixel columns x0..x1, rows y0..y1)."""

    x0: np.ndarray
    x1: np.ndarray
    y0: float
    y1: float

    def visible_fraction(self, width: int, height: int) -> np.ndarray:
        """Part of the frame covered by the box (clipped to the frame) at each time."""
        w = np.clip(self.x1, 0, width) - np.clip(self.x0, 0, width)
        h = min(self.y1, height) - max(self.y0, 0)
        return np.clip(w, 0, None) * max(h, 0.0) / (width * height)


def screen_box(event: Event, rig: CameraRig, width: int, height: int, times: np.ndarray) -> Box | None:
    """Where the event's sprite is on screen at the given times; None for sound-only classes."""
    if event.cls in SOUND_ONLY_CLASSES:
        return None
    f = rig.focal * width
    scale = f / rig.depth(event.y)
    length, tall = SIZES_M[event.cls]
    centre = width / 2 + rig.mirror * (event.x_at(times) - rig.x_cam) * scale
    ground = rig.horizon * height + f * CAMERA_HEIGHT_M / rig.depth(event.y)
    return Box(centre - length * scale / 2, centre + length * scale / 2, ground - tall * scale, ground)


def _buildings(seed: int, side: str) -> np.ndarray:
    """Facade segments of one side of the street: rows of (x_start, x_end, height_m, palette index)."""
    rng = np.random.default_rng([seed, 4, 0 if side == "south" else 1])
    segments, x = [], -300.0
    while x < 300.0:
        width = float(rng.uniform(8.0, 20.0))
        if x + width > CROSS_STREET_X[0] and x < CROSS_STREET_X[1]:
            x = CROSS_STREET_X[1]  # leave the cross street open
            continue
        segments.append((x, x + width, float(rng.uniform(9.0, 26.0)), float(rng.integers(len(FACADES)))))
        x += width + float(rng.uniform(0.0, 1.0))
    return np.array(segments)


class Background:
    """The static scene as one camera sees it, for each lighting level (computed on first use)."""

    def __init__(self, rig: CameraRig, config: SceneConfig) -> None:
        self.rig, self.width, self.height = rig, config.width, config.height
        self.segments = _buildings(config.seed, "north" if rig.mirror == 1 else "south")
        self._cache: dict[int, np.ndarray] = {}
        self._geometry = self._classify()

    def _classify(self) -> dict[str, np.ndarray]:
        """Per-pixel base colour, 'lit at night' emission and lamp-light pools (lighting independent)."""
        rig, w, h = self.rig, self.width, self.height
        f, hz = rig.focal * w, rig.horizon * h
        dy = np.broadcast_to((np.arange(h) + 0.5)[:, None] - hz, (h, w))
        is_ground = dy > 0
        ground_d = np.where(is_ground, f * CAMERA_HEIGHT_M / np.maximum(dy, 1e-6), 1e6)
        cols = (np.arange(w) + 0.5)[None, :] - w / 2
        build_d = abs(BUILDINGS_Y["north" if rig.mirror == 1 else "south"] - rig.y_cam)
        base = np.empty((h, w, 3), np.float32)
        glow = np.zeros((h, w), np.float32)
        emit = np.zeros((h, w), np.float32)

        # Ground (also behind the building line, through the cross-street gap).
        gx = rig.x_cam + rig.mirror * cols * ground_d / f
        gy = rig.y_cam + rig.mirror * ground_d
        on_road = (gy >= ROAD_Y[0]) & (gy < ROAD_Y[1])
        base[:] = PAVEMENT
        base[on_road | ((gx > CROSS_STREET_X[0]) & (gx < CROSS_STREET_X[1]))] = ASPHALT
        dashes = (np.mod(gx, 6.0) < 3.0) & on_road
        for line_y in (3.75, 10.5):
            base[dashes & (np.abs(gy - line_y) < 0.12)] = MARKING
        base[on_road & (np.abs(gy - 7.0) < 0.1)] = (230, 190, 40)  # centre line
        zebra = on_road & (gx > CROSS_STREET_X[0] - 4.5) & (gx < CROSS_STREET_X[0] - 0.5)
        base[zebra & (np.mod(gx, 1.0) < 0.5)] = MARKING
        for lo, hi in SIDEWALKS_Y:
            base[(np.abs(gy - lo) < 0.15) | (np.abs(gy - hi) < 0.15)] = (175, 172, 165)  # kerbs
        lamp_y = SIDEWALKS_Y[1][1] - 0.5 if rig.mirror == 1 else SIDEWALKS_Y[0][0] + 0.5
        lamp_dx = np.mod(gx, LAMP_SPACING_M) - LAMP_SPACING_M / 2
        glow += np.exp(-(lamp_dx**2 + (gy - lamp_y) ** 2) / 30.0) * is_ground

        # Building facades: the ray meets the building plane at along-street position bx, height bz.
        bx = rig.x_cam + rig.mirror * cols * build_d / f
        bz = CAMERA_HEIGHT_M - dy * build_d / f
        behind = ground_d > build_d
        facade = np.zeros((h, w), bool)
        for x0, x1, top, colour in self.segments:
            seg = behind & (bx >= x0) & (bx < x1) & (bz < top)
            facade |= seg
            base[seg] = FACADES[int(colour)]
            window = seg & (np.mod(bx - x0, 2.5) > 0.8) & (np.mod(bz, 3.0) > 1.2) & (bz > 3.0)
            base[window] = WINDOW_DAY
            cell = np.floor((bx - x0) / 2.5) * 7 + np.floor(bz / 3.0) * 13 + colour
            emit[window & (np.mod(cell, 3) != 0)] = 1.0  # two windows in three are lit at night
        sky = behind & ~facade & ~is_ground
        base[sky] = SKY_DAY
        return {"base": base, "glow": glow, "emit": emit, "sky": sky}

    def at(self, level: int) -> np.ndarray:
        """The background at lighting level index 0 (night) .. LIGHT_LEVELS - 1 (day), uint8 RGB."""
        if level not in self._cache:
            self._cache[level] = self._lit(level / (LIGHT_LEVELS - 1))
        return self._cache[level]

    def _lit(self, light: float) -> np.ndarray:
        g = self._geometry
        ambient = 0.15 + 0.85 * light
        img = g["base"] * ambient
        img[g["sky"]] = SKY_DAY * light + SKY_NIGHT * (1 - light)
        dark = 1.0 - light
        img += (g["glow"] * dark * 120.0)[..., None] * np.array((1.0, 0.85, 0.55), np.float32)
        lit = g["emit"] * dark
        img += lit[..., None] * (WINDOW_LIT - img) * 0.9
        return _grade(img, self.rig)


def _grade(img: np.ndarray, rig: CameraRig) -> np.ndarray:
    """The camera's own colour cast and exposure."""
    return np.clip(img * (np.array(rig.tint, np.float32) * rig.brightness), 0, 255).astype(np.uint8)


class SpriteBank:
    """The sprites of every event for one camera, per phase and lighting level, made on first use."""

    def __init__(self, rig: CameraRig, config: SceneConfig) -> None:
        self.rig, self.config = rig, config
        self._cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def get(self, event: Event, phase: int, level: int) -> tuple[np.ndarray, np.ndarray]:
        key = (event.event_id, phase, level)
        if key not in self._cache:
            self._cache[key] = self._make(event, phase, level / (LIGHT_LEVELS - 1))
        return self._cache[key]

    def _make(self, event: Event, phase: int, light: float) -> tuple[np.ndarray, np.ndarray]:
        scale = self.rig.focal * self.config.width / self.rig.depth(event.y)
        length, tall = SIZES_M[event.cls]
        canvas = draw_sprite(event.cls, event.variant, phase, round(length * scale), round(tall * scale))
        shade = np.where(canvas.emissive, 1.0, 0.15 + 0.85 * light)[..., None]
        rgb, mask = _grade(canvas.rgb * shade, self.rig), canvas.mask
        if event.direction * self.rig.mirror < 0:  # sprites face right; flip when moving left on screen
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        return np.ascontiguousarray(rgb), np.ascontiguousarray(mask)


def sprite_phase(event: Event, t: float) -> int:
    """Which sprite variant shows at time t: lights flash at 1.5 Hz, legs alternate, the wreck stays."""
    if phase_count(event.cls) == 1:
        return 0
    if event.cls == "crash":
        return int(t - event.start_s >= event.stop_after_s)
    rate = 3.0 if event.cls in ("police", "ambulance", "forklift") else 4.0
    return int((t - event.start_s) * rate) % 2


def _rain_layers(width: int, height: int, seed: int) -> list[np.ndarray]:
    """Flat pixel indices of diagonal rain streaks, several layers cycled to animate the rain."""
    rng = np.random.default_rng([seed, 6])
    streak = max(3, height // 30)
    n = width * height // 400
    layers = []
    for _ in range(RAIN_LAYERS):
        x = rng.integers(0, width, n)[:, None] + np.arange(streak)[None, :] // 3
        y = rng.integers(0, height, n)[:, None] + np.arange(streak)[None, :]
        layers.append((np.clip(y, 0, height - 1) * width + np.clip(x, 0, width - 1)).ravel())
    return layers


class FrameRenderer:
    """Renders the frames of one camera over the shared event timeline."""

    def __init__(self, rig: CameraRig, config: SceneConfig, events: list[Event]) -> None:
        self.rig, self.config = rig, config
        self.width, self.height = config.width, config.height
        self.background = Background(rig, config)
        self.sprites = SpriteBank(rig, config)
        self.rain = _rain_layers(config.width, config.height, config.seed)
        # Draw far objects first so nearer ones cover them.
        drawable = [e for e in events if e.cls not in SOUND_ONLY_CLASSES]
        self.events = sorted(drawable, key=lambda e: -rig.depth(e.y))

    def frame(self, index: int, t: float, level: int, rain: float) -> np.ndarray:
        img = self.background.at(level).copy()
        for event in self.events:
            if event.start_s <= t < event.end_s:
                self._blit(img, event, t, level)
        if rain > 0:
            layer = self.rain[index % RAIN_LAYERS]
            drops = layer[: int(len(layer) * rain)]
            flat = img.reshape(-1, 3)
            flat[drops] = flat[drops] // 2 + 90
        return img

    def _blit(self, img: np.ndarray, event: Event, t: float, level: int) -> None:
        box = screen_box(event, self.rig, self.width, self.height, np.array([t]))
        assert box is not None  # sound-only events are filtered out in __init__
        rgb, mask = self.sprites.get(event, sprite_phase(event, t), level)
        x0, y0 = round(float(box.x0[0])), round(box.y1) - rgb.shape[0]
        sx0, sy0 = max(0, -x0), max(0, -y0)
        dx0, dy0 = max(0, x0), max(0, y0)
        dx1, dy1 = min(self.width, x0 + rgb.shape[1]), min(self.height, y0 + rgb.shape[0])
        if dx1 <= dx0 or dy1 <= dy0:
            return
        src = (slice(sy0, sy0 + dy1 - dy0), slice(sx0, sx0 + dx1 - dx0))
        np.copyto(img[dy0:dy1, dx0:dx1], rgb[src], where=mask[src][..., None])

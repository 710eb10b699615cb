"""The look of each class: a side-view sprite drawn from a few primitives.

Every class keeps one shape and colour scheme (with small per-event variations of shade and palette),
so occurrences far apart in time look alike. Sprites are drawn once per event, camera and phase
(flashing lights, walking legs, crash wreck) and then only blitted, which keeps rendering cheap.
Coordinates inside a sprite are normalised: u runs from the rear (0) to the front (1), v from the
ground (0) to the top (1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Colour = tuple[float, float, float]

# Physical size (length, height) in metres of what each class's sprite shows.
SIZES_M: dict[str, tuple[float, float]] = {
    "bus": (12.0, 3.2),
    "truck": (10.0, 3.6),
    "car": (4.5, 1.5),
    "police": (4.8, 1.75),
    "ambulance": (6.0, 2.7),
    "motorbike": (2.1, 1.6),
    "bicycle": (1.8, 1.75),
    "pedestrian": (1.6, 1.75),
    "forklift": (3.0, 2.3),
    "horse": (2.4, 2.5),
    "sports_car": (4.4, 1.15),
    "crash": (4.6, 2.2),
}

BLACK: Colour = (20, 20, 22)
TYRE: Colour = (28, 28, 30)
GLASS: Colour = (60, 80, 100)
HEADLIGHT: Colour = (255, 250, 215)
TAILLIGHT: Colour = (230, 20, 20)
SKIN: Colour = (215, 170, 135)
CAR_PALETTE: tuple[Colour, ...] = (
    (170, 172, 178), (40, 60, 120), (235, 235, 235), (120, 30, 35), (60, 70, 60)
)
CLOTHES: tuple[Colour, ...] = ((40, 60, 140), (150, 40, 40), (50, 120, 60), (200, 180, 60), (90, 90, 95))


class Canvas:
    """An RGB sprite with a coverage mask and an 'emissive' mask (lights that stay bright at night)."""

    def __init__(self, width: int, height: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.mask = np.zeros((height, width), bool)
        self.emissive = np.zeros((height, width), bool)
        self.u = ((np.arange(width) + 0.5) / width)[None, :]
        self.v = (1.0 - (np.arange(height) + 0.5) / height)[:, None]

    def _fill(self, region: np.ndarray, colour: Colour | None, emissive: bool) -> None:
        if colour is None:  # erase, e.g. the inside of a wheel rim
            self.mask &= ~region
            return
        self.rgb[region] = colour
        self.mask |= region
        self.emissive[region] = emissive

    def rect(self, u0: float, v0: float, u1: float, v1: float, colour: Colour | None,
             emissive: bool = False) -> None:
        region = (self.u >= u0) & (self.u < u1) & (self.v >= v0) & (self.v < v1)
        self._fill(region, colour, emissive)

    def ellipse(self, cu: float, cv: float, ru: float, rv: float, colour: Colour | None,
                emissive: bool = False) -> None:
        region = ((self.u - cu) / ru) ** 2 + ((self.v - cv) / rv) ** 2 <= 1.0
        self._fill(region, colour, emissive)

    def wheel(self, cu: float, cv: float, ru: float, rv: float) -> None:
        self.ellipse(cu, cv, ru, rv, TYRE)
        self.ellipse(cu, cv, ru * 0.45, rv * 0.45, (120, 120, 125))


@dataclass(frozen=True)
class Look:
    """Per-event variation of a class's look: a shade factor and palette picks."""

    shade: float
    primary: Colour
    secondary: Colour

    @staticmethod
    def for_event(cls: str, variant: int) -> Look:
        rng = np.random.default_rng([variant, 3])
        shade = float(rng.uniform(0.85, 1.12))
        primary = CAR_PALETTE[int(rng.integers(len(CAR_PALETTE)))]
        secondary = CLOTHES[int(rng.integers(len(CLOTHES)))]
        return Look(shade, primary, secondary)

    def tone(self, colour: Colour) -> Colour:
        r, g, b = (min(255.0, c * self.shade) for c in colour)
        return (r, g, b)


def _lights(c: Canvas, v: float, size: float) -> None:
    """Headlight at the front, tail light at the rear."""
    c.rect(1.0 - 0.04, v, 1.0, v + size, HEADLIGHT, emissive=True)
    c.rect(0.0, v, 0.03, v + size, TAILLIGHT, emissive=True)


def _bus(c: Canvas, look: Look, phase: int) -> None:
    c.rect(0.0, 0.1, 1.0, 0.97, look.tone((200, 45, 35)))
    c.rect(0.0, 0.3, 1.0, 0.36, (240, 240, 240))  # white livery stripe
    for i in range(7):
        u0 = 0.04 + i * 0.125
        c.rect(u0, 0.5, u0 + 0.1, 0.85, (255, 225, 140), emissive=True)  # lit interior
        c.rect(u0 + 0.01, 0.52, u0 + 0.09, 0.83, GLASS)
    c.rect(0.92, 0.3, 0.99, 0.88, GLASS)  # windscreen
    c.rect(0.9, 0.88, 0.99, 0.95, (255, 170, 0), emissive=True)  # destination sign
    for cu in (0.14, 0.8):
        c.wheel(cu, 0.1, 0.045, 0.11)
    _lights(c, 0.18, 0.06)


def _truck(c: Canvas, look: Look, phase: int) -> None:
    c.rect(0.0, 0.16, 0.72, 1.0, look.tone((215, 215, 205)))  # box
    c.rect(0.0, 0.45, 0.72, 0.52, (30, 120, 50))  # green stripe
    c.rect(0.74, 0.16, 1.0, 0.75, look.tone((30, 70, 150)))  # cab
    c.rect(0.85, 0.45, 0.98, 0.7, GLASS)
    c.rect(0.0, 0.1, 1.0, 0.16, BLACK)  # chassis
    for cu in (0.1, 0.22, 0.86):
        c.wheel(cu, 0.1, 0.05, 0.11)
    _lights(c, 0.2, 0.06)


def _saloon(c: Canvas, body: Colour, roof_v: float = 1.0) -> None:
    c.rect(0.0, 0.2, 1.0, 0.58 * roof_v, body)
    c.rect(0.22, 0.5 * roof_v, 0.75, roof_v, body)
    c.rect(0.26, 0.58 * roof_v, 0.48, 0.93 * roof_v, GLASS)
    c.rect(0.51, 0.58 * roof_v, 0.71, 0.93 * roof_v, GLASS)
    for cu in (0.18, 0.82):
        c.wheel(cu, 0.17, 0.08, 0.17)
    _lights(c, 0.33, 0.09)


def _car(c: Canvas, look: Look, phase: int) -> None:
    _saloon(c, look.tone(look.primary))


def _police(c: Canvas, look: Look, phase: int) -> None:
    _saloon(c, (240, 240, 240), roof_v=0.86)
    c.rect(0.0, 0.2, 1.0, 0.36, (20, 30, 90))  # dark blue lower band
    c.rect(0.35, 0.86, 0.47, 0.97, (40, 80, 255) if phase else (40, 40, 90), emissive=bool(phase))
    c.rect(0.49, 0.86, 0.61, 0.97, (255, 40, 40) if not phase else (90, 30, 30), emissive=not phase)


def _ambulance(c: Canvas, look: Look, phase: int) -> None:
    c.rect(0.0, 0.14, 0.78, 0.93, (245, 245, 240))
    c.rect(0.78, 0.14, 1.0, 0.62, (245, 245, 240))
    c.rect(0.8, 0.4, 0.95, 0.6, GLASS)
    c.rect(0.0, 0.4, 1.0, 0.47, (220, 30, 30))  # red stripe
    c.rect(0.3, 0.55, 0.42, 0.85, (220, 30, 30))  # cross, vertical bar
    c.rect(0.26, 0.64, 0.46, 0.76, (220, 30, 30))
    on = (255, 30, 30)
    c.rect(0.02, 0.93, 0.12, 1.0, on if phase else (110, 40, 40), emissive=bool(phase))
    c.rect(0.66, 0.93, 0.76, 1.0, on if not phase else (110, 40, 40), emissive=not phase)
    for cu in (0.15, 0.82):
        c.wheel(cu, 0.1, 0.06, 0.1)
    _lights(c, 0.2, 0.06)


def _rider(c: Canvas, cu: float, seat_v: float, clothes: Colour, helmet: Colour) -> None:
    c.rect(cu - 0.08, seat_v, cu + 0.06, seat_v + 0.3, clothes)
    c.ellipse(cu + 0.02, seat_v + 0.38, 0.08, 0.09, helmet)


def _motorbike(c: Canvas, look: Look, phase: int) -> None:
    for cu in (0.18, 0.82):
        c.wheel(cu, 0.2, 0.16, 0.2)
    c.rect(0.2, 0.25, 0.8, 0.45, look.tone((25, 25, 30)))
    c.rect(0.55, 0.4, 0.8, 0.52, look.tone((200, 120, 20)))  # tank
    _rider(c, 0.45, 0.45, look.secondary, (240, 240, 240))
    c.rect(0.93, 0.35, 1.0, 0.45, HEADLIGHT, emissive=True)


def _bicycle(c: Canvas, look: Look, phase: int) -> None:
    for cu in (0.2, 0.8):
        c.ellipse(cu, 0.2, 0.19, 0.2, (25, 25, 25))
        c.ellipse(cu, 0.2, 0.15, 0.16, None)
    c.rect(0.2, 0.22, 0.8, 0.27, look.tone((30, 150, 70)))  # green frame
    c.rect(0.45, 0.22, 0.5, 0.45, look.tone((30, 150, 70)))
    _rider(c, 0.45, 0.45, look.secondary, SKIN)
    c.rect(0.3 + 0.1 * phase, 0.25, 0.36 + 0.1 * phase, 0.45, (40, 40, 60))  # pedalling leg


def _pedestrian(c: Canvas, look: Look, phase: int) -> None:
    clothes = (look.secondary, CLOTHES[(CLOTHES.index(look.secondary) + 2) % len(CLOTHES)])
    for i, cu in enumerate((0.25, 0.7)):
        stride = 0.06 if (phase + i) % 2 else 0.02
        c.rect(cu - stride - 0.05, 0.0, cu - stride + 0.02, 0.48, (40, 40, 55))
        c.rect(cu + stride - 0.02, 0.0, cu + stride + 0.05, 0.48, (40, 40, 55))
        c.rect(cu - 0.1, 0.45, cu + 0.1, 0.84, clothes[i])
        c.ellipse(cu, 0.91, 0.07, 0.08, SKIN)


def _forklift(c: Canvas, look: Look, phase: int) -> None:
    c.rect(0.0, 0.15, 0.7, 0.5, look.tone((240, 190, 20)))
    c.rect(0.15, 0.5, 0.2, 0.95, BLACK)  # overhead guard posts
    c.rect(0.6, 0.5, 0.65, 0.95, BLACK)
    c.rect(0.12, 0.92, 0.66, 0.97, BLACK)
    c.rect(0.75, 0.05, 0.8, 1.0, (70, 70, 75))  # mast
    c.rect(0.8, 0.05, 1.0, 0.1, (70, 70, 75))  # forks
    c.ellipse(0.4, 0.99, 0.05, 0.04, (255, 140, 0) if phase else (110, 70, 20), emissive=bool(phase))
    for cu in (0.15, 0.6):
        c.wheel(cu, 0.1, 0.09, 0.1)


def _horse(c: Canvas, look: Look, phase: int) -> None:
    brown = look.tone((110, 65, 35))
    c.ellipse(0.45, 0.52, 0.3, 0.12, brown)  # body
    c.rect(0.7, 0.55, 0.8, 0.8, brown)  # neck
    c.ellipse(0.85, 0.78, 0.12, 0.06, brown)  # head
    c.rect(0.1, 0.45, 0.16, 0.6, (40, 25, 15))  # tail
    for i, cu in enumerate((0.22, 0.32, 0.6, 0.7)):
        lift = 0.05 if (phase + i) % 2 else 0.0
        c.rect(cu, lift, cu + 0.05, 0.45, brown)
    _rider(c, 0.45, 0.62, (30, 30, 30), (20, 20, 20))


def _sports_car(c: Canvas, look: Look, phase: int) -> None:
    body = look.tone((250, 210, 0)) if look.shade > 1.0 else look.tone((230, 20, 10))
    c.rect(0.0, 0.15, 1.0, 0.55, body)
    c.rect(0.3, 0.5, 0.68, 0.85, body)
    c.rect(0.36, 0.56, 0.65, 0.8, GLASS)
    c.rect(0.0, 0.55, 0.08, 0.72, BLACK)  # spoiler
    for cu in (0.18, 0.82):
        c.wheel(cu, 0.18, 0.08, 0.2)
    _lights(c, 0.3, 0.1)


def _crash(c: Canvas, look: Look, phase: int) -> None:
    if not phase:  # before the impact: an ordinary car in the lower two thirds (the top is for smoke)
        c.v = c.v * 1.5
        _saloon(c, look.tone(look.primary))
        return
    c.ellipse(0.55, 0.75, 0.4, 0.25, (150, 150, 150))  # smoke cloud
    c.ellipse(0.75, 0.85, 0.22, 0.15, (185, 185, 185))
    c.rect(0.05, 0.1, 0.95, 0.4, look.tone(look.primary))  # crumpled body
    c.rect(0.65, 0.3, 0.95, 0.5, look.tone(look.primary))
    c.rect(0.3, 0.4, 0.6, 0.55, GLASS)
    c.rect(0.95, 0.0, 1.0, 0.25, (255, 120, 0), emissive=True)  # fire
    rng = np.random.default_rng(17)
    for cu, cv in rng.uniform(0.0, 1.0, (12, 2)):
        c.rect(cu, cv * 0.15, cu + 0.025, cv * 0.15 + 0.04, (200, 210, 220))  # debris and glass


PAINTERS: dict[str, Callable[[Canvas, Look, int], None]] = {
    "bus": _bus,
    "truck": _truck,
    "car": _car,
    "police": _police,
    "ambulance": _ambulance,
    "motorbike": _motorbike,
    "bicycle": _bicycle,
    "pedestrian": _pedestrian,
    "forklift": _forklift,
    "horse": _horse,
    "sports_car": _sports_car,
    "crash": _crash,
}


def phase_count(cls: str) -> int:
    return 1 if cls in ("bus", "truck", "car", "motorbike", "sports_car") else 2


def draw_sprite(cls: str, variant: int, phase: int, width: int, height: int) -> Canvas:
    """The sprite of one event facing right (front at u = 1), at the given pixel size."""
    canvas = Canvas(max(2, width), max(2, height))
    PAINTERS[cls](canvas, Look.for_event(cls, variant), phase)
    return canvas

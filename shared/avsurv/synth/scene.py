"""The world shared by every camera: street geometry, the event timeline and the camera rigs.

The street runs along world x (metres, east positive). World y is across it: the south sidewalk,
four lanes (eastbound near the south side), the north sidewalk, and a row of buildings on each side.
The road extends far beyond any camera's field of view, so vehicles (and their sound) exist before
they enter the picture. Events arrive as independent Poisson processes, one per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ANOMALY_CLASSES, CLASSES, SceneConfig

# Street layout (world y, metres).
SOUTH_SIDEWALK_Y = -1.5
LANES_Y = {"east_near": 2.0, "east_far": 5.5, "west_near": 9.0, "west_far": 12.0}
NORTH_SIDEWALK_Y = 15.5
ROAD_Y = (0.0, 14.0)
SIDEWALKS_Y = ((-3.5, 0.0), (14.0, 17.0))
BUILDINGS_Y = {"south": -6.0, "north": 20.0}
TRAIN_Y = 70.0
CROSS_STREET_X = (14.0, 24.0)
CAMERA_HEIGHT_M = 6.0


@dataclass(frozen=True)
class ClassMotion:
    """How a class moves: speed range (m/s), lanes it may use, and how far off-screen it starts."""

    speed: tuple[float, float]
    lanes: tuple[str, ...]
    spawn_m: float
    rate_per_min: float


_VEHICLE_LANES = ("east_near", "east_far", "west_near", "west_far")
MOTIONS: dict[str, ClassMotion] = {
    "bus": ClassMotion((7.0, 10.0), ("east_far", "west_near"), 70.0, 0.7),
    "truck": ClassMotion((8.0, 11.0), ("east_far", "west_near"), 70.0, 0.6),
    "car": ClassMotion((10.0, 14.0), _VEHICLE_LANES, 60.0, 3.0),
    # Sirens start far away so they are heard well before they are seen.
    "police": ClassMotion((14.0, 18.0), _VEHICLE_LANES, 260.0, 0.5),
    "ambulance": ClassMotion((13.0, 16.0), _VEHICLE_LANES, 240.0, 0.4),
    "motorbike": ClassMotion((12.0, 16.0), _VEHICLE_LANES, 60.0, 1.0),
    "bicycle": ClassMotion((4.0, 6.0), ("east_near", "west_far"), 30.0, 1.0),
    "pedestrian": ClassMotion((1.1, 1.6), ("south_walk", "north_walk"), 22.0, 1.5),
    "train": ClassMotion((18.0, 25.0), ("rail",), 400.0, 0.3),
    "forklift": ClassMotion((2.0, 3.0), ("east_near", "west_far"), 35.0, 0.0),
    "horse": ClassMotion((3.0, 4.5), ("east_near", "west_far"), 40.0, 0.0),
    "sports_car": ClassMotion((18.0, 24.0), _VEHICLE_LANES, 90.0, 0.0),
    "crash": ClassMotion((11.0, 14.0), ("east_near", "east_far", "west_near", "west_far"), 60.0, 0.0),
}

CRASH_WRECK_S = 10.0  # the wreck stays in place this long after the impact


def lane_y(lane: str) -> float:
    if lane in LANES_Y:
        return LANES_Y[lane]
    return {"south_walk": SOUTH_SIDEWALK_Y, "north_walk": NORTH_SIDEWALK_Y, "rail": TRAIN_Y}[lane]


def lane_direction(lane: str, rng: np.random.Generator) -> int:
    """Eastbound lanes go +x, westbound -x; sidewalks and the rail go either way."""
    if lane.startswith("east"):
        return 1
    if lane.startswith("west"):
        return -1
    return int(rng.choice((-1, 1)))


@dataclass(frozen=True)
class Event:
    """One object moving through the world: x(t) = x0 + direction * speed * clip(t - start, 0, stop)."""

    event_id: int
    cls: str
    start_s: float
    end_s: float
    lane: str
    direction: int
    speed: float
    x0: float
    stop_after_s: float  # seconds after start when the object stops (crash impact); inf otherwise
    variant: int  # seeds the small per-event look and sound variations

    @property
    def anomaly(self) -> bool:
        return self.cls in ANOMALY_CLASSES

    @property
    def y(self) -> float:
        return lane_y(self.lane)

    def x_at(self, t: np.ndarray) -> np.ndarray:
        travelled = np.clip(np.asarray(t, dtype=np.float64) - self.start_s, 0.0, self.stop_after_s)
        return self.x0 + self.direction * self.speed * travelled

    def to_json(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "class": self.cls,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "anomaly": self.anomaly,
        }


def _class_rates(config: SceneConfig) -> dict[str, float]:
    """Events per second for each class."""
    rates = {cls: m.rate_per_min * config.traffic / 60.0 for cls, m in MOTIONS.items()}
    per_anomaly = config.anomalies_per_10min / 600.0 / len(ANOMALY_CLASSES)
    rates.update({cls: per_anomaly for cls in ANOMALY_CLASSES})
    return rates


def _make_event(cls: str, start: float, duration: float, rng: np.random.Generator) -> Event:
    motion = MOTIONS[cls]
    lane = str(rng.choice(motion.lanes))
    direction = lane_direction(lane, rng)
    speed = float(rng.uniform(*motion.speed))
    x0 = -direction * motion.spawn_m
    stop_after = np.inf
    travel = 2 * motion.spawn_m / speed
    if cls == "crash":
        # The crash happens in the middle of the intersection, where every camera looks.
        impact_x = float(rng.uniform(-3.0, 3.0))
        stop_after = (impact_x - x0) * direction / speed
        travel = stop_after + CRASH_WRECK_S
    return Event(
        event_id=-1,
        cls=cls,
        start_s=start,
        end_s=min(start + travel, duration),
        lane=lane,
        direction=direction,
        speed=speed,
        x0=x0,
        stop_after_s=stop_after,
        variant=int(rng.integers(0, 2**31 - 1)),
    )


def schedule_events(config: SceneConfig) -> list[Event]:
    """Poisson arrivals for every class over the scene, sorted by start time and numbered."""
    rng = np.random.default_rng([config.seed, 1])
    duration = float(config.seconds)
    events: list[Event] = []
    for cls, rate in _class_rates(config).items():
        if rate <= 0:
            continue
        t = float(rng.exponential(1.0 / rate))
        while t < duration - 1.0:
            events.append(_make_event(cls, t, duration, rng))
            t += float(rng.exponential(1.0 / rate))
    events.sort(key=lambda e: (e.start_s, CLASSES.index(e.cls)))
    return [Event(**{**e.__dict__, "event_id": i}) for i, e in enumerate(events)]


@dataclass(frozen=True)
class CameraRig:
    """Where a camera stands and how it sees and hears.

    The camera looks across the street from y_cam; `mirror` is -1 when it stands on the north
    side, so eastward motion goes right-to-left in its picture.
    """

    camera_id: str
    viewpoint: str
    x_cam: float
    y_cam: float
    focal: float  # focal length as a fraction of the frame width
    horizon: float  # horizon row as a fraction of the frame height
    tint: tuple[float, float, float]  # per-channel colour gain (white balance / colour cast)
    brightness: float
    mic_extra_m: float  # microphone set back from the camera: quieter events, same ambient
    ambient_gain: float
    description: str

    @property
    def mirror(self) -> int:
        return 1 if self.y_cam < ROAD_Y[0] else -1

    def depth(self, y: float) -> float:
        return abs(y - self.y_cam)


def _viewpoint(index: int) -> str:
    if index == 0:
        return "reference"
    return "similar" if index % 2 == 1 else "challenging"


def make_cameras(config: SceneConfig) -> list[CameraRig]:
    """Camera i's viewpoint kind cycles reference, similar, challenging, similar, challenging, ..."""
    rng = np.random.default_rng([config.seed, 2])
    rigs = []
    for i, camera_id in enumerate(config.camera_ids):
        kind = _viewpoint(i)
        if kind == "reference":
            rig = CameraRig(camera_id, kind, 0.0, -12.0, 0.6, 0.30, (1.0, 1.0, 1.0), 1.0, 0.0, 1.0,
                            "south side of the street, looking north across the intersection")
        elif kind == "similar":
            shift = float(rng.uniform(-3.0, 3.0))
            zoom = float(rng.uniform(1.0, 1.12))
            rig = CameraRig(camera_id, kind, shift, -12.0 - float(rng.uniform(0.0, 1.5)), 0.6 * zoom,
                            0.30 + float(rng.uniform(-0.02, 0.02)), (1.0, 1.0, 0.97), 1.0, 2.0, 1.1,
                            f"south side, shifted {shift:+.1f} m, zoom x{zoom:.2f}: close to the reference")
        else:
            zoom = float(rng.choice((0.8, 1.4))) * float(rng.uniform(0.95, 1.05))
            shift = float(rng.uniform(-6.0, 6.0))
            warm = bool(rng.integers(0, 2))
            tint = (1.12, 1.0, 0.8) if warm else (0.85, 0.95, 1.15)
            rig = CameraRig(camera_id, kind, shift, 29.0, 0.6 * zoom, 0.38 + float(rng.uniform(-0.03, 0.03)),
                            tint, float(rng.uniform(0.75, 0.9)), 25.0, 2.2,
                            f"north side (mirrored motion), shifted {shift:+.1f} m, zoom x{zoom:.2f}, "
                            f"{'warm' if warm else 'cold'} colour cast, distant microphone")
        rigs.append(rig)
    return rigs


LIGHT_LEVELS = 9  # lighting is quantised so each camera precomputes at most this many backgrounds


def light_level(config: SceneConfig, t: np.ndarray) -> np.ndarray:
    """Daylight in [0, 1] at times t (1 = day, 0 = night), quantised to LIGHT_LEVELS steps."""
    t = np.asarray(t, dtype=np.float64)
    if config.lighting == "day":
        light = np.ones_like(t)
    elif config.lighting == "night":
        light = np.zeros_like(t)
    else:
        light = 1.0 - np.clip(t / config.seconds, 0.0, 1.0)
    return np.round(light * (LIGHT_LEVELS - 1)) / (LIGHT_LEVELS - 1)


def rain_per_second(config: SceneConfig) -> np.ndarray:
    """Rain intensity in [0, 1] for every second: showers of 20-90 s come and go when 'mixed'."""
    n = config.seconds
    if config.weather == "clear":
        return np.zeros(n)
    if config.weather == "rain":
        return np.full(n, 0.8)
    rng = np.random.default_rng([config.seed, 5])
    rain = np.zeros(n)
    t, raining = 0, bool(rng.integers(0, 2))
    while t < n:
        length = int(rng.integers(20, 91))
        rain[t : t + length] = rng.uniform(0.4, 1.0) if raining else 0.0
        t, raining = t + length, not raining
    return rain

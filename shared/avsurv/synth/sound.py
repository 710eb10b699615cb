"""Audio: a mono source signal per event, placed at each camera's microphone, over ambient city sound.

Sources are synthesised once (float64 numpy, 48 kHz) at their level 10 m away. Each camera hears a
source with gain 10 m / distance and constant-power stereo panning by its bearing (mirrored for a
camera on the other side), both updated 100 times a second. The mix is soft-limited with tanh.
Per-second RMS of each event's contribution and of the ambient bed are kept for the ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import signal

from .config import AUDIO_RATE, SceneConfig
from .scene import CAMERA_HEIGHT_M, CameraRig, Event, light_level, rain_per_second

SR = AUDIO_RATE
REF_DISTANCE_M = 10.0
CONTROL_RATE = 100  # gain and pan updates per second
AMBIENT_RMS = 0.012


def _filter(x: np.ndarray, kind: str, freq: float | tuple[float, float], order: int = 2) -> np.ndarray:
    sos = signal.butter(order, freq, btype=kind, fs=SR, output="sos")
    return signal.sosfilt(sos, x)


def _norm(x: np.ndarray, rms: float) -> np.ndarray:
    """Scale to the given RMS (silence stays silence)."""
    current = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    return x * (rms / current) if current > 0 else x


def _tone(freq: np.ndarray, harmonics: tuple[float, ...]) -> np.ndarray:
    """Harmonic tone following a (per-sample) frequency track; harmonics are partial amplitudes."""
    phase = 2 * np.pi * np.cumsum(freq) / SR
    return sum(a * np.sin((k + 1) * phase) for k, a in enumerate(harmonics))


def _wander(n: int, rng: np.random.Generator, depth: float, rate_hz: float = 0.5) -> np.ndarray:
    """Slow random fluctuation around 1 (engine revs, speech level), smooth at the given rate."""
    knots = rng.uniform(1 - depth, 1 + depth, max(2, int(n / SR * rate_hz) + 2))
    return np.interp(np.arange(n), np.linspace(0, n, len(knots)), knots)


def _bursts(n: int, times_s: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Place a short sound at each of the given times."""
    out = np.zeros(n)
    for t in times_s:
        i = int(t * SR)
        if 0 <= i < n:
            seg = template[: n - i]
            out[i : i + len(seg)] += seg
    return out


def _decay(seconds: float, tau: float) -> np.ndarray:
    return np.exp(-np.arange(int(seconds * SR)) / (tau * SR))


def _engine(n: int, rng: np.random.Generator, f0: float, harmonics: tuple[float, ...],
            rumble_hz: float, noise: float) -> np.ndarray:
    freq = f0 * _wander(n, rng, 0.06)
    firing = 1.0 + 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / SR * 0.5)
    return _norm(_tone(freq, harmonics) * firing, 1.0) + noise * _norm(
        _filter(rng.standard_normal(n), "lowpass", rumble_hz), 1.0)


def _bus(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    x = _engine(n, rng, 45.0 * rng.uniform(0.95, 1.05), (1, 0.8, 0.6, 0.5, 0.3, 0.25, 0.15, 0.1), 300, 0.6)
    hiss = _filter(rng.standard_normal(int(0.7 * SR)), "highpass", 3000) * _decay(0.7, 0.25)
    brakes = centre_s + np.array([rng.uniform(-3.0, -0.5), rng.uniform(0.5, 3.0)])
    return _norm(x, 0.06) + _norm(_bursts(n, brakes, hiss), 0.03)


def _truck(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    harmonics = (1, 0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15)
    x = _engine(n, rng, 32.0 * rng.uniform(0.95, 1.05), harmonics, 200, 0.9)
    return _norm(x, 0.08)


def _car(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    x = _engine(n, rng, 95.0 * rng.uniform(0.9, 1.1), (1, 0.5, 0.3, 0.2), 400, 0.4)
    tyres = _filter(rng.standard_normal(n), "bandpass", (700, 4000))
    return _norm(x, 0.025) + _norm(tyres, 0.025)


def _motorbike(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    freq = 140.0 * rng.uniform(0.9, 1.1) * _wander(n, rng, 0.15, 1.0)
    buzz = _tone(freq, tuple(1.0 / k for k in range(1, 16)))  # sawtooth-like: buzzy
    return _norm(buzz, 0.06)


def _bicycle(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    tick = _filter(rng.standard_normal(int(0.01 * SR)), "highpass", 4000) * _decay(0.01, 0.002)
    chain = _bursts(n, np.arange(0, n / SR, 0.09), tick)
    t = np.arange(int(1.2 * SR)) / SR
    bell = sum(a * np.sin(2 * np.pi * f * t) for f, a in ((2900, 1.0), (4150, 0.6), (5620, 0.3)))
    bell = bell * np.exp(-t / 0.35)
    rings = centre_s + rng.uniform(-2.0, 1.0, size=int(rng.integers(1, 3)))
    return _norm(chain, 0.004) + 0.08 * _bursts(n, rings, bell)


def _pedestrian(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    step = _filter(rng.standard_normal(int(0.05 * SR)), "bandpass", (80, 1500)) * _decay(0.05, 0.012)
    steps = sum(_bursts(n, np.arange(rng.uniform(0, 0.5), n / SR, rng.uniform(0.5, 0.6)), step)
                for _ in range(2))
    syllables = np.clip(_wander(n, rng, 1.0, 4.0), 0, None) * (_wander(n, rng, 1.0, 0.3) > 1.0)
    babble = _filter(rng.standard_normal(n), "bandpass", (250, 3000)) * syllables
    return _norm(steps, 0.01) + _norm(babble, 0.012)


def _siren_wail(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    """Police: a tone sweeping 600-1400 Hz and back every ~4 s."""
    t = np.arange(n) / SR
    period = rng.uniform(3.5, 4.5)
    sweep = 0.5 - 0.5 * np.cos(2 * np.pi * t / period)
    return _norm(_tone(600 + 800 * sweep, (1.0, 0.35, 0.15)), 0.15)


def _siren_hilo(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    """Ambulance: two tones alternating (hi-lo) every 0.65 s."""
    t = np.arange(n) / SR
    high = (np.floor(t / 0.65) % 2) == 0
    freq = np.where(high, 960.0, 770.0) * rng.uniform(0.98, 1.02)
    return _norm(_tone(freq, (1.0, 0.4, 0.2)), 0.15)


def _train(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    rumble = _filter(rng.standard_normal(n), "lowpass", 150, order=4)
    clack = _filter(rng.standard_normal(int(0.04 * SR)), "bandpass", (200, 2000)) * _decay(0.04, 0.01)
    joints = np.arange(0, n / SR, 1.1)
    clacks = _bursts(n, np.sort(np.concatenate([joints, joints + 0.18])), clack)
    # Heard over the buildings: the high frequencies are lost.
    return _filter(_norm(rumble, 0.2) + _norm(clacks, 0.12), "lowpass", 2500)


def _forklift(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    t = np.arange(n) / SR
    beeper = np.sin(2 * np.pi * 1050 * t) * ((t % 1.0) < 0.5)
    whine = _tone(2600 * _wander(n, rng, 0.05, 0.3), (1.0,))
    return _norm(beeper, 0.05) + _norm(whine, 0.01)


def _horse(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    t = np.arange(int(0.06 * SR)) / SR
    clop = (np.sin(2 * np.pi * 750 * t) + 0.6 * np.sin(2 * np.pi * 1250 * t)) * np.exp(-t / 0.012)
    stride = rng.uniform(0.8, 0.95)
    beats = np.arange(0, n / SR, stride)[:, None] + np.array([0.0, 0.12, 0.45, 0.57])[None, :]
    return _norm(_bursts(n, beats.ravel(), clop), 0.04)


def _sports_car(n: int, rng: np.random.Generator, centre_s: float) -> np.ndarray:
    t = np.arange(n) / SR
    gear = (t % 2.2) / 2.2  # revs climb through each gear, then drop at the shift
    freq = (170 + 230 * gear) * rng.uniform(0.95, 1.05)
    x = _tone(freq, tuple(1.0 / k for k in range(1, 13)))
    return _norm(x, 0.12) + _norm(_filter(rng.standard_normal(n), "lowpass", 800), 0.03)


def _crash(n: int, rng: np.random.Generator, centre_s: float, impact_s: float) -> np.ndarray:
    before = _car(n, rng, centre_s) * (np.arange(n) / SR < impact_s)
    bang = _filter(rng.standard_normal(int(0.8 * SR)), "lowpass", 6000) * _decay(0.8, 0.12)
    thump = np.sin(2 * np.pi * 55 * np.arange(int(0.8 * SR)) / SR) * _decay(0.8, 0.15)
    t = np.arange(int(0.15 * SR)) / SR
    shards = [np.sin(2 * np.pi * rng.uniform(3000, 8000) * t) * np.exp(-t / 0.03) for _ in range(25)]
    glass = sum(_bursts(n, [impact_s + 0.05 + rng.uniform(0.0, 1.5)], s) for s in shards)
    return before + _bursts(n, [impact_s], 0.5 * bang + 0.5 * thump) + 0.04 * glass


_SOURCES: dict[str, Callable[[int, np.random.Generator, float], np.ndarray]] = {
    "bus": _bus,
    "truck": _truck,
    "car": _car,
    "police": _siren_wail,
    "ambulance": _siren_hilo,
    "motorbike": _motorbike,
    "bicycle": _bicycle,
    "pedestrian": _pedestrian,
    "train": _train,
    "forklift": _forklift,
    "horse": _horse,
    "sports_car": _sports_car,
}


def event_source(event: Event) -> np.ndarray:
    """The event's mono sound at 10 m, from its start to its end, with 0.3 s fades."""
    n = round((event.end_s - event.start_s) * SR)
    rng = np.random.default_rng([event.variant, 7])
    centre_s = abs(event.x0) / event.speed  # when it passes the middle of the scene
    is_crash = event.cls == "crash"
    x = _crash(n, rng, centre_s, event.stop_after_s) if is_crash else _SOURCES[event.cls](n, rng, centre_s)
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.3 * SR))
    return x * fade


@dataclass(frozen=True)
class CameraAudio:
    """One camera's stereo mix and the per-second RMS that the ground truth needs."""

    stereo: np.ndarray  # (2, samples) float32, soft-limited
    ambient_rms: np.ndarray  # (seconds,)
    event_rms: dict[int, np.ndarray]  # event id -> (seconds,) RMS of its contribution at the mic


def _per_second_rms(left: np.ndarray, right: np.ndarray, offset: int, seconds: int) -> np.ndarray:
    idx = (np.arange(len(left)) + offset) // SR
    keep = idx < seconds
    energy = np.bincount(idx[keep], weights=(left[keep] ** 2 + right[keep] ** 2) / 2, minlength=seconds)
    return np.sqrt(energy[:seconds] / SR)


def _gains(event: Event, rig: CameraRig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left and right gains at the camera's microphone, per sample."""
    k = np.arange(0, n + CONTROL_RATE, SR // CONTROL_RATE)
    x = event.x_at(event.start_s + k / SR)
    mic_y = rig.y_cam - rig.mirror * rig.mic_extra_m  # set back behind the camera
    dx = x - rig.x_cam
    distance = np.sqrt(dx**2 + (event.y - mic_y) ** 2 + CAMERA_HEIGHT_M**2)
    gain = REF_DISTANCE_M / np.maximum(distance, 3.0)
    angle = (rig.mirror * dx / distance + 1) * np.pi / 4  # 0 = hard left, pi/2 = hard right
    samples = np.arange(n)
    return np.interp(samples, k, gain * np.cos(angle)), np.interp(samples, k, gain * np.sin(angle))


def ambient(config: SceneConfig, rig_index: int, gain: float) -> np.ndarray:
    """City bed: mains hum, distant traffic, birds by day, rain hiss; (2, samples), own noise per mic."""
    n = config.seconds * SR
    rng = np.random.default_rng([config.seed, 8, rig_index])
    t = np.arange(n) / SR
    per_second = np.arange(config.seconds) + 0.5
    daylight = np.interp(t, per_second, light_level(config, per_second))
    rain = np.interp(t, per_second, rain_per_second(config))
    hum = _norm(np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 100 * t), 0.25)
    out = np.empty((2, n))
    chirp_t = np.arange(int(0.12 * SR)) / SR
    chirp = np.sin(2 * np.pi * (4000 * chirp_t + 9000 * chirp_t**2)) * np.sin(np.pi * chirp_t / 0.12)
    for ch in range(2):
        traffic = _norm(_filter(rng.standard_normal(n), "lowpass", 250), 0.8) * _wander(n, rng, 0.3, 0.1)
        hiss = _norm(_filter(rng.standard_normal(n), "highpass", 2500), 1.2) * rain
        birds = 0.35 * _bursts(n, rng.uniform(0, n / SR, int(config.seconds * 1.5)), chirp) * daylight
        out[ch] = (hum + traffic + hiss + birds) * AMBIENT_RMS * gain
    return out


def mix_camera(config: SceneConfig, rig_index: int, rig: CameraRig, events: list[Event],
               sources: dict[int, np.ndarray]) -> CameraAudio:
    """Everything one camera's microphone hears, with the per-second levels for the ground truth."""
    bed = ambient(config, rig_index, rig.ambient_gain)
    mix = bed.copy()
    ambient_rms = _per_second_rms(bed[0], bed[1], 0, config.seconds)
    event_rms = {}
    for event in events:
        src = sources[event.event_id]
        left, right = _gains(event, rig, len(src))
        offset = round(event.start_s * SR)
        end = min(offset + len(src), mix.shape[1])
        mix[0, offset:end] += (src * left)[: end - offset]
        mix[1, offset:end] += (src * right)[: end - offset]
        event_rms[event.event_id] = _per_second_rms(src * left, src * right, offset, config.seconds)
    return CameraAudio(np.tanh(mix).astype(np.float32), ambient_rms, event_rms)

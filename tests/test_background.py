"""Each camera's running background and noise floor (avsurv.media.background) and the clip tables built with
them."""

import numpy as np
import pytest

from avsurv.constants import N_MELS
from avsurv.media.background import (
    NOISE_FLOOR_QUANTILE,
    Backgrounds,
    RunningBackground,
    RunningNoiseFloor,
    _median,
    minus_floor,
)


def clip(value: int, size: tuple[int, int] = (4, 6)) -> np.ndarray:
    return np.full((5, *size, 3), value, dtype=np.uint8)


def test_first_clip_is_compared_with_its_own_median() -> None:
    frames = np.stack([np.full((4, 6, 3), v, np.uint8) for v in (10, 50, 20, 90, 30)])
    assert (RunningBackground().observe(frames) == 30).all()


def test_background_is_the_median_of_earlier_samples_and_outvotes_a_passing_object() -> None:
    running = RunningBackground(frames=5, stride=1)
    for _ in range(4):
        running.observe(clip(100))
    running.observe(clip(250))  # an object passes for one clip
    assert (running.observe(clip(100)) == 100).all()  # median of 100, 100, 100, 100, 250


def test_background_is_causal_and_samples_every_stride_clips() -> None:
    running = RunningBackground(frames=3, stride=2)
    seen = [int(running.observe(clip(v))[0, 0, 0]) for v in (10, 20, 30, 40, 50, 60, 70)]
    # samples are clips 0, 2, 4, 6 (values 10, 30, 50, 70); each clip sees the samples before it
    assert seen == [10, 10, 10, 10, 10, 30, 30]


def test_ring_forgets_old_samples_so_the_background_follows_the_light() -> None:
    running = RunningBackground(frames=3, stride=1)
    for _ in range(3):
        running.observe(clip(40))
    for _ in range(3):
        running.observe(clip(200))  # lights on
    assert (running.observe(clip(200)) == 200).all()


def test_cameras_are_kept_apart() -> None:
    backgrounds = Backgrounds(frames=3, stride=1)
    for _ in range(3):
        backgrounds.observe("a", clip(10))
        backgrounds.observe("b", clip(90))
    assert (backgrounds.observe("a", clip(0)) == 10).all() and (backgrounds.observe("b", clip(0)) == 90).all()


@pytest.mark.parametrize("count", [1, 2, 5, 32, 300])
def test_median_is_the_lower_middle_value_of_each_pixel(count: int) -> None:
    """Found bit by bit against np.partition's order statistic (uint8 counts up to 255 frames, uint16 beyond)."""
    frames = np.random.default_rng(count).integers(0, 256, (count, 7, 9, 3), dtype=np.uint8)
    frames[:, 0] = 255  # the extremes and ties
    frames[:, 1] = 0
    frames[: count // 2, 2] = 17
    expected = np.sort(frames, axis=0)[(count - 1) // 2]
    np.testing.assert_array_equal(_median(frames), expected)


def test_bad_input_is_refused() -> None:
    running = RunningBackground()
    with pytest.raises(ValueError, match="frames"):
        running.observe(np.zeros((4, 6, 3), np.uint8))
    running.observe(clip(1))
    with pytest.raises(ValueError, match="frame size changed"):
        running.observe(clip(1, (8, 6)))
    with pytest.raises(ValueError, match=">= 1"):
        RunningBackground(frames=0)


def mel(level: float, loud: float | None = None, rng_seed: int = 0) -> np.ndarray:
    """A log-mel [1, 128, 64] at ``level`` dB with small noise, ``loud`` dB in its last 8 frames if given."""
    x = level + np.random.default_rng(rng_seed).normal(0, 1, (1, N_MELS, 64)).astype(np.float32)
    if loud is not None:
        x[..., -8:] = loud
    return x


def floors_by_loop(mels: list[np.ndarray], audio: list[bool], samples: int, stride: int) -> list[np.ndarray]:
    """The noise floor each clip is measured against, written out plainly."""
    levels = [np.array([np.quantile(m[0, b], NOISE_FLOOR_QUANTILE) for b in range(N_MELS)]) for m in mels]
    sampled, out = [], []
    for level, has_audio in zip(levels, audio, strict=True):
        out.append(np.median(np.stack(sampled[-samples:]), axis=0) if sampled else level)
        if has_audio:
            with_audio_before = sum(audio[: len(out) - 1])
            if with_audio_before % stride == 0:
                sampled.append(level)
    return out


def test_noise_floor_matches_a_plain_loop_and_skips_clips_without_audio() -> None:
    mels = [mel(-60 + 3 * (i % 4), loud=-10 if i % 3 == 0 else None, rng_seed=i) for i in range(14)]
    audio = [i not in (2, 7, 8) for i in range(14)]
    running = RunningNoiseFloor(samples=3, stride=2)
    got = [running.observe(m, a) for m, a in zip(mels, audio, strict=True)]
    for mine, plain in zip(got, floors_by_loop(mels, audio, 3, 2), strict=True):
        np.testing.assert_allclose(mine, plain, atol=1e-4)


def test_noise_floor_ignores_loud_moments_and_each_camera_keeps_its_own() -> None:
    floors = Backgrounds(frames=4, stride=1)
    for i in range(4):
        floors.floor("near", mel(-70, loud=-5, rng_seed=i), True)  # a siren in 8 of 64 frames
        floors.floor("far", mel(-50, rng_seed=i), True)  # the same street, heard louder
    near, far = floors.floor("near", mel(-70), True), floors.floor("far", mel(-50), True)
    assert abs(float(near.mean()) + 70.8) < 1.0 and abs(float(far.mean()) + 50.8) < 1.0


def test_minus_floor_is_each_bin_relative_to_its_band_floor() -> None:
    log_mel = np.full((1, N_MELS, 64), -40.0, np.float32)
    log_mel[0, :, :10] = -80.0
    floor = np.linspace(-60.0, -50.0, N_MELS, dtype=np.float32)
    out = minus_floor(log_mel, floor)
    assert out.dtype == np.float32 and out.shape == log_mel.shape
    np.testing.assert_allclose(out[0, :, 0], -80.0 - floor)
    np.testing.assert_allclose(out[0, :, 10], -40.0 - floor)


def test_noise_floor_refuses_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="log-mel"):
        RunningNoiseFloor().observe(np.zeros((N_MELS, 64), np.float32))
    with pytest.raises(ValueError, match=">= 1"):
        RunningNoiseFloor(stride=0)


def test_fg_tables_hear_each_camera_against_its_floor_and_crops_tables_hear_the_raw_log_mel() -> None:
    from avsurv.learning.data import CROPS, table_from_clips
    from avsurv.media.segment import Clip
    from avsurv.models.inputs import ForegroundInput

    frames = np.zeros((5, 224, 398, 3), np.uint8)
    clips = [Clip(camera, float(t), None, camera, True, frames, mel(level, rng_seed=t))
             for t in range(6) for camera, level in (("near", -70.0), ("far", -40.0))]
    raw = table_from_clips(clips, CROPS)
    np.testing.assert_array_equal(raw.log_mel, np.stack([c.log_mel for c in clips]))
    heard = table_from_clips(clips, ForegroundInput(56, 100))
    # two cameras whose ambient differs by 30 dB sound alike once each is measured against its own floor
    assert abs(float(heard.log_mel.mean())) < 2.0
    near, far = (heard.log_mel[[c.camera_id == name for c in clips]] for name in ("near", "far"))
    assert abs(float(near.mean()) - float(far.mean())) < 0.5

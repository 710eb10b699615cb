"""Each camera's running background (avsurv.media.background) and the clip tables built with it."""

import numpy as np
import pytest

from avsurv.media.background import Backgrounds, RunningBackground


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


def test_bad_input_is_refused() -> None:
    running = RunningBackground()
    with pytest.raises(ValueError, match="frames"):
        running.observe(np.zeros((4, 6, 3), np.uint8))
    running.observe(clip(1))
    with pytest.raises(ValueError, match="frame size changed"):
        running.observe(clip(1, (8, 6)))
    with pytest.raises(ValueError, match=">= 1"):
        RunningBackground(frames=0)

"""The trainer builds the next batch's inputs while the model trains on this one (issue 17 item 2), and
trains exactly as if it built them in turn; stopping mid-epoch leaves no build behind."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from avsurv.constants import DEFAULT_PROFILE
from avsurv.learning import train as train_module
from avsurv.learning.data import ClipTable, load_clips
from avsurv.learning.train import Stopped, TrainConfig, Trainer
from avsurv.models.profiles import PROFILES
from avsurv.synth import SceneConfig, generate_scene


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> ClipTable:
    out = tmp_path_factory.mktemp("scene")
    generate_scene(SceneConfig(seed=3, duration_s=16, cameras=1, width=320, height=180, weather="clear"), out,
                   progress=False)
    return load_clips([out / "cam0.mp4"], progress=False, visual=PROFILES[DEFAULT_PROFILE].input)


def quiet(_: str) -> None:
    pass


class InTurn:
    """An executor that builds each batch when asked, in the calling thread: the trainer without overlap."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> InTurn:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, fn, *args) -> Later:
        return Later(fn, args)


class Later:
    """A build run only when its result is asked for."""

    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)


def _trainer(table: ClipTable, **config) -> Trainer:
    return Trainer(table, Path("/nonexistent"), TrainConfig(batch_size=8, epochs=1, seed=5, **config),
                   progress=False, log=quiet)


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_batch_is_built_while_the_model_trains(table: ClipTable, monkeypatch: pytest.MonkeyPatch,
                                                        overlap: bool) -> None:
    if not overlap:
        monkeypatch.setattr(train_module, "ThreadPoolExecutor", InTurn)
    trainer = _trainer(table)
    builds: list[threading.Event] = []
    inputs, train_step = trainer._inputs, trainer._train_step

    def instrumented_inputs(*args):
        builds.append(threading.Event())
        builds[-1].set()
        return inputs(*args)

    seen: list[bool] = []

    def slow_step(batch, *args) -> None:  # waits (at most 2 s) for the next batch's build to start
        deadline = threading.Event()
        step = len(seen)
        for _ in range(20 if overlap else 3):
            if len(builds) > step + 1:
                break
            deadline.wait(0.1)
        seen.append(len(builds) > step + 1)
        train_step(batch, *args)

    monkeypatch.setattr(trainer, "_inputs", instrumented_inputs)
    monkeypatch.setattr(trainer, "_train_step", slow_step)
    trainer.run_epoch(0)
    assert len(seen) >= 3
    assert seen[:-1] == [overlap] * (len(seen) - 1)  # every batch but the last had the next one building
    assert seen[-1] is False


def test_training_with_overlap_is_the_same_as_in_turn(table: ClipTable, monkeypatch: pytest.MonkeyPatch) -> None:
    results = []
    for overlap in (True, False):
        with monkeypatch.context() as patch:
            if not overlap:
                patch.setattr(train_module, "ThreadPoolExecutor", InTurn)
            trainer = _trainer(table)
            stats = trainer.run_epoch(0)
        results.append((stats.loss, [p.detach().clone() for p in trainer.model.parameters()]))
    assert results[0][0] == results[1][0]
    for overlapped, in_turn in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(overlapped, in_turn, rtol=0, atol=0)


def test_stopping_mid_epoch_leaves_no_build_running(table: ClipTable) -> None:
    asked = []

    def stopping() -> bool:
        asked.append(True)
        return len(asked) > 2

    trainer = Trainer(table, Path("/nonexistent"), TrainConfig(batch_size=8, epochs=1, seed=5), progress=False,
                      log=quiet, stopping=stopping)
    with pytest.raises(Stopped):
        trainer.run_epoch(0)
    assert not [t for t in threading.enumerate() if t.name.startswith("train-inputs")]
    assert np.isfinite(trainer.model.encoders["audio"].parameters().__next__().detach().numpy()).all()

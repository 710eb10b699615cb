"""Devices: choosing CPU or CUDA, autocast only on CUDA, and CPU training unchanged by the device setting."""

import contextlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avsurv.cli import main
from avsurv.constants import CLIP_FRAMES_SHAPE
from avsurv.learning.data import ClipTable, table_from_clips
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.modeldir import CHECKPOINT, load_model, save_checkpoint
from avsurv.learning.train import TrainConfig, Trainer
from avsurv.media.clipstore import ClipWriter
from avsurv.media.segment import Clip
from avsurv.models.device import autocast, resolve_device
from avsurv.models.profiles import PROFILES
from avsurv.platform.config import ConfigError, load_settings

CLIPS = 16


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    """One camera's seconds of noise: enough for the default profile to train a few batches quickly."""
    rng = np.random.default_rng(0)
    return [Clip(camera_id="cam0", start=float(i), capture_time=1.7e9 + i, source="synthetic", has_audio=True,
                 frames=rng.integers(0, 256, CLIP_FRAMES_SHAPE, dtype=np.uint8),
                 log_mel=rng.uniform(-80, 0, (1, 128, 64)).astype(np.float32)) for i in range(CLIPS)]


@pytest.fixture(scope="module")
def table(clips) -> ClipTable:
    return table_from_clips(clips, PROFILES[TrainConfig().profile].input)


@pytest.fixture(scope="module")
def clip_dir(clips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clips") / "cam0"
    with ClipWriter(out) as writer:
        for clip in clips:
            writer.add(clip)
    return out


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_is_cuda_when_torch_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")  # a device name only: nothing is allocated
    assert resolve_device("cuda") == torch.device("cuda")


def test_cuda_without_a_gpu_and_unknown_names_are_refused(no_cuda):
    with pytest.raises(ValueError, match="'cuda' was asked for but torch finds no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, got 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="device must be one of"):
        TrainConfig(device="gpu")


def test_only_cuda_autocasts():
    assert isinstance(autocast(torch.device("cpu"), enabled=True), contextlib.nullcontext)
    assert isinstance(autocast(torch.device("cuda"), enabled=False), contextlib.nullcontext)


def test_cpu_training_is_the_same_whatever_the_device_and_bf16_settings(table, tmp_path, no_cuda):
    default = TrainConfig(epochs=1, batch_size=8)
    runs = [Trainer(table, tmp_path / name, config, progress=False, log=quiet).run()
            for name, config in (("default", default), ("cpu", replace(default, device="cpu")),
                                 ("bf16", replace(default, device="cpu", bf16=True)))]
    assert runs[0].sha256 == runs[1].sha256 == runs[2].sha256
    calibrations = {(tmp_path / name / "calibration.json").read_text().replace(run.sha256, "")
                    for name, run in zip(("default", "cpu", "bf16"), runs, strict=True)}
    assert len(calibrations) == 1  # the embeddings after training too


def test_resume_may_change_the_device(table, tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, seed=5)
    straight = Trainer(table, tmp_path / "a", config, progress=False, log=quiet).run()
    interrupted = Trainer(table, tmp_path / "b", config, progress=False, log=quiet)
    history = [interrupted.run_epoch(0)]
    saved = asdict(replace(config, device="cuda"))  # as if the first epoch had run on a GPU
    save_checkpoint(tmp_path / "b", interrupted._modules(), interrupted.optimizers,
                    {"epoch": 0, "config": saved, "history": [asdict(h) for h in history]})
    resumed = Trainer(table, tmp_path / "b", replace(config, device="cpu"), progress=False, log=quiet).run(resume=True)
    assert resumed.sha256 == straight.sha256
    state = json.loads((tmp_path / "b" / CHECKPOINT / "state.json").read_text())
    assert state["progress"]["config"]["device"] == "cpu"


def test_train_and_embed_commands_take_a_device(clip_dir, tmp_path, capsys, no_cuda):
    model_dir = tmp_path / "m"
    assert main(["train", str(clip_dir), "--out", str(model_dir), "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--no-progress"]) == 0
    _, config = load_model(model_dir)
    assert config["hyperparameters"]["device"] == "cpu" and config["hyperparameters"]["bf16"] is False
    out = tmp_path / "cam0.npz"
    assert main(["embed", str(clip_dir), "--model", str(model_dir), "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    assert EmbeddingSet.load(out).z_v.shape == (CLIPS, 512)
    # Refused before any clip is read: the input does not even exist.
    assert main(["train", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "x"), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", str(clip_dir), "--model", str(model_dir), "--out", str(out), "--device", "gpu"])


def test_platform_device_setting():
    assert load_settings(environ={}).device == "auto"
    assert load_settings(environ={"AVSURV_DEVICE": "cpu"}).device == "cpu"
    with pytest.raises(ConfigError, match="device"):
        load_settings(environ={"AVSURV_DEVICE": "gpu"})

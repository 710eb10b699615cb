"""Devices and precision: choosing CPU or CUDA, bf16 autocast where asked (``auto``: a CPU with Intel AMX), CPU
training in float32 unchanged by the device setting, and the inference copy the services embed with."""

import contextlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avsurv.cli import main
from avsurv.constants import CLIP_FRAMES_SHAPE, PRECISIONS
from avsurv.learning.data import ClipTable, table_from_clips
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.encode import encode_table
from avsurv.learning.modeldir import CHECKPOINT, load_model, save_checkpoint
from avsurv.learning.train import TrainConfig, Trainer
from avsurv.media.clipstore import ClipWriter
from avsurv.media.segment import Clip
from avsurv.models import build_model, inference_copy
from avsurv.models import model as model_module
from avsurv.models.device import autocast, cpu_has_amx, resolve_device, resolve_precision
from avsurv.models.model import ConvReLU
from avsurv.models.profiles import PROFILES
from avsurv.platform.config import ConfigError, load_settings
from avsurv.platform.model_versions import LoadedModel

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


def test_autocast_is_bf16_on_either_device_when_enabled():
    assert isinstance(autocast(torch.device("cpu"), enabled=False), contextlib.nullcontext)
    assert isinstance(autocast(torch.device("cuda"), enabled=False), contextlib.nullcontext)
    with autocast(torch.device("cpu"), enabled=True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_is_bf16_only_on_a_cpu_with_amx(monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_has_amx() is amx
    assert resolve_precision("auto", torch.device("cpu"), "fg") is amx
    assert resolve_precision("auto", torch.device("cpu"), "tiny") is False  # its training measured slower
    assert resolve_precision("auto", torch.device("cuda"), "fg") is False  # fg measured slower on an H200
    for device in ("cpu", "cuda"):
        for profile in PROFILES:
            assert resolve_precision("bf16", torch.device(device), profile) is True
            assert resolve_precision("fp32", torch.device(device), profile) is False
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"), "fg")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_cpu_training_in_fp32_is_the_same_whatever_the_device_setting(table, tmp_path, no_cuda, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # auto: fp32 on this CPU
    default = TrainConfig(epochs=1, batch_size=8)
    runs = [Trainer(table, tmp_path / name, config, progress=False, log=quiet).run()
            for name, config in (("default", default), ("cpu", replace(default, device="cpu")),
                                 ("fp32", replace(default, device="cpu", precision="fp32")))]
    assert runs[0].sha256 == runs[1].sha256 == runs[2].sha256
    calibrations = {(tmp_path / name / "calibration.json").read_text().replace(run.sha256, "")
                    for name, run in zip(("default", "cpu", "fp32"), runs, strict=True)}
    assert len(calibrations) == 1  # the embeddings after training too


def test_bf16_training_on_cpu_follows_fp32(table, tmp_path, no_cuda):
    """Same seed, same batches: bf16 autocast changes the weights only by its rounding."""
    config = TrainConfig(epochs=1, batch_size=8, device="cpu")
    trainers = {precision: Trainer(table, tmp_path / precision, replace(config, precision=precision),
                                   progress=False, log=quiet) for precision in ("fp32", "bf16")}
    losses = {precision: trainer.run_epoch(0).loss for precision, trainer in trainers.items()}
    assert trainers["bf16"].bf16 and not trainers["fp32"].bf16
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    z = {precision: encode_table(trainer.model, table, bf16=trainer.bf16)[0] for precision, trainer in trainers.items()}
    cosine = (z["fp32"] * z["bf16"]).sum(1) / np.linalg.norm(z["fp32"], axis=1) / np.linalg.norm(z["bf16"], axis=1)
    assert cosine.min() > 0.99


def test_the_inference_copy_folds_batchnorm_and_embeds_the_same(table):
    torch.manual_seed(3)
    model = build_model(TrainConfig().profile)
    for norm in model.modules():  # statistics as training leaves them, not the identity of a fresh layer
        if isinstance(norm, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)
    copy = inference_copy(model)
    norms = [type(m) for m in copy.encoders["visual"].modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms == [] and not copy.training and model.training  # every 3D norm folded; the original kept
    expected, folded = encode_table(model, table), encode_table(copy, table)
    for a, b in zip(expected, folded, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_the_inference_copy_runs_each_convolution_with_its_relu():
    copy = inference_copy(build_model("fg"))
    fused = [type(m.conv).__name__ for m in copy.modules() if isinstance(m, ConvReLU)]
    assert fused == ["Conv3d"] * 4 + ["Conv2d"]  # the fg blocks, then the audio stem
    assert not any(isinstance(m, torch.nn.ReLU) for m in copy.encoders["visual"].modules())


@pytest.mark.parametrize(("conv", "shape"), [
    (torch.nn.Conv3d(3, 8, (1, 3, 3), padding=(0, 1, 1)), (2, 3, 5, 12, 20)),  # per frame, as 2D
    (torch.nn.Conv3d(8, 16, 3, (1, 2, 2), 1), (2, 8, 5, 12, 20)),
    (torch.nn.Conv2d(1, 8, 3, 2, 1), (2, 1, 16, 12)),
])
def test_conv_relu_is_the_convolution_then_its_relu(conv, shape):
    torch.manual_seed(0)
    fused = ConvReLU(conv).eval()
    x = torch.randn(shape)
    if x.ndim == 5:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        expected = torch.relu(conv(x))
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)
        with autocast(torch.device("cpu"), True):
            eager_bf16, fused_bf16 = torch.relu(conv(x)), fused(x)
    assert fused_bf16.dtype == eager_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(fused_bf16.float(), eager_bf16.float(), rtol=2e-2, atol=2e-2)
    trained = fused(x)  # with gradients: the plain convolution and ReLU, which autograd knows
    assert torch.equal(trained, torch.relu(conv(x)))
    trained.sum().backward()
    assert conv.weight.grad is not None


@pytest.mark.parametrize("missing", ["onednn", "fused op", "bf16"])
def test_conv_relu_without_onednn_is_the_plain_pair(monkeypatch, missing):
    conv = torch.nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1))
    if missing == "fused op":  # a torch that renamed or dropped its internal op
        monkeypatch.setattr(model_module, "_FUSED_CONV", None)
    else:
        def refuse(*args: object) -> None:
            raise AssertionError("the fused convolution ran")
        monkeypatch.setattr(model_module, "_FUSED_CONV", refuse)
        if missing == "onednn":
            monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        else:  # oneDNN without bf16 on this CPU
            monkeypatch.setattr(model_module, "_FUSED_BF16", False)
    x = torch.randn(1, 3, 2, 6, 8)
    with torch.no_grad(), autocast(torch.device("cpu"), missing == "bf16"):
        assert torch.equal(ConvReLU(conv)(x), torch.relu(conv(x)))
    with pytest.raises(ValueError, match="cannot fuse"):
        ConvReLU(torch.nn.Conv2d(1, 1, 3, padding="same"))


@pytest.mark.parametrize("amx", [True, False])
def test_a_served_model_embeds_in_the_precision_asked(monkeypatch, clips, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    model, config = build_model(TrainConfig().profile).eval(), {"profile": TrainConfig().profile, "method": "t"}
    served = {precision: LoadedModel("v", model, config, precision=precision) for precision in PRECISIONS}
    assert (served["auto"].bf16, served["fp32"].bf16, served["bf16"].bf16) == (amx, False, True)
    z = {precision: loaded.embed(clips[:4])[0] for precision, loaded in served.items()}
    assert np.array_equal(z["auto"], z["bf16" if amx else "fp32"]) and not np.array_equal(z["fp32"], z["bf16"])


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
    assert config["hyperparameters"]["device"] == "cpu" and config["hyperparameters"]["precision"] == "auto"
    out = tmp_path / "cam0.npz"
    assert main(["embed", str(clip_dir), "--model", str(model_dir), "--out", str(out), "--device", "cpu",
                 "--precision", "fp32", "--no-progress"]) == 0
    assert EmbeddingSet.load(out).z_v.shape == (CLIPS, 512)
    in_bf16 = tmp_path / "bf16.npz"
    assert main(["embed", str(clip_dir), "--model", str(model_dir), "--out", str(in_bf16), "--precision", "bf16",
                 "--no-progress"]) == 0
    z, z_bf16 = EmbeddingSet.load(out).z_v, EmbeddingSet.load(in_bf16).z_v
    assert not np.array_equal(z, z_bf16) and np.allclose(z, z_bf16, atol=0.05 * np.abs(z).max())
    # Refused before any clip is read: the input does not even exist.
    assert main(["train", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "x"), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", str(clip_dir), "--model", str(model_dir), "--out", str(out), "--device", "gpu"])


def test_platform_device_setting():
    assert load_settings(environ={}).device == "auto"
    assert load_settings(environ={"AVSURV_DEVICE": "cpu"}).device == "cpu"
    assert load_settings(environ={}).precision == "auto"
    assert load_settings(environ={"AVSURV_PRECISION": "fp32"}).precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        load_settings(environ={"AVSURV_PRECISION": "fp16"})
    with pytest.raises(ConfigError, match="device"):
        load_settings(environ={"AVSURV_DEVICE": "gpu"})

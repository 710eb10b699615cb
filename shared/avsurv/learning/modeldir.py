"""A trained model is a directory: safetensors weights, a JSON config and the weights' sha256.

- ``model.safetensors``: the encoders' state dict (including the audio normalisation buffers);
- ``config.json``: profile, method, hyper-parameters, audio normalisation stats, training data summary,
  per-epoch history;
- ``model.sha256``: sha256 of ``model.safetensors``; :func:`load_model` refuses weights that differ;
- ``calibration.json``: the anomaly threshold fitted on the training clips (written by training);
- ``camera_stats.json``: each training camera's embedding mean and variance, and the training clips'
  pooled, for per-camera normalization (``avsurv.learning.normalization``, written by training);
- ``checkpoint/``: the training state of the last finished epoch, for ``--resume``.
No pickles: tensors go through safetensors, everything else through JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from avsurv.errors import ModelError
from avsurv.models import AudioVisualModel, build_model
from avsurv.models.profiles import PROFILES

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CHECKSUM = "model.sha256"
CALIBRATION = "calibration.json"
CAMERA_STATS = "camera_stats.json"
CHECKPOINT = "checkpoint"
MODEL_FORMAT = "avsurv-model-v2"
"""The config's ``format``. v2: the ``fg`` profile hears each clip relative to its camera's noise floor
(:mod:`avsurv.media.background`); a v1 model of that profile was trained on the raw log-mel and is refused.
v1 models of the other profiles load unchanged."""



def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, where safetensors files are written from (weights may live on a GPU)."""
    return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}


def save_model(model: AudioVisualModel, directory: Path, config: dict[str, Any]) -> str:
    """Writes weights, config and checksum; returns the sha256."""
    return save_weights(model, directory, config)


def save_weights(module: torch.nn.Module, directory: Path, config: dict[str, Any]) -> str:
    """Writes any module's state dict, ``config`` (plus the sha256) and the checksum; returns the sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(module.state_dict()), directory / WEIGHTS)
    checksum = sha256_of(directory / WEIGHTS)
    (directory / CONFIG).write_text(json.dumps({**config, "sha256": checksum}, indent=2) + "\n")
    (directory / CHECKSUM).write_text(f"{checksum}  {WEIGHTS}\n")
    return checksum


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise ModelError(f"{directory} is not a model directory (no {CONFIG})")
    return json.loads(path.read_text())


def model_w(config: dict[str, Any]) -> float:
    """The Eq. 5 weight a model was trained with (its config's hyperparameters): its anomaly scores,
    calibration and search distances are on this scale."""
    try:
        w = float(config["hyperparameters"]["w"])
    except (KeyError, TypeError, ValueError):
        raise ModelError("the model's config has no hyperparameters.w (the Eq. 5 weight it was trained with)") from None
    if not 0.0 <= w <= 1.0:
        raise ModelError(f"the model's Eq. 5 weight w must lie in [0, 1], got {w}")
    return w


def load_model(directory: str | Path) -> tuple[AudioVisualModel, dict[str, Any]]:
    """The model in eval mode and its config, after checking the weights against ``model.sha256`` and that
    its inputs are the ones this version makes for its profile."""
    state, config = load_verified(directory)
    if config.get("format") != MODEL_FORMAT and PROFILES[config["profile"]].input.needs_background:
        raise ModelError(f"{directory} is a {config.get('format')!r} model of the {config['profile']!r} profile, "
                         f"trained on sounds as heard before {MODEL_FORMAT} (the raw log-mel, not relative to "
                         "each camera's noise floor): train it again")
    model = build_model(config["profile"])
    model.load_state_dict(state)
    return model.eval(), config


def load_verified(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and config of a directory written by :func:`save_weights`, after checking the weights
    against ``model.sha256``."""
    directory = Path(directory)
    config = read_config(directory)
    weights, checksum_file = directory / WEIGHTS, directory / CHECKSUM
    if not weights.is_file() or not checksum_file.is_file():
        raise ModelError(f"{directory} lacks {WEIGHTS} or {CHECKSUM}")
    expected = checksum_file.read_text().split()[0]
    actual = sha256_of(weights)
    if actual != expected:
        raise ModelError(f"{weights} does not match its checksum ({actual[:12]}... != {expected[:12]}...)")
    return load_file(weights), config


def _flatten_optimizer(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as tensors (safetensors) and plain values (JSON)."""
    state = optimizer.state_dict()
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        plain["state"][str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{name}.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(index)][key] = value
    return tensors, plain


def _restore_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict, plain: dict) -> None:
    state: dict[int, dict] = {}
    for index, values in plain["state"].items():
        state[int(index)] = dict(values)
    prefix = f"{name}."
    for key, tensor in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(index), {})[field] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": plain["param_groups"]})


def save_checkpoint(
    directory: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
    progress: dict[str, Any],
) -> None:
    """Everything needed to resume: module weights, optimizer states, RNG state and progress."""
    folder = directory / CHECKPOINT
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"module.{name}.{key}": value
        for name, module in modules.items()
        for key, value in _contiguous(module.state_dict()).items()
    }
    plain: dict[str, Any] = {"progress": progress, "optimizers": {}}
    for name, optimizer in optimizers.items():
        optimizer_tensors, plain["optimizers"][name] = _flatten_optimizer(f"optimizer.{name}", optimizer)
        tensors.update(optimizer_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, folder / "state.safetensors")
    (folder / "state.json").write_text(json.dumps(plain) + "\n")


def load_checkpoint(
    directory: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, Any]:
    """Restores what :func:`save_checkpoint` wrote; returns the saved progress."""
    folder = directory / CHECKPOINT
    if not (folder / "state.json").is_file():
        raise ModelError(f"nothing to resume: {folder} holds no checkpoint")
    tensors = load_file(folder / "state.safetensors")
    plain = json.loads((folder / "state.json").read_text())
    for name, module in modules.items():
        prefix = f"module.{name}."
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, optimizer in optimizers.items():
        _restore_optimizer(f"optimizer.{name}", optimizer, tensors, plain["optimizers"][name])
    torch.set_rng_state(tensors["rng.torch"])
    return plain["progress"]

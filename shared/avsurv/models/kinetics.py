"""Initialising F_v from the published Kinetics-400 X3D-M weights (Feichtenhofer 2020; PyTorchVideo model
zoo, e.g. ``X3D_M.pyth``) when a user has the file locally, as EPG does (Wang et al. 2025, section 4.1).

Everything but the 400-class ``blocks.5.proj`` is copied by name; the 512-d projection keeps its fresh
initialisation. Torch checkpoints are read with ``weights_only=True``: no arbitrary unpickling.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from avsurv.models.model import AudioVisualModel
from avsurv.models.x3d import X3D

HEAD_PREFIXES = ("blocks.5.proj.", "blocks.5.standardize.")
"""Our head: the 512-d projection and the optional standardiser, which no Kinetics checkpoint has."""
"""The classifier: 400 classes in the checkpoint, the 512-d embedding in our model."""

_WRAPPER_PREFIXES = ("module.", "model.")
"""Added by DataParallel / DistributedDataParallel and by training wrappers."""

_TORCH_SUFFIXES = (".pyth", ".pt", ".pth")


@dataclass(frozen=True)
class KineticsLoadReport:
    """What :func:`load_kinetics_x3d` did, by state-dict key."""

    loaded: tuple[str, ...]
    """Model keys set from the checkpoint."""
    skipped: tuple[str, ...]
    """Checkpoint keys not used: the 400-class head and anything our model lacks."""
    fresh: tuple[str, ...]
    """Model keys left at their initialisation (the 512-d projection)."""


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _read_torch(path: Path) -> object:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a weights-only torch checkpoint: {first_line}") from error
    if isinstance(checkpoint, dict) and "model_state" in checkpoint:
        return checkpoint["model_state"]  # PyTorchVideo / PySlowFast training checkpoints
    return checkpoint


def read_kinetics_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with wrapper prefixes removed, from safetensors or a torch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        try:
            state: object = load_file(path)
        except SafetensorError as error:
            raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    elif path.suffix in _TORCH_SUFFIXES:
        state = _read_torch(path)
    else:
        raise ValueError(f"{path}: expected .safetensors or one of {', '.join(_TORCH_SUFFIXES)}")
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    stripped = {_strip_wrappers(key): value for key, value in state.items() if torch.is_tensor(value)}
    if len(stripped) != sum(torch.is_tensor(value) for value in state.values()):
        raise ValueError(f"{path} has keys that collide once 'module.'/'model.' prefixes are removed")
    return stripped


def load_kinetics_x3d(model: X3D | AudioVisualModel, path: str | Path) -> KineticsLoadReport:
    """Copies every backbone tensor of a Kinetics-400 X3D-M checkpoint into ``model``'s F_v.

    Raises ValueError (one line) when the checkpoint lacks a backbone key or a shape differs, e.g. a
    checkpoint of another X3D size or the ``tiny`` profile's encoder; the model is unchanged then.
    """
    encoder = model.encoders["visual"] if isinstance(model, AudioVisualModel) else model
    checkpoint = read_kinetics_state(path)
    target = encoder.state_dict()
    backbone = [key for key in target if not key.startswith(HEAD_PREFIXES)]
    missing = [key for key in backbone if key not in checkpoint]
    if missing:
        raise ValueError(
            f"{path} lacks {len(missing)} of the {len(backbone)} X3D backbone tensors, e.g. {missing[0]}"
        )
    for key in backbone:
        found, expected = list(checkpoint[key].shape), list(target[key].shape)
        if found != expected:
            raise ValueError(f"{path}: {key} has shape {found}, the model expects {expected}")
    encoder.load_state_dict({**target, **{key: checkpoint[key] for key in backbone}})
    loaded = set(backbone)
    return KineticsLoadReport(
        loaded=tuple(backbone),
        skipped=tuple(key for key in checkpoint if key not in loaded),
        fresh=tuple(key for key in target if key.startswith(HEAD_PREFIXES)),
    )

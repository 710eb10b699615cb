"""The pseudo-Siamese pair (F_v, F_a) of EPG (Wang et al. 2025), with dict inputs and outputs keyed by
modality as in ImageBind and PyTorchVideo's multimodal models."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from avsurv.constants import MODALITIES
from avsurv.models.audio import AudioEncoder
from avsurv.models.foreground import ForegroundConfig, ForegroundEncoder
from avsurv.models.inputs import VisualInput
from avsurv.models.profiles import PROFILES
from avsurv.models.x3d import X3D


class AudioVisualModel(nn.Module):
    """``encoders["visual"]`` (video as the profile's input makes it, :mod:`avsurv.models.inputs`:
    ``[B, 3, 5, 224, 224]`` crops in [0, 1] for ``paper`` and ``tiny``) and ``encoders["audio"]`` (log-mel
    ``[B, 1, 128, 64]`` in dB), both into the shared 512-d space, not L2-normalised."""

    @property
    def visual_input(self) -> VisualInput:
        return PROFILES[self.profile].input

    def __init__(self, visual: X3D | ForegroundEncoder, audio: AudioEncoder, profile: str) -> None:
        super().__init__()
        self.profile = profile
        self.encoders = nn.ModuleDict({"visual": visual, "audio": audio})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Encodes whichever of ``"visual"`` and ``"audio"`` are in ``inputs``; other keys are an error
        so that a misspelt modality is not silently dropped."""
        unknown = sorted(set(inputs) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; expected some of {list(MODALITIES)}")
        outputs: dict[str, torch.Tensor] = {}
        for modality, tensor in inputs.items():
            outputs.update(self.encoders[modality](tensor))
        return outputs


def build_model(profile: str) -> AudioVisualModel:
    """A freshly initialised model of the named profile (see :data:`PROFILES`)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown model profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    config = PROFILES[profile]
    visual = ForegroundEncoder(config.visual) if isinstance(config.visual, ForegroundConfig) else X3D(config.visual)
    return AudioVisualModel(visual, AudioEncoder(config.audio), profile)


def count_parameters(module: nn.Module) -> int:
    """All parameters, trainable or not (buffers excluded), as papers count them."""
    return sum(parameter.numel() for parameter in module.parameters())


def inference_copy(model: AudioVisualModel) -> AudioVisualModel:
    """An eval-mode copy whose BatchNorms that directly follow a convolution in a ``Sequential`` are folded into
    it: at inference their statistics are constants, so one convolution does both (the same embeddings to
    float rounding; ``fg`` embeds 1.3x faster in float32). ``model`` itself is left as it is."""
    folded = copy.deepcopy(model).eval()
    for sequence in folded.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if isinstance(conv, nn.Conv2d | nn.Conv3d) and isinstance(norm, nn.BatchNorm2d | nn.BatchNorm3d):
                sequence[i], sequence[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return folded

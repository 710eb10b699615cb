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
    """An eval-mode copy for embedding: the BatchNorms that directly follow a convolution in a ``Sequential`` are
    folded into it (at inference their statistics are constants, so one convolution does both: the same
    embeddings to float rounding; ``fg`` embeds 1.3x faster in float32), and a convolution followed by a ReLU
    becomes a :class:`ConvReLU`. ``model`` itself is left as it is."""
    folded = copy.deepcopy(model).eval()
    for sequence in folded.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if isinstance(conv, nn.Conv2d | nn.Conv3d) and isinstance(norm, nn.BatchNorm2d | nn.BatchNorm3d):
                sequence[i], sequence[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
        for i in range(len(sequence) - 2):  # conv, folded norm, ReLU
            if (ConvReLU.fusable(sequence[i]) and isinstance(sequence[i + 1], nn.Identity)
                    and isinstance(sequence[i + 2], nn.ReLU)):
                sequence[i], sequence[i + 2] = ConvReLU(sequence[i]), nn.Identity()
    return folded


_FUSED_CONV = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
"""oneDNN's convolution with a pointwise operation applied to its output (torch-internal: the op torch's own
compiler emits for CPUs); None in a torch without it, where :class:`ConvReLU` is the plain pair."""
_FUSED_BF16 = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
"""Whether oneDNN runs bf16 convolutions on this CPU."""


class ConvReLU(nn.Module):
    """``relu(conv(x))`` as one oneDNN primitive on a CPU when no gradient is wanted: the ReLU is applied as the
    convolution writes its output instead of in a second pass (in bf16 that pass took 17 % of ``fg``'s
    embedding: torch's CPU ReLU converts every value to float and back). A 3D convolution whose temporal
    kernel is 1 runs as a 2D one over every frame (``fg``'s first layer: 1.4x). Elsewhere (CUDA, training, a
    torch without oneDNN) it is the convolution then the ReLU. Same results, to the precision's rounding."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d) -> None:
        if not self.fusable(conv):
            raise ValueError(f"cannot fuse {conv}")
        super().__init__()
        self.conv = conv
        self.per_frame = isinstance(conv, nn.Conv3d) and (conv.kernel_size[0], conv.stride[0], conv.padding[0]) == (
            1, 1, 0)

    @staticmethod
    def fusable(conv: nn.Module) -> bool:
        return (isinstance(conv, nn.Conv2d | nn.Conv3d) and conv.padding_mode == "zeros"
                and isinstance(conv.padding, tuple))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        if not _onednn_fuses(x, dtype):
            return torch.relu_(self.conv(x))
        conv, x = self.conv, x.to(dtype)
        weight, bias = conv.weight.to(dtype), None if conv.bias is None else conv.bias.to(dtype)
        if not self.per_frame:
            return _FUSED_CONV(x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                               conv.groups, "relu", [], "")
        # [B, C, T, H, W] -> [B*T, C, H, W]: a view, not a copy, of a channels-last video (and back).
        b, c, t, h, w = x.shape
        frames = _FUSED_CONV(
            x.transpose(1, 2).reshape(b * t, c, h, w), weight[:, :, 0], bias, list(conv.padding[1:]),
            list(conv.stride[1:]), list(conv.dilation[1:]), conv.groups, "relu", [], "")
        return frames.reshape(b, t, *frames.shape[1:]).transpose(1, 2)


def _onednn_fuses(x: torch.Tensor, dtype: torch.dtype) -> bool:
    return (x.device.type == "cpu" and not torch.is_grad_enabled() and _FUSED_CONV is not None
            and torch.backends.mkldnn.is_available()
            and (dtype == torch.float32 or (dtype == torch.bfloat16 and _FUSED_BF16)))

"""Where training and embedding run (CUDA when present, or as asked) and in which precision.

bf16 autocast runs the encoders' forward passes (and so their backward) in bfloat16 while losses stay
float32. ``auto`` turns it on only where it measured faster: for the ``fg`` profile on a CPU with Intel
AMX, whose tile unit multiplies bf16 matrices (it trains 2.3x and embeds 2.2x faster on this project's 2-core
machine, docs/RESULTS.md); not for ``tiny`` (its training measured 0.7x) nor ``paper`` (not measured), not on
CUDA (slower for ``fg`` on an H200) nor on CPUs without AMX (not measured). Embeddings move by about 1 % of
their norm (cosine above 0.999 to float32's).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from avsurv.constants import DEVICES, PRECISIONS
from avsurv.models.profiles import PROFILES


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if available, else CPU; ``cuda`` without CUDA is refused rather than silently slow."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch finds no CUDA GPU here; ask for 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (bf16 matrix multiplies in hardware)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: absent means unknown
    return bool(probe and probe())


def resolve_precision(name: str, device: torch.device, profile: str) -> bool:
    """Whether the ``profile``'s encoders run under bf16 autocast on ``device``: ``bf16`` always, ``fp32`` never,
    ``auto`` on a CPU with AMX for a profile measured faster there (:attr:`Profile.amx_bf16`)."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return device.type == "cpu" and PROFILES[profile].amx_bf16 and cpu_has_amx()
    return name == "bf16"


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[object]:
    """bf16 autocast on ``device`` when ``enabled``; a no-op otherwise."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

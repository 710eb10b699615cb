"""Where training and embedding run: CUDA when present (``auto``), or as asked; bf16 autocast on CUDA only.

On CPU nothing is autocast, so CPU results stay bit-identical whatever the device setting says.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from avsurv.constants import DEVICES


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if available, else CPU; ``cuda`` without CUDA is refused rather than silently slow."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch finds no CUDA GPU here; ask for 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[object]:
    """bf16 autocast when ``enabled`` on CUDA; a no-op otherwise (CPU is never autocast)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

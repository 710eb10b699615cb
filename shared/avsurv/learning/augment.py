"""Random views of a batch of log-mels for the audio encoder's views term (:mod:`avsurv.learning.losses.views`).

Each view disturbs what should not change a sound's class: where in the second it falls (a circular shift in
time), a small level change, another sound of the street underneath it, and a missing band of frequencies.
"""

from __future__ import annotations

import torch

VIEW_GAIN_DB = 3.0
"""Each view's level moves by up to this many dB either way."""
VIEW_MIX_BELOW_DB = 10.0
"""Another clip of the batch is added this many dB below the clip (a power sum)."""
VIEW_MASK_MELS = 16
"""At most this many adjacent mel bands are replaced by the clip's mean level."""


def sound_view(log_mel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of ``log_mel`` [B, 1, M, T] (dB): shifted in time, gain, another clip of the batch
    mixed underneath, one band masked. Same shape; ``generator`` (on the CPU) makes it reproducible."""
    if log_mel.ndim != 4 or log_mel.shape[1] != 1 or log_mel.shape[2] <= VIEW_MASK_MELS:
        raise ValueError(f"log-mel must be [B, 1, M, T] with M > {VIEW_MASK_MELS}, got {list(log_mel.shape)}")
    batch, _, mels, frames = log_mel.shape
    shift = int(torch.randint(0, frames, (1,), generator=generator))
    gain = (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * VIEW_GAIN_DB
    view = torch.roll(log_mel, shift, dims=3) + gain.to(log_mel.device)
    under = view[torch.randperm(batch, generator=generator).to(log_mel.device)] - VIEW_MIX_BELOW_DB
    view = 10 * torch.log10(10 ** (view / 10) + 10 ** (under / 10))
    first = torch.randint(0, mels - VIEW_MASK_MELS, (batch, 1), generator=generator)
    width = torch.randint(0, VIEW_MASK_MELS + 1, (batch, 1), generator=generator)
    band = torch.arange(mels)[None]
    masked = ((band >= first) & (band < first + width)).to(log_mel.device)[:, None, :, None]
    return torch.where(masked, view.mean(dim=(2, 3), keepdim=True), view)

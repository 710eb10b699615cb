"""The random views of a batch's log-mels that the audio encoder's views term compares."""

import pytest
import torch

from avsurv.learning.augment import VIEW_GAIN_DB, VIEW_MASK_MELS, VIEW_MIX_BELOW_DB, sound_view


def batch(seed: int = 0) -> torch.Tensor:
    return 20 * torch.rand(6, 1, 128, 64, generator=torch.Generator().manual_seed(seed))


def test_a_view_keeps_the_shape_and_is_reproducible_from_its_generator():
    log_mel = batch()
    first = sound_view(log_mel, torch.Generator().manual_seed(1))
    assert first.shape == log_mel.shape and first.dtype == log_mel.dtype
    assert torch.equal(first, sound_view(log_mel, torch.Generator().manual_seed(1)))
    assert not torch.allclose(first, sound_view(log_mel, torch.Generator().manual_seed(2)))
    assert torch.equal(log_mel, batch())  # the input is left as it was


def test_a_silent_batch_gets_only_the_gain_and_the_mix_underneath():
    # Every clip the same constant level L: the shift and the mask (the clip's mean, L) change nothing, the mix
    # adds the other clip 10 dB below, so each clip sounds at its gain + L + 10 log10(1 + 10^-1).
    level = torch.full((5, 1, 128, 64), 30.0)
    view = sound_view(level, torch.Generator().manual_seed(3))
    per_clip = view.flatten(1)
    assert torch.allclose(per_clip, per_clip[:, :1].expand_as(per_clip))  # still constant within each clip
    mixed = 10 * torch.log10(torch.tensor(1 + 10 ** (-VIEW_MIX_BELOW_DB / 10)))
    gains = per_clip[:, 0] - 30.0
    assert (gains.abs() <= VIEW_GAIN_DB + mixed + 1e-4).all() and (gains >= -VIEW_GAIN_DB).all()


def test_at_most_one_band_of_each_clip_is_masked_to_one_level():
    # Every band varies in time, so a row flat in time is a masked one: at most VIEW_MASK_MELS of them per
    # clip, next to one another, all at one level (the clip's mean).
    noisy = batch(5)[:4]
    view = sound_view(noisy, torch.Generator().manual_seed(4))
    widths = []
    for clip in view[:, 0]:
        flat = (clip.std(dim=1) < 1e-5).nonzero().flatten()
        widths.append(len(flat))
        assert len(flat) <= VIEW_MASK_MELS
        if len(flat) > 1:
            assert (flat.diff() == 1).all() and torch.allclose(clip[flat], clip[flat[0], 0])
    assert max(widths) > 0


def test_a_view_rejects_what_is_not_a_batch_of_log_mels():
    for bad in (torch.zeros(128, 64), torch.zeros(2, 2, 128, 64), torch.zeros(2, 1, VIEW_MASK_MELS, 64)):
        with pytest.raises(ValueError, match="log-mel must be"):
            sound_view(bad, torch.Generator())

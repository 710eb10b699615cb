"""The log-mel front end against known signals and a plain-loop version of the same formulas."""

import numpy as np
import pytest

from avsurv.constants import AUDIO_TENSOR_SHAPE, FMAX, FMIN, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE
from avsurv.media.logmel import hz_to_mel, log_mel, mel_filterbank, mel_to_hz

SECOND = np.arange(SAMPLE_RATE) / SAMPLE_RATE


def loop_log_mel(samples: np.ndarray) -> np.ndarray:
    """Straight from the definitions: one frame, one filter, one DFT bin at a time."""
    padded = np.concatenate([np.zeros(N_FFT // 2), samples, np.zeros(N_FFT // 2)])
    window = [0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT) for n in range(N_FFT)]
    bins = np.arange(N_FFT // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), N_MELS + 2))
    mel = np.zeros((N_MELS, 1 + len(samples) // HOP_LENGTH))
    for frame in range(mel.shape[1]):
        chunk = padded[frame * HOP_LENGTH : frame * HOP_LENGTH + N_FFT] * window
        power = np.abs(np.fft.fft(chunk)[: N_FFT // 2 + 1]) ** 2
        for m in range(N_MELS):
            low, centre, high = edges[m], edges[m + 1], edges[m + 2]
            total = 0.0
            for k in bins:
                f = k * SAMPLE_RATE / N_FFT
                weight = max(0.0, min((f - low) / (centre - low), (high - f) / (high - centre)))
                total += weight * 2.0 / (high - low) * power[k]
            mel[m, frame] = total
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - 80.0)


def test_shape_is_one_by_128_by_64():
    assert log_mel(np.zeros(SAMPLE_RATE, np.float32)).shape == AUDIO_TENSOR_SHAPE == (1, 128, 64)


def test_matches_plain_loop_on_noise():
    rng = np.random.default_rng(1)
    samples = rng.uniform(-0.5, 0.5, SAMPLE_RATE // 4)  # a quarter second keeps the loop quick
    np.testing.assert_allclose(log_mel(samples)[0], loop_log_mel(samples), atol=1e-3)


def test_silence_is_the_floor():
    assert np.all(log_mel(np.zeros(SAMPLE_RATE)) == -100.0)


@pytest.mark.parametrize("frequency", [250.0, 1000.0, 4000.0, 12000.0])
def test_tone_peaks_in_the_mel_band_holding_its_frequency(frequency):
    mel = log_mel(0.5 * np.sin(2 * np.pi * frequency * SECOND))[0]
    peak_band = int(mel[:, 32].argmax())
    centres = mel_to_hz(np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), N_MELS + 2))[1:-1]
    assert abs(peak_band - int(np.abs(centres - frequency).argmin())) <= 1
    assert mel[peak_band, 32] > mel[:, 32].min() + 40  # far above the bands elsewhere


def test_full_scale_tone_level_and_80_db_range():
    mel = log_mel(np.sin(2 * np.pi * 1000.0 * SECOND))[0]
    assert mel.max() - mel.min() == pytest.approx(80.0, abs=1e-4)
    quieter = log_mel(0.1 * np.sin(2 * np.pi * 1000.0 * SECOND))[0]
    assert mel.max() - quieter.max() == pytest.approx(20.0, abs=0.01)  # amplitude x10 is +20 dB


def test_slaney_scale_round_trip_and_breakpoint():
    hz = np.array([0.0, 20.0, 500.0, 1000.0, 4000.0, 22050.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-9, atol=1e-9)
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)  # linear part: 3 mels per 200 Hz


def test_filterbank_shape_and_coverage():
    bank = mel_filterbank()
    assert bank.shape == (N_MELS, N_FFT // 2 + 1)
    assert np.all(bank >= 0) and np.all(bank.sum(axis=1) > 0)  # every band sees some FFT bin


def test_rejects_stereo_input():
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, SAMPLE_RATE)))

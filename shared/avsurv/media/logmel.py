"""Log-mel spectrogram of one 1-second clip, as Adapa (2019) computes it with librosa.

Re-implemented in numpy (librosa is not a dependency) with librosa's conventions: Slaney mel scale and
Slaney area normalisation, periodic Hann window, centred frames with zero padding, power spectrum,
``power_to_db(ref=1.0, amin=1e-10, top_db=80)``. For 44,100 samples this gives a [128, 64] array.
"""

from functools import cache

import numpy as np

from avsurv.constants import DB_AMIN, DB_TOP, FMAX, FMIN, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

_F_SP = 200.0 / 3  # Slaney scale: linear below 1 kHz with 3 mels per 200 Hz ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0  # ... and logarithmic above it.


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa ``hz_to_mel(htk=False)``)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


@cache
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """Triangular Slaney-normalised filters, [n_mels, n_fft // 2 + 1] (librosa ``filters.mel``)."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@cache
def _hann(n_fft: int) -> np.ndarray:
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic, as scipy fftbins=True
    window.setflags(write=False)
    return window


def power_spectrogram(samples: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """|STFT|^2 with centred, zero-padded frames: [n_fft // 2 + 1, 1 + len // hop]."""
    padded = np.pad(samples.astype(np.float64), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    spectrum = np.fft.rfft(frames * _hann(n_fft), axis=-1)
    return (spectrum.real**2 + spectrum.imag**2).T


def power_to_db(power: np.ndarray, amin: float = DB_AMIN, top_db: float = DB_TOP) -> np.ndarray:
    """10 log10(max(S, amin)) with ref 1.0, floored at top_db below the maximum."""
    db = 10.0 * np.log10(np.maximum(power, amin))
    return np.maximum(db, db.max() - top_db)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Log-mel of mono float samples in [-1, 1] at 44.1 kHz; one second gives float32 [1, 128, 64]."""
    if samples.ndim != 1:
        raise ValueError(f"log_mel expects mono samples of shape [n], got shape {list(samples.shape)}")
    mel = mel_filterbank() @ power_spectrogram(samples)
    return power_to_db(mel).astype(np.float32)[None]

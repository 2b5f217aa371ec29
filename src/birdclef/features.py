"""Log-mel spectrograms in numpy: one implementation for the cache and for inference.

The mel cache, training and the Kaggle-side inference all call `log_mel`, so the
model sees the same features everywhere. Only numpy here; the mel filterbank is
built once with librosa (`mel_filterbank`) and shipped as an array with the
exported models, so inference needs neither librosa nor torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

AMIN = 1e-10


def mel_filterbank(mel_settings: Mapping[str, Any]) -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) Slaney mel filterbank for `mel_settings`."""
    import librosa

    return librosa.filters.mel(
        sr=mel_settings["sample_rate"],
        n_fft=mel_settings["n_fft"],
        n_mels=mel_settings["n_mels"],
        fmin=mel_settings["fmin"],
        fmax=mel_settings["fmax"],
    ).astype(np.float32)


def frames_for(samples: int, hop_length: int) -> int:
    """Number of STFT frames (centred) for a signal of `samples` samples."""
    return 1 + samples // hop_length


def log_mel(
    wave: np.ndarray,
    filterbank: np.ndarray,
    n_fft: int,
    hop_length: int,
    top_db: float | None = 80.0,
) -> np.ndarray:
    """Log-mel power spectrogram in dB, shape (n_mels, frames), float32.

    Centred frames with zero padding and a periodic Hann window (librosa's
    defaults), power spectrum, mel projection, 10*log10 with a floor of 1e-10,
    and values clipped to `top_db` below the maximum.
    """
    wave = np.asarray(wave, dtype=np.float32)
    padded = np.pad(wave, (n_fft // 2, n_fft // 2))
    if padded.size < n_fft:
        padded = np.pad(padded, (0, n_fft - padded.size))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    spectrum = np.fft.rfft(frames * window, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = filterbank @ power.T.astype(np.float32)
    db = 10.0 * np.log10(np.maximum(mel, AMIN))
    if top_db is not None:
        db = np.maximum(db, db.max() - top_db)
    return db.astype(np.float32)


def window_waves(wave: np.ndarray, sample_rate: int, window_seconds: float, n_windows: int) -> np.ndarray:
    """Cut `wave` into `n_windows` consecutive windows, zero-padding the end.

    Returns (n_windows, window_samples); a short recording is padded so every
    window exists, a long one is cut at `n_windows * window_seconds`.
    """
    size = int(round(window_seconds * sample_rate))
    total = size * n_windows
    out = np.zeros(total, dtype=np.float32)
    out[: min(total, wave.size)] = wave[:total]
    return out.reshape(n_windows, size)

"""Log-mel spectrograms in numpy: one implementation for the cache and for inference.

The mel cache, training and the Kaggle-side inference all call `log_mel`, so the
model sees the same features everywhere. Only numpy at import (scipy.fft, when
installed, is used for a faster float32 FFT; threadpoolctl, when installed, limits BLAS threads). The mel filterbank
(`mel_filterbank`, a numpy port of librosa's, value for value) is shipped as an
array with the exported models, so inference needs neither librosa nor torch.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:  # optional in the Kaggle bundle: numpy's FFT and unlimited BLAS threads otherwise
    import scipy.fft as scipy_fft
except ImportError:  # pragma: no cover - scipy ships with every supported install
    scipy_fft = None
try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (and Kaggle)
    threadpool_limits = None

AMIN = 1e-10
# What a log-mel spectrogram (a model's input, besides the window length) depends on.
MEL_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db")
# Frames per block of work: a block's windowed frames and spectrum (about 2 MB at
# n_fft 2048) stay in the CPU cache between the window, FFT and mel steps.
FRAMES_PER_BLOCK = 128
# Mel bands per slice of the sparse filterbank product (see `_band_slices`).
BANDS_PER_SLICE = 16

_band_cache: dict[int, tuple[weakref.ref, tuple[tuple[int, int, int, int], ...]]] = {}


def hz_to_slaney_mel(hz: float) -> float:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    if hz >= 1000.0:
        return float(min_log_mel + np.log(hz / 1000.0) / logstep)
    return hz / f_sp


def slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    hz = f_sp * mels
    log_part = mels >= min_log_mel
    hz[log_part] = 1000.0 * np.exp(logstep * (mels[log_part] - min_log_mel))
    return hz


def mel_filterbank(mel_settings: Mapping[str, Any]) -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) Slaney mel filterbank for `mel_settings`, float32.

    A numpy port of ``librosa.filters.mel`` (Slaney scale and area
    normalisation, the same operations in the same order, so the values are
    identical; tests/test_mels.py checks it), which spares every process that
    builds one the seconds-long librosa import.
    """
    sample_rate = float(mel_settings["sample_rate"])
    n_fft = int(mel_settings["n_fft"])
    n_mels = int(mel_settings["n_mels"])
    fmin = float(mel_settings["fmin"])
    fmax = mel_settings.get("fmax")
    fmax = sample_rate / 2 if fmax is None else float(fmax)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_hz = slaney_mel_to_hz(
        np.linspace(hz_to_slaney_mel(fmin), hz_to_slaney_mel(fmax), n_mels + 2)
    )
    spacing = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)
    for band in range(n_mels):
        lower = -ramps[band] / spacing[band]
        upper = ramps[band + 2] / spacing[band + 1]
        weights[band] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels]))[:, np.newaxis]
    if not np.all((mel_hz[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn(
            f"empty mel filters: n_mels {n_mels} is too many for n_fft {n_fft} between "
            f"fmin {fmin:g} and fmax {fmax:g} Hz; some bands will always be silent",
            stacklevel=2,
        )
    return weights


def blas_threads(limit: int = 1, user_api: str | None = None) -> contextlib.AbstractContextManager:
    """Hold the BLAS (and, with `user_api` None, OpenMP) thread pools at `limit` threads.

    ``threadpoolctl.threadpool_limits``: the limit applies as soon as this is
    called and is undone when a ``with`` block around it ends. Without
    threadpoolctl (imported lazily) a context that does nothing; then set
    OPENBLAS_NUM_THREADS before numpy is imported instead (the Kaggle
    bundle's predict.py does). Used where parallel workers each run
    `log_mel`: multi-threaded BLAS inside them made it 3-4x slower.
    """
    if threadpool_limits is None:  # pragma: no cover - threadpoolctl comes with scikit-learn (and Kaggle)
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api=user_api)


def frames_for(samples: int, hop_length: int) -> int:
    """Number of STFT frames (centred) for a signal of `samples` samples."""
    return 1 + samples // hop_length


def window_frames(mel: Mapping[str, Any], window_seconds: float | None = None) -> int:
    """Frames in one window of `window_seconds` (default ``mel["window_seconds"]``): 313 for 5 s, 32 kHz, hop 512."""
    seconds = float(mel["window_seconds"] if window_seconds is None else window_seconds)
    return frames_for(int(round(seconds * int(mel["sample_rate"]))), int(mel["hop_length"]))


def frames_per_second(mel: Mapping[str, Any]) -> float:
    """Log-mel frames per second of audio: sample_rate / hop_length (62.5 for 32 kHz, hop 512)."""
    return float(mel["sample_rate"]) / float(mel["hop_length"])


def member_mel_group(member: Mapping[str, Any], n_groups: int, where: str = "") -> int:
    """A member's ``mel_group``, checked to be an int index into `n_groups` mel groups.

    `where` (e.g. ``" in <path>"``) follows the member's name in the error.
    """
    group = member.get("mel_group")
    if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < n_groups:
        raise ValueError(
            f"member {member.get('name')!r}{where} has mel_group {group!r}; expected an index "
            f"into the {n_groups} mel groups (0..{n_groups - 1})"
        )
    return group


def check_mel_groups(
    groups: Sequence[Mapping[str, Any]], members: Sequence[Mapping[str, Any]], keys: Sequence[str] = MEL_KEYS
) -> None:
    """An ensemble's ``mel_groups`` and its members' ``mel_group``: consistent, none unused.

    Every group has `keys`; every member names a group (`member_mel_group`);
    every group is used by some member.
    """
    if not groups:
        raise ValueError("mel_groups must be a non-empty list of mel settings")
    for g, group in enumerate(groups):
        missing = [key for key in keys if key not in group]
        if missing:
            raise ValueError(f"mel_groups[{g}] (tag {group.get('tag')!r}) lacks {missing}; "
                             f"expected {list(keys)}")
    used = {member_mel_group(member, len(groups)) for member in members}
    unused = sorted(set(range(len(groups))) - used)
    if unused:
        raise ValueError(f"mel_groups {unused} are used by no member")


def _real_fft():
    """scipy.fft's single-threaded float32 rfft when scipy is there, else numpy's.

    scipy's pocketfft runs several transforms at once in SIMD lanes and keeps
    float32 in float32 (about 3x numpy's rfft here).
    """
    return _numpy_rfft if scipy_fft is None else _scipy_rfft


def _scipy_rfft(x: np.ndarray) -> np.ndarray:
    return scipy_fft.rfft(x, axis=-1, workers=1, overwrite_x=True)


def _numpy_rfft(x: np.ndarray) -> np.ndarray:  # pragma: no cover - without scipy
    return np.fft.rfft(x, axis=-1)


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    """Periodic Hann window (librosa's default), float32, read-only."""
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    window.flags.writeable = False
    return window


def _band_slices(filterbank: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    """(first band, end band, first bin, end bin) of each slice of `BANDS_PER_SLICE` bands.

    A mel filter is non-zero on a few neighbouring FFT bins only, so each group of
    bands is multiplied with just the bins it covers: about 1/8 of the dense
    product's work at 128 mels, with the same sums (the skipped terms are zeros).
    Cached per filterbank object (filterbanks are never modified in place).
    """
    key = id(filterbank)
    cached = _band_cache.get(key)
    if cached is not None and cached[0]() is filterbank:
        return cached[1]
    nonzero = filterbank != 0
    any_bin = nonzero.any(axis=1)
    first = np.where(any_bin, nonzero.argmax(axis=1), 0)
    last = np.where(any_bin, filterbank.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0)
    slices = []
    for band in range(0, filterbank.shape[0], BANDS_PER_SLICE):
        end = min(filterbank.shape[0], band + BANDS_PER_SLICE)
        lo, hi = int(first[band:end].min()), int(last[band:end].max())
        slices.append((band, end, lo, max(hi, lo + 1)))
    slices = tuple(slices)
    try:
        if len(_band_cache) > 32:
            _band_cache.clear()
        _band_cache[key] = (weakref.ref(filterbank), slices)
    except TypeError:  # an array type that takes no weak references: just don't cache
        pass
    return slices


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
    and values clipped to `top_db` below the maximum. Equal to
    ``librosa.power_to_db(librosa.feature.melspectrogram(..., pad_mode="constant"))``
    within float32 rounding.

    Everything stays float32, and the work runs in blocks of `FRAMES_PER_BLOCK`
    frames that stay in the CPU cache; one thread (call it from several
    processes or threads to use more cores).
    """
    wave = np.asarray(wave, dtype=np.float32)
    filterbank = np.asarray(filterbank, dtype=np.float32)
    n_bins = n_fft // 2 + 1
    if filterbank.ndim != 2 or filterbank.shape[1] != n_bins:
        raise ValueError(
            f"filterbank has shape {filterbank.shape}; n_fft {n_fft} needs (n_mels, {n_bins})"
        )
    padded = np.pad(wave, (n_fft // 2, n_fft // 2))
    if padded.size < n_fft:
        padded = np.pad(padded, (0, n_fft - padded.size))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    n_frames = frames.shape[0]
    window = _hann(n_fft)
    rfft = _real_fft()
    slices = _band_slices(filterbank)
    mel = np.empty((filterbank.shape[0], n_frames), dtype=np.float32)
    block = min(FRAMES_PER_BLOCK, n_frames)
    windowed = np.empty((block, n_fft), dtype=np.float32)
    block_mel = np.empty((filterbank.shape[0], block), dtype=np.float32)
    for start in range(0, n_frames, block):
        stop = min(n_frames, start + block)
        count = stop - start
        x = windowed[:count]
        np.multiply(frames[start:stop], window, out=x)
        spectrum = rfft(x)
        if spectrum.dtype != np.complex64:
            spectrum = spectrum.astype(np.complex64)
        # |X|^2 without complex temporaries: square the (re, im) pairs in place, add them.
        pairs = spectrum.view(np.float32)
        np.square(pairs, out=pairs)
        power = pairs[:, 0::2] + pairs[:, 1::2]  # (count, n_bins)
        out = block_mel[:, :count]
        for band, end, lo, hi in slices:
            np.matmul(filterbank[band:end, lo:hi], power[:, lo:hi].T, out=out[band:end])
        mel[:, start:stop] = out
    np.maximum(mel, AMIN, out=mel)
    np.log10(mel, out=mel)
    mel *= 10.0
    if top_db is not None:
        np.maximum(mel, mel.max() - top_db, out=mel)
    return mel


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


def chunk_positions(groups: Sequence[Any] | np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions that give every run of equal `groups` values a multiple of `multiple` rows.

    `groups` names each row's recording or soundscape; a run is a maximal stretch of
    consecutive rows with one name (its windows in time order). A run of n rows is
    extended to the next multiple of `multiple` by repeating its own rows from its
    start (tiling, as training tiles a short recording). Returns (positions into the
    rows, a bool mask that is True exactly once per row: the predictions to keep), so
    ``predict(rows[positions])[keep]`` has one prediction per row in order. Models with
    ``context_windows`` m > 1 join each m consecutive rows (`SEDModel.forward_rows`),
    which this keeps inside one recording.
    """
    names = np.asarray(groups)
    multiple = max(1, int(multiple))
    if multiple == 1 or len(names) == 0:
        return np.arange(len(names), dtype=np.int64), np.ones(len(names), dtype=bool)
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    lengths = np.diff(np.r_[starts, len(names)])
    positions, keep = [], []
    for start, length in zip(starts, lengths, strict=True):
        padded = -(-int(length) // multiple) * multiple
        positions.append(start + np.arange(padded) % length)
        keep.append(np.arange(padded) < length)
    return np.concatenate(positions).astype(np.int64), np.concatenate(keep)

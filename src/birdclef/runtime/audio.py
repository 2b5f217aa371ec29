"""Audio decoding: any file soundfile reads, as mono float32 at a target rate.

numpy + soundfile only at import time (soxr is imported when resampling is
needed), so the Kaggle inference path can use it without torch.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

from birdclef.common.io import atomic_path

try:  # the resampler; optional only in a Kaggle image that lacks it (files at the model's rate need none)
    import soxr
except ImportError:  # pragma: no cover - a pinned dependency here
    soxr = None

# The audio files the workflow reads (soundscape folders, test_soundscapes/): by suffix, any case.
AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")

OGG_WRITE_BLOCK = 1 << 20


class BadAudioError(ValueError):
    """A recording that cannot be decoded, with the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono signal with soxr's anti-aliased high-quality resampler."""
    if source_rate == target_rate:
        return wave
    if soxr is None:  # pragma: no cover - soxr is a pinned dependency (and on Kaggle, with librosa)
        raise ImportError(f"resampling {source_rate} Hz -> {target_rate} Hz needs the soxr package")
    return soxr.resample(wave, source_rate, target_rate, quality="HQ").astype(np.float32)


def _open_error(path: str | os.PathLike, error: Exception, what: str) -> BadAudioError:
    """The `BadAudioError` for a file soundfile could not open or read.

    libsndfile reports a missing file as a generic "System error", so the file
    is looked up before the error is blamed on its content.
    """
    if isinstance(error, FileNotFoundError) or not os.path.exists(path):
        return BadAudioError(path, "file not found")
    return BadAudioError(path, f"{what} ({error})")


def decode_audio(
    path: str | os.PathLike,
    sample_rate: int,
    max_seconds: float | None = None,
    repair: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Mono float32 audio of `path` at `sample_rate`, and notes on what was changed.

    Stereo is averaged to mono and another sample rate is resampled
    (`resample`, soxr); each adds a note. With `max_seconds` only the start of
    the file is decoded. NaN or infinite samples raise `BadAudioError`; with
    `repair` they become 0 instead, and a missing soxr falls back to linear
    interpolation instead of raising ImportError (a note each). Raises
    `BadAudioError` naming the file when it is missing, cannot be decoded or
    holds no samples.
    """
    notes = []
    try:
        with sf.SoundFile(path) as handle:
            source_rate = int(handle.samplerate)
            frames = -1
            if max_seconds is not None:
                frames = int(np.ceil(max_seconds * source_rate))
            wave = handle.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        raise _open_error(path, error, "cannot decode audio") from error
    if wave.shape[0] == 0:
        raise BadAudioError(path, "no audio samples (zero-length file)")
    if wave.shape[1] > 1:
        notes.append(f"{wave.shape[1]} channels mixed down to mono")
        mono = wave.mean(axis=1, dtype=np.float32)
    else:
        mono = np.ascontiguousarray(wave[:, 0])
    finite = np.isfinite(mono)
    if not finite.all():
        if not repair:
            raise BadAudioError(path, "audio contains NaN or infinite samples")
        notes.append(f"{int((~finite).sum())} NaN/infinite samples set to 0")
        mono = np.where(finite, mono, np.float32(0.0))
    if source_rate != sample_rate:
        notes.append(f"resampled from {source_rate} Hz to {sample_rate} Hz")
        try:
            mono = resample(mono, source_rate, sample_rate)
        except ImportError:
            if not repair:
                raise
            notes.append("soxr missing: linear interpolation")  # crude, but keeps the rows
            n_out = int(round(mono.size * sample_rate / source_rate))
            source_times = np.arange(mono.size) / source_rate
            mono = np.interp(np.arange(n_out) / sample_rate, source_times, mono).astype(np.float32)
    if max_seconds is not None:
        mono = mono[: int(round(max_seconds * sample_rate))]
    return mono, notes


def read_audio(
    path: str | os.PathLike,
    sample_rate: int,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate` (`decode_audio` without the notes).

    Stereo is averaged to mono; other sample rates are resampled. With
    `max_seconds` only the start of the file is decoded. Raises `BadAudioError`
    naming the file when it is missing, unreadable, empty or holds NaN or
    infinite samples.
    """
    return decode_audio(path, sample_rate, max_seconds)[0]


def audio_seconds(path: str | os.PathLike) -> float:
    """Duration of `path` in seconds from its header; raises `BadAudioError`."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise _open_error(path, error, "cannot read audio header") from error
    if info.frames <= 0:
        raise BadAudioError(path, "no audio samples (zero-length file)")
    return info.frames / info.samplerate


def write_ogg(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    """Write float audio, mono (n,) or (n, channels), as Ogg Vorbis (the competition's format), atomically."""
    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    channels = 1 if wave.ndim == 1 else wave.shape[1]
    with atomic_path(path) as tmp, sf.SoundFile(
        tmp, "w", samplerate=sample_rate, channels=channels, format="OGG", subtype="VORBIS"
    ) as handle:
        # libsndfile 1.2.2's Vorbis encoder crashes on one write of more than
        # about 2**21 frames: write in blocks.
        for start in range(0, len(wave), OGG_WRITE_BLOCK):
            handle.write(wave[start : start + OGG_WRITE_BLOCK])


def read_audio_span(
    path: str | os.PathLike,
    sample_rate: int,
    start_sample: int,
    n_samples: int,
) -> np.ndarray:
    """Mono float32 samples `start_sample` .. `start_sample + n_samples` of `path` at `sample_rate`.

    The same samples as ``read_audio(path, sample_rate)[start:start + n]`` (shorter at the
    file's end): a file at `sample_rate` is read from a seek, any other is decoded from its
    start and resampled (`decode_audio`, the mel cache's path), so resampled spans match the
    cache only where soxr's output does not depend on where decoding stopped. Raises
    `BadAudioError` naming the file.
    """
    start, count = max(0, int(start_sample)), max(0, int(n_samples))
    try:
        with sf.SoundFile(path) as handle:
            native = int(handle.samplerate) == int(sample_rate)
            if native:
                handle.seek(min(start, handle.frames))
                wave = handle.read(frames=count, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        raise _open_error(path, error, "cannot decode audio") from error
    if not native:
        mono = decode_audio(path, sample_rate, max_seconds=(start + count) / sample_rate)[0]
        return np.ascontiguousarray(mono[start : start + count])
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else np.ascontiguousarray(wave[:, 0])
    if not np.isfinite(mono).all():
        raise BadAudioError(path, "audio contains NaN or infinite samples")
    return mono

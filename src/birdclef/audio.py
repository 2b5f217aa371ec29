"""Audio decoding: any file soundfile reads, as mono float32 at a target rate.

numpy + soundfile only at import time (soxr is imported when resampling is
needed), so the Kaggle inference path can use it without torch.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

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
    import soxr

    return soxr.resample(wave, source_rate, target_rate, quality="HQ").astype(np.float32)


def read_audio(
    path: str | os.PathLike,
    sample_rate: int,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate`.

    Stereo is averaged to mono; other sample rates are resampled. With
    `max_seconds` only the start of the file is decoded. Raises `BadAudioError`
    naming the file when it is missing, unreadable or empty.
    """
    try:
        with sf.SoundFile(path) as handle:
            source_rate = handle.samplerate
            frames = -1
            if max_seconds is not None:
                frames = int(np.ceil(max_seconds * source_rate))
            wave = handle.read(frames=frames, dtype="float32", always_2d=True)
    except FileNotFoundError as error:
        raise BadAudioError(path, "file not found") from error
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise BadAudioError(path, f"cannot decode audio ({error})") from error
    if wave.shape[0] == 0:
        raise BadAudioError(path, "no audio samples (zero-length file)")
    mono = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if not np.all(np.isfinite(mono)):
        raise BadAudioError(path, "audio contains NaN or infinite samples")
    mono = resample(np.ascontiguousarray(mono), source_rate, sample_rate)
    if max_seconds is not None:
        mono = mono[: int(round(max_seconds * sample_rate))]
    return mono


def audio_seconds(path: str | os.PathLike) -> float:
    """Duration of `path` in seconds from its header; raises `BadAudioError`."""
    try:
        info = sf.info(str(path))
    except FileNotFoundError as error:
        raise BadAudioError(path, "file not found") from error
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise BadAudioError(path, f"cannot read audio header ({error})") from error
    if info.frames <= 0:
        raise BadAudioError(path, "no audio samples (zero-length file)")
    return info.frames / info.samplerate


def write_ogg(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as Ogg Vorbis (the competition's format), atomically."""
    from .io import atomic_path

    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path) as tmp, sf.SoundFile(
        tmp, "w", samplerate=sample_rate, channels=1, format="OGG", subtype="VORBIS"
    ) as handle:
        # libsndfile 1.2.2's Vorbis encoder crashes on one write of more than
        # about 2**21 frames: write in blocks.
        for start in range(0, wave.size, OGG_WRITE_BLOCK):
            handle.write(wave[start : start + OGG_WRITE_BLOCK])

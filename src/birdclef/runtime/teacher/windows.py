"""A teacher's outputs for the pipeline's 5 s windows, whatever the teacher's own input length.

The pipeline scores and trains on `window_seconds` windows (5 s). Perch v2
reads exactly 5 s at 32 kHz. BirdNET 2.4 reads 3 s at 48 kHz: a 5 s window is
read as crops of the teacher's length spread evenly from its start to its end
(0-3 s and 2-5 s), their embeddings averaged and their logits maxed (a call
anywhere in the window counts). Audio is decoded and resampled to the
teacher's rate (`birdclef.runtime.audio.read_audio`); the last window of a file
is zero-padded, as in the mel caches.
"""

from __future__ import annotations

import math
import os

import numpy as np

from birdclef.runtime.audio import read_audio
from birdclef.runtime.features import window_waves
from birdclef.runtime.teacher.base import Teacher


def crop_offsets(window_samples: int, teacher_samples: int) -> list[int]:
    """Start samples of the teacher-length crops that cover one window (one crop when the
    teacher reads at least the whole window)."""
    if teacher_samples >= window_samples:
        return [0]
    count = math.ceil(window_samples / teacher_samples)
    span = window_samples - teacher_samples
    return [round(span * k / (count - 1)) for k in range(count)]


def teacher_crops(windows: np.ndarray, teacher_samples: int) -> np.ndarray:
    """(n, window_samples) -> (n * crops, teacher_samples): each window's crops, consecutive;
    a window shorter than the teacher's input is zero-padded."""
    n, size = windows.shape
    offsets = crop_offsets(size, teacher_samples)
    out = np.zeros((n, len(offsets), teacher_samples), dtype=np.float32)
    for j, start in enumerate(offsets):
        piece = windows[:, start : start + teacher_samples]
        out[:, j, : piece.shape[1]] = piece
    return out.reshape(n * len(offsets), teacher_samples)


def max_over_crops(values: np.ndarray, window_samples: int, teacher_samples: int) -> np.ndarray:
    """(n * crops, C) rows of `teacher_crops` -> (n, C): the maximum over each window's crops (a
    call anywhere in the window counts); `window_samples` and `teacher_samples` as for `crop_offsets`."""
    crops = len(crop_offsets(window_samples, teacher_samples))
    return values if crops == 1 else values.reshape(-1, crops, values.shape[-1]).max(axis=1)


def window_outputs(teacher: Teacher, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's (embeddings (n, D), logits (n, C)) of `windows` (n, samples at its rate)."""
    windows = np.asarray(windows, dtype=np.float32)
    n = windows.shape[0]
    crops = len(crop_offsets(windows.shape[1], teacher.window_samples))
    embeddings, logits = teacher.infer(teacher_crops(windows, teacher.window_samples))
    embeddings = embeddings.reshape(n, crops, -1).mean(axis=1)
    logits = max_over_crops(logits, windows.shape[1], teacher.window_samples)
    return embeddings.astype(np.float32), logits.astype(np.float32)


def file_windows(
    path: str | os.PathLike, sample_rate: int, window_seconds: float, max_seconds: float | None = None
) -> np.ndarray:
    """Every `window_seconds` window of the file's first `max_seconds` (None: all of it) at
    `sample_rate`: (n_windows, samples), at least one window, the last zero-padded.

    Raises `birdclef.runtime.audio.BadAudioError` for a file that cannot be decoded.
    """
    wave = read_audio(path, sample_rate, max_seconds=max_seconds)
    n_windows = max(1, math.ceil(wave.size / sample_rate / window_seconds - 1e-6))
    return window_waves(wave, sample_rate, window_seconds, n_windows)

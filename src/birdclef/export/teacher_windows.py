"""Audio windows for the compiled teacher's int8 calibration and accuracy gate (`teacher_audio`).

The students calibrate and gate on the mel caches; the teacher (Perch v2:
5 s at 32 kHz) reads raw audio, so the export decodes the recordings behind
the mel cache (the VAD catalog's ``audio_path``: the cleaned audio the cache
was computed from) and cuts the same spans: calibration windows at random
recordings and starts (seeded), gate windows at the students' gate windows
(window k of a recording starts at k x window_seconds), at most
`MAX_TEACHER_EVAL_WINDOWS` of them spread evenly, with their targets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.errors import DataError
from birdclef.export.teacher import TeacherAudio
from birdclef.runtime.audio import BadAudioError, read_audio

log = logging.getLogger(__name__)

# Most labelled windows the teacher's gate scores (the teacher costs far more per window than a student).
MAX_TEACHER_EVAL_WINDOWS = 512


def recording_audio(catalog_path: str | os.PathLike) -> dict[str, str]:
    """filename -> audio file of every recording of the VAD catalog (``audio_path``, else ``path``)."""
    catalog = pd.read_parquet(catalog_path)
    column = "audio_path" if "audio_path" in catalog.columns else "path"
    if column not in catalog.columns or "filename" not in catalog.columns:
        raise DataError(f"{catalog_path}: no filename and audio_path (or path) columns; expected the VAD "
                        "stage's catalog.parquet")
    return dict(zip(catalog["filename"].astype(str), catalog[column].astype(str), strict=True))


def audio_windows(
    paths: Sequence[str], starts: Sequence[float], sample_rate: int, window_seconds: float
) -> tuple[np.ndarray, np.ndarray]:
    """(windows (n_kept, samples) float32, kept (n,) bool) of `window_seconds` from `starts` seconds of `paths`.

    Each file is decoded once (mono, resampled to `sample_rate`, up to the
    end of its last window); a window running past the end is zero-padded. A
    file that cannot be decoded loses its windows (logged; `kept` is False there).
    """
    size = int(round(window_seconds * sample_rate))
    starts = np.asarray(starts, dtype=np.float64)
    kept = np.ones(len(paths), dtype=bool)
    out = np.zeros((len(paths), size), dtype=np.float32)
    by_file: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        by_file.setdefault(path, []).append(i)
    for path, rows in by_file.items():
        try:
            wave = read_audio(path, sample_rate, max_seconds=float(starts[rows].max()) + window_seconds)
        except BadAudioError as error:
            log.warning("teacher export: %s cannot be decoded (%s): its %d windows are left out", path,
                        error.reason, len(rows))
            kept[rows] = False
            continue
        for i in rows:
            begin = int(round(starts[i] * sample_rate))
            piece = wave[begin : begin + size]
            out[i, : piece.size] = piece
    return out[kept], kept


def teacher_audio(
    catalog_path: str | os.PathLike,
    index: pd.DataFrame,
    group: Mapping[str, Any],
    window_seconds: float,
    eval_rows: np.ndarray,
    eval_starts: np.ndarray,
    eval_targets: np.ndarray,
    calibration_size: int,
    rng: np.random.Generator,
    sample_rate: int,
    max_eval_windows: int = MAX_TEACHER_EVAL_WINDOWS,
) -> TeacherAudio:
    """The compiled teacher's calibration and gate windows at `sample_rate`, from the recordings' audio.

    `index` is the mel cache index of mel group `group` (filename, frames),
    `eval_rows` and `eval_starts` that group's gate windows (rows of `index`,
    start frames: `birdclef.export.windows.gate_windows`) and `eval_targets`
    their targets. Calibration: min(`calibration_size`, 4 x recordings) windows
    of random recordings (`rng`), each at a random start within its cached
    seconds. Gate: at most `max_eval_windows` of the gate windows, taken
    evenly, each starting at k x `window_seconds` (k = its window number).
    """
    audio = recording_audio(catalog_path)
    names = index["filename"].astype(str).to_numpy()
    missing = sorted(set(names) - set(audio))
    if missing:
        raise DataError(f"{catalog_path}: no audio for the cached recordings {missing[:3]} ({len(missing)}); "
                        "expected the VAD catalog the mel cache was made from")
    seconds = index["frames"].to_numpy(np.float64) * int(group["hop_length"]) / int(group["sample_rate"])
    size = min(int(calibration_size), max(1, len(index) * 4))
    rows = rng.integers(0, len(index), size=size)
    starts = rng.random(size) * np.maximum(seconds[rows] - window_seconds, 0.0)
    calibration, _ = audio_windows([audio[n] for n in names[rows]], starts, sample_rate, window_seconds)

    pick = np.arange(len(eval_rows))
    if len(pick) > max_eval_windows:
        pick = np.linspace(0, len(pick) - 1, max_eval_windows).round().astype(np.int64)
    step = float(window_seconds) * int(group["sample_rate"]) / int(group["hop_length"])
    k = np.round(np.asarray(eval_starts, dtype=np.float64)[pick] / step)
    windows, kept = audio_windows([audio[n] for n in names[np.asarray(eval_rows)[pick]]], k * window_seconds,
                                  sample_rate, window_seconds)
    log.info("teacher export: %d calibration windows, %d of %d gate windows (%g s at %d Hz)", len(calibration),
             len(windows), len(eval_rows), window_seconds, sample_rate)
    return TeacherAudio(calibration, windows, np.asarray(eval_targets)[pick][kept])

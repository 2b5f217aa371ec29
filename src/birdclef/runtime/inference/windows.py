"""A soundscape's log-mel windows and row ids (`soundscape_windows`), in parallel (`iter_soundscape_windows`).

Decodes a soundscape once per distinct sample rate of the bundle's mel
groups, cuts it into `window_count` windows (TTA-shifted views when the
bundle asks for them) and computes each group's log-mels; a file that cannot
be decoded gets its row ids (from its header's duration when it has one) and
no windows.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdclef.runtime.audio import BadAudioError, audio_seconds, decode_audio
from birdclef.runtime.features import log_mel, window_waves
from birdclef.runtime.inference.bundle import Bundle

logger = logging.getLogger(__name__)

# A 60 s soundscape in 5 s windows: the usual rows per test soundscape, and the rows of an
# undecodable file whose header gives no duration.
DEFAULT_WINDOWS = 12


def _end_label(seconds: float) -> str:
    return str(int(round(seconds))) if abs(seconds - round(seconds)) < 1e-6 else f"{seconds:g}"


def _shifted_windows(
    wave: np.ndarray, sample_rate: int, window_seconds: float, n_windows: int, shift: int
) -> np.ndarray:
    """`window_waves` of `wave` moved by `shift` samples (later audio for shift > 0)."""
    if shift > 0:
        wave = wave[shift:]
    elif shift < 0:
        wave = np.concatenate([np.zeros(-shift, dtype=np.float32), wave])
    return window_waves(wave, sample_rate, window_seconds, n_windows)


@dataclass
class SoundscapeWindows:
    """One soundscape ready for the model (`soundscape_windows`).

    `mels` holds one (views * n_model, 1, n_mels, frames) float32 array per
    mel group (view-major), `row_ids` its n_windows row ids; n_model is n_windows rounded
    up to the bundle's `Bundle.row_multiple` (silent windows past the file's end, whose
    predictions are dropped), n_windows in the usual case. `error` says why
    the file could not be decoded (None when it was): then `mels` hold no
    windows and the file's rows are predicted as 0 (`predict_soundscapes`).
    `teacher` holds the (n_windows, window samples) audio windows at the
    teacher's rate when the bundle has a teacher (no TTA views), else None.
    """

    path: str
    mels: list[np.ndarray]
    row_ids: list[str]
    error: str | None = None
    teacher: np.ndarray | None = None


def window_count(duration: float, window_seconds: float) -> int:
    """The windows (rows) of a `duration`-second soundscape: ceil(duration / window), at least 1."""
    return max(1, math.ceil(duration / window_seconds - 1e-6))


def _undecodable_window_count(path: str | os.PathLike, window_seconds: float) -> tuple[int, str]:
    """Rows for a file that cannot be decoded: from its header's duration, else `DEFAULT_WINDOWS`."""
    try:
        duration = audio_seconds(path)
    except Exception:  # noqa: BLE001 - no usable header: a one-minute soundscape's rows
        return DEFAULT_WINDOWS, f"no readable header: {DEFAULT_WINDOWS} windows"
    n_windows = window_count(duration, window_seconds)
    return n_windows, f"its header says {duration:.2f} s: {n_windows} windows"


def _row_ids(stem: str, n_windows: int, seconds: float) -> list[str]:
    return [f"{stem}_{_end_label((i + 1) * seconds)}" for i in range(n_windows)]


def _log_mels(waves: dict[int, np.ndarray], n_windows: int, bundle: Bundle) -> list[np.ndarray]:
    """Each mel group's (views * n_windows, 1, n_mels, frames) log-mel windows of `waves` (by rate)."""
    views = bundle.tta_views
    mels = []
    for group, shift in zip(bundle.mel_groups, bundle.tta_shift_samples, strict=True):
        shifts = [0, -shift, shift] if views == 3 else [0]
        out = np.empty((views * n_windows, *group.input_shape), dtype=np.float32)
        for view, offset in enumerate(shifts):
            windows = _shifted_windows(
                waves[group.sample_rate], group.sample_rate, bundle.window_seconds, n_windows, offset
            )
            for index, window in enumerate(windows):
                out[view * n_windows + index, 0] = log_mel(
                    window, group.filterbank, group.n_fft, group.hop_length, group.top_db
                )
        mels.append(out)
    return mels


def soundscape_windows(path: str | os.PathLike, bundle: Bundle) -> SoundscapeWindows:
    """Decode one soundscape and compute its log-mel windows for every mel group.

    Decodes `path` once per distinct sample rate of `bundle.mel_groups`
    (`audio.decode_audio` with ``repair=True``: stereo mixed down, another
    rate resampled, NaN/infinite samples set to 0), cuts it into
    `window_count` (ceil(duration / window_seconds), at least 1; the count
    from the first group's rate) consecutive windows, the last one
    zero-padded: 12 for a one-minute file, 4 for 20 s, 13 for 62 s. Computes
    `features.log_mel` per window with each group's settings and filterbank;
    window i of every group is the same span of audio. Views are
    `Bundle.tta_views` (3 with a ``postprocess.tta_shift_seconds`` of at
    least half a sample in some group: unshifted, -s, +s, s in each group's
    own samples; view-major). Row ids are ``"<stem>_<end second>"``, e.g.
    ``soundscape_1_5`` ... ``soundscape_1_60``.

    A file that cannot be decoded (corrupt, empty, missing) is returned with
    `SoundscapeWindows.error` set and no windows; its row count comes from its
    header's duration when soundfile can read it (`audio.audio_seconds`), else
    `DEFAULT_WINDOWS` (12). Every such case (and stereo, resampling to the
    first group's rate, silence, a length other than 60 s) is logged as a
    warning; resampling to the other groups' rates is by design and not logged.
    With a teacher (`Bundle.teacher`) the file is also decoded at the
    teacher's rate and cut into the same `window_count` windows
    (`SoundscapeWindows.teacher`).
    """
    stem = Path(path).stem
    seconds = bundle.window_seconds
    rates = list(dict.fromkeys(group.sample_rate for group in bundle.mel_groups))
    if bundle.teacher is not None and bundle.teacher.sample_rate not in rates:
        rates.append(bundle.teacher.sample_rate)
    try:
        rate = rates[0]
        waves, notes = _decode(path, rates)
        wave = waves[rate]
    except Exception as error:  # noqa: BLE001 - whatever the file does, its rows must exist
        return _undecodable(path, bundle, error)
    duration = wave.size / rate
    n_windows = window_count(duration, seconds)
    notes.extend(_wave_notes(wave, rate, duration, n_windows, seconds))
    if notes:
        logger.warning("%s: %s", path, "; ".join(notes))
    teacher = None
    if bundle.teacher is not None:
        teacher_rate = bundle.teacher.sample_rate
        teacher = window_waves(waves[teacher_rate], teacher_rate, seconds, n_windows)
    # members that join windows see whole runs: the windows past the end are silence
    mels = _log_mels(waves, -(-n_windows // bundle.row_multiple) * bundle.row_multiple, bundle)
    return SoundscapeWindows(str(path), mels, _row_ids(stem, n_windows, seconds), teacher=teacher)


def _decode(path: str | os.PathLike, rates: list[int]) -> tuple[dict[int, np.ndarray], list[str]]:
    """(wave by sample rate, the first rate's decode notes) of `path`, decoded once per rate."""
    rate = rates[0]
    wave, notes = decode_audio(path, rate, repair=True)
    waves = {rate: wave}
    for other in rates[1:]:  # the other groups' rates: resampling by design, no notes
        waves[other] = decode_audio(path, other, repair=True)[0]
    return waves, notes


def _undecodable(path: str | os.PathLike, bundle: Bundle, error: Exception) -> SoundscapeWindows:
    """The `SoundscapeWindows` of a file that cannot be decoded (no windows, its rows), logged."""
    seconds = bundle.window_seconds
    reason = error.reason if isinstance(error, BadAudioError) else f"cannot decode ({error!r})"
    n_windows, how = _undecodable_window_count(path, seconds)
    logger.warning("%s: %s; undecodable: %s, written as 0", path, reason, how)
    empty = [np.zeros((0, *group.input_shape), dtype=np.float32) for group in bundle.mel_groups]
    return SoundscapeWindows(str(path), empty, _row_ids(Path(path).stem, n_windows, seconds), reason)


def _wave_notes(
    wave: np.ndarray, rate: int, duration: float, n_windows: int, seconds: float
) -> list[str]:
    """Warnings about a decoded wave: a length other than `DEFAULT_WINDOWS` windows, silence."""
    notes = []
    expected = DEFAULT_WINDOWS * seconds
    if abs(duration - expected) > 1.0 / rate:
        padded = abs(duration - n_windows * seconds) > 1.0 / rate
        notes.append(
            f"{duration:.2f} s long, not {expected:g} s: {n_windows} windows"
            + (" (last one padded with silence)" if padded else "")
        )
    if not np.any(wave):
        notes.append("silent (all samples are 0)")
    return notes


def iter_soundscape_windows(
    paths: Sequence[str | os.PathLike], bundle: Bundle, workers: int
) -> Iterator[SoundscapeWindows]:
    """`soundscape_windows` of every path, in order, computed `workers` files in parallel.

    At most 2 * `workers` files are decoded ahead of the consumer. Call it
    inside ``features.blas_threads(1, "blas")``.
    """
    ahead = 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="soundscape-mels") as pool:
        pending: list[Future] = []
        position = 0
        for _ in range(len(paths)):
            while position < len(paths) and len(pending) < ahead:
                pending.append(pool.submit(soundscape_windows, paths[position], bundle))
                position += 1
            yield pending.pop(0).result()

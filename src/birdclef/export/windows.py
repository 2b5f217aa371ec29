"""The export's windows: calibration and gate windows cut from the mel caches, labelled soundscapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.labels import targets_of
from birdclef.runtime.features import chunk_positions
from birdclef.runtime.features import window_frames as group_frames
from birdclef.soundscapes import validation_windows, window_positions

MAX_EVAL_WINDOWS = 4096  # most windows the accuracy gate scores


def cache_windows(
    mels: np.ndarray, index, starts: np.ndarray, rows: np.ndarray, frames: int
) -> np.ndarray:
    """(n, 1, n_mels, frames) float32 windows cut from the training mel cache.

    `rows` pick recordings of `index`, `starts` the first frame within each;
    windows running past a recording's end are zero-padded with its minimum, and a start
    at or past the end wraps to the recording's start (modulo its frames: runs of a context
    member's windows on a short recording tile it, as training does).
    """
    n_mels = mels.shape[1]
    out = np.empty((len(rows), 1, n_mels, frames), dtype=np.float32)
    offsets = index["offset"].to_numpy()
    lengths = index["frames"].to_numpy()
    for k, (row, start) in enumerate(zip(rows, starts, strict=True)):
        if lengths[row] > 0 and start >= lengths[row]:
            start = int(start) % int(lengths[row])
        begin = int(offsets[row] + start)
        take = int(min(frames, lengths[row] - start))
        piece = np.asarray(mels[begin : begin + take], dtype=np.float32).T
        out[k, 0, :, :take] = piece
        out[k, 0, :, take:] = piece.min() if take else 0.0
    return out


def calibration_windows(
    mels: Sequence[np.ndarray],
    indexes: Sequence,
    frames: Sequence[int],
    calibration_size: int,
    rng: np.random.Generator,
    block: int = 1,
) -> list[np.ndarray]:
    """Calibration windows of every mel group, drawn at random (`rng`) from its cache.

    Per group min(`calibration_size`, 4 x the recordings in its index, at
    least 1) windows of random recordings, each at a random start within it.
    With `block` b > 1 (members that join b consecutive windows) the draws are runs of b
    consecutive windows (a span of b windows cut into its windows), rounded up to whole runs.
    """
    calibration = []
    for array, index, group_window in zip(mels, indexes, frames, strict=True):
        size = min(calibration_size, max(1, len(index) * 4))
        runs = -(-size // block)
        rows = rng.integers(0, len(index), size=runs)
        spare = np.maximum(index["frames"].to_numpy()[rows] - group_window * block, 0)
        starts = (rng.random(runs) * (spare + 1)).astype(np.int64)
        if block > 1:  # window j of a run starts j windows after the run
            rows = np.repeat(rows, block)
            starts = (starts[:, None] + group_window * np.arange(block)).reshape(-1)
        calibration.append(cache_windows(array, index, starts, rows, group_window))
    return calibration


def _window_starts(k: np.ndarray, step: float) -> np.ndarray:
    """First frame of window k: round(k * step), halves rounded up.

    `step` is the (fractional) number of frames in one window's time,
    window_seconds * sample_rate / hop_length: 312.5 for 5 s at 32 kHz, hop 512.
    """
    return np.floor(k * step + 0.5).astype(np.int64)


def _windows_that_fit(room: np.ndarray, step: float) -> np.ndarray:
    """Per recording, how many windows start at or before frame `room` (0 where `room` < 0)."""
    # window k fits when its start <= room (the last start that leaves a whole
    # window): k < (room + 0.5) / step; the two corrections undo float rounding
    # Windows k with start(k) <= room, i.e. k < (room + 0.5) / step; the two
    # corrections after the ceil only undo float error at the boundary.
    fit = np.where(room >= 0, np.ceil((room + 0.5) / step), 0).astype(np.int64)
    fit -= (fit > 0) & (_window_starts(np.maximum(fit - 1, 0), step) > room)
    fit += (room >= 0) & (_window_starts(fit, step) <= room)
    return fit


def _gate_recordings(indexes: Sequence, folds, groups: Sequence[Mapping[str, Any]]) -> pd.Series:
    """Filenames of the validated recordings present in every index, in the first index's order."""
    if len(indexes) != len(groups) or not groups:
        raise ValueError(f"gate_windows needs one index per mel group: {len(indexes)} indexes, "
                         f"{len(groups)} groups")
    for g, index in enumerate(indexes):
        duplicated = index["filename"][index["filename"].duplicated()]
        if len(duplicated):
            raise ValueError(f"the mel cache index of mel group {g} lists {duplicated.iloc[0]!r} "
                             "more than once; expected one row per recording")
    validated = set(folds.loc[folds["fold"] >= 0, "filename"])
    names = indexes[0]["filename"]
    keep = names.isin(validated)
    for index in indexes[1:]:
        keep &= names.isin(set(index["filename"]))
    return names[keep]


def gate_windows(
    indexes: Sequence,
    folds,
    groups: Sequence[Mapping[str, Any]],
    window_seconds: float,
    max_windows: int = MAX_EVAL_WINDOWS,
    multiple: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Windows the accuracy gate scores, aligned across mel groups: (rows, start frames) per group.

    `indexes` are the mel cache indexes of `groups` (same order; columns
    filename, offset, frames). The recordings are the validated ones (fold >=
    0 in `folds`) present in every index (matched by filename), in the first
    index's order. Window k of a recording starts at time k * `window_seconds`
    in every group: frame round(k * window_seconds * sample_rate / hop_length)
    of that group. A recording gets as many windows as fit whole into its
    cached frames in every group (the minimum over the groups), at least one
    (from its start; `cache_windows` pads a recording shorter than a window).
    At most `max_windows` windows, taken evenly across the list, the same ones
    in every group. Returns (rows, starts): one int64 array per group, rows of
    that group's index and start frames within the recording; entry i of every
    group is the same recording and span of time. With `multiple` m > 1 (members that join m
    consecutive windows) each recording's count is rounded up to a multiple of m (the extra
    windows run past the cached frames: `cache_windows` pads or wraps them) and the windows
    are taken in whole runs of m.
    """
    names = _gate_recordings(indexes, folds, groups)
    counts = None
    recording_rows, steps = [], []
    for group, index in zip(groups, indexes, strict=True):
        rows = pd.Index(index["filename"]).get_indexer(names).astype(np.int64)
        step = float(window_seconds) * int(group["sample_rate"]) / int(group["hop_length"])
        room = index["frames"].to_numpy(np.int64)[rows] - group_frames(group, window_seconds)
        fit = _windows_that_fit(room, step)
        counts = fit if counts is None else np.minimum(counts, fit)
        recording_rows.append(rows)
        steps.append(step)
    counts = np.maximum(1, counts)
    multiple = max(1, int(multiple))
    counts = -(-counts // multiple) * multiple
    first = np.cumsum(counts) - counts
    k = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first, counts)
    if len(k) > max_windows:
        n_runs = len(k) // multiple
        runs = np.linspace(0, n_runs - 1, max(1, max_windows // multiple)).round().astype(np.int64)
        pick = (runs[:, None] * multiple + np.arange(multiple)).reshape(-1)
    else:
        pick = np.arange(len(k))
    rows = [np.repeat(r, counts)[pick] for r in recording_rows]
    starts = [_window_starts(k[pick], step) for step in steps]
    return rows, starts


def gate_targets(index, rows: np.ndarray, classes) -> np.ndarray:
    """Binary targets (primary and secondary labels) of each gate window's recording.

    Looked up once per recording of `rows` (rows of `index`), then repeated per window.
    """
    recordings, window_recording = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    targets = targets_of(index, index["filename"].iloc[recordings].tolist(), classes)
    return targets[window_recording.reshape(-1)]


def labelled_soundscape_windows(
    soundscape_mels_paths: Sequence[str],
    soundscape_index_paths: Sequence[str],
    labelled_path: str,
    classes: Sequence[str],
    multiple: int = 1,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The held-out labelled soundscape windows of every mel group, their targets, and which to score.

    One (n, 1, n_mels, frames) float32 array per group (that group's
    soundscape cache, matched by row_id, so window i is the same span of
    audio in every group), the (n_held, n_classes) 0/1 targets and a bool mask of the n
    windows that are scored (n_held True). Each soundscape's windows are in time order and,
    for members that join windows (`multiple` > 1: the members' context_windows), repeated
    from its start up to a multiple of `multiple` (`runtime.features.chunk_positions`).
    """
    held = validation_windows(pd.read_parquet(labelled_path))
    if len(held):
        held = held.sort_values(["soundscape", "end_s"], kind="stable").reset_index(drop=True)
    positions, keep = chunk_positions(held["soundscape"].astype(str).to_numpy() if len(held) else [], multiple)
    arrays = []
    for mels_path, index_path in zip(soundscape_mels_paths, soundscape_index_paths, strict=True):
        rows = window_positions(pd.read_parquet(index_path), held["row_id"], index_path)
        cache = np.load(mels_path, mmap_mode="r")
        arrays.append(np.asarray(cache[rows[positions]], dtype=np.float32)[:, None])
    return arrays, held[list(classes)].to_numpy(np.float32), keep

"""Log-mel cache: float16 `.npy` memmap plus a parquet index.

Training recordings: each recording's first `max_seconds` (`rare_max_seconds`
for classes with fewer than `rare_threshold` recordings) become consecutive rows
of one (total_frames, n_mels) array; the index says where each starts.
Soundscapes: every 5 s window becomes one (n_mels, frames) slice of a
(n_windows, n_mels, frames) array, indexed by row_id.

Speed: files are decoded and transformed in worker processes (one per thread of
the rule), each pinned to one BLAS/FFT thread; the filterbank is built once in
the parent and shipped to the workers; results stream straight into the
final `.npy` (its header is written last), so the cache is never held in memory
or copied. The output does not depend on the number of workers.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from birdclef.common.io import atomic_path
from birdclef.common.manifest import StageManifest
from birdclef.common.progress import progress_bar
from birdclef.runtime.audio import AUDIO_SUFFIXES, BadAudioError, read_audio
from birdclef.runtime.features import (
    MEL_KEYS,
    blas_threads,
    log_mel,
    mel_filterbank,
    window_frames,
    window_waves,
)
from birdclef.soundscapes import soundscape_metadata

log = logging.getLogger(__name__)

# Settings that may be absent (older configs); these are their defaults.
DEFAULTS = {"rare_threshold": 0, "rare_max_seconds": None}
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
NPY_HEADER_BYTES = 128

_worker_state: dict[str, Any] = {}


def mel_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of `settings` that defines the spectrogram itself."""
    return {key: settings[key] for key in MEL_KEYS}


def recording_seconds(catalog: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Seconds to cache per catalog row, and whether the row's class is rare.

    A class is rare when it has fewer than `rare_threshold` recordings in
    `catalog` (0, the default, makes none rare); its recordings get their first
    `rare_max_seconds` cached (None: the whole recording) instead of `max_seconds`.
    Returns (seconds (n,) float64 with inf for "whole recording", rare (n,) bool).
    """
    threshold = int(settings.get("rare_threshold") or 0)
    labels = catalog["primary_label"].astype(str)
    rare = (labels.map(labels.value_counts()) < threshold).to_numpy(bool)
    rare_seconds = settings.get("rare_max_seconds", DEFAULTS["rare_max_seconds"])
    rare_seconds = math.inf if rare_seconds is None else float(rare_seconds)
    base = float(settings["max_seconds"])
    return np.where(rare, rare_seconds, base).astype(np.float64), rare


# --------------------------------------------------------------------------- workers


def _init_worker(settings: dict[str, Any], filterbank: np.ndarray) -> None:
    _worker_state["settings"] = settings
    _worker_state["filterbank"] = filterbank
    # One thread per worker: the workers are the parallelism. The variables cover
    # libraries loaded from here on, threadpoolctl the ones already loaded.
    for name in THREAD_ENV:
        os.environ[name] = "1"
    _worker_state["limits"] = blas_threads(1)


def _recording_mel(task: tuple[str, float]) -> np.ndarray | str:
    """(frames, n_mels) float16 log-mel of the first `seconds` of `path`, or the reason it failed."""
    path, seconds = task
    settings = _worker_state["settings"]
    try:
        wave = read_audio(path, settings["sample_rate"], max_seconds=None if math.isinf(seconds) else seconds)
    except BadAudioError as error:
        return error.reason
    mel = log_mel(
        wave, _worker_state["filterbank"], settings["n_fft"], settings["hop_length"], settings["top_db"]
    )
    return np.ascontiguousarray(mel.T, dtype=np.float16)  # rows = frames, as the cache stores them


def _soundscape_mels(path: str) -> np.ndarray | str:
    """(n_windows, n_mels, frames) float16 log-mels of every window of `path`, or the failure."""
    settings = _worker_state["settings"]
    try:
        wave = read_audio(path, settings["sample_rate"])
    except BadAudioError as error:
        return error.reason
    seconds = settings["window_seconds"]
    n_windows = max(1, math.ceil(wave.size / settings["sample_rate"] / seconds - 1e-6))
    windows = window_waves(wave, settings["sample_rate"], seconds, n_windows)
    fb = _worker_state["filterbank"]
    out = np.empty((n_windows, fb.shape[0], window_frames(settings)), dtype=np.float16)
    for k, window in enumerate(windows):
        out[k] = log_mel(window, fb, settings["n_fft"], settings["hop_length"], settings["top_db"])
    return out


def _map(function, tasks: list, settings: dict[str, Any], threads: int, desc: str,
         progress: bool) -> Iterator[Any]:
    """Ordered results of `function` over `tasks`, in `threads` worker processes when > 1."""
    filterbank = mel_filterbank(settings)  # once, here, not per worker
    if threads <= 1 or len(tasks) <= 1:
        _worker_state.update(settings=settings, filterbank=filterbank)
        with blas_threads(1):
            yield from (function(t) for t in progress_bar(tasks, desc=desc, disable=not progress))
        return
    workers = min(int(threads), len(tasks))
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(settings, filterbank)
    ) as pool:
        # Small chunks: a file is tens of milliseconds of work, and small chunks keep
        # every worker busy until the end (the input order is kept either way).
        chunksize = max(1, min(4, len(tasks) // (workers * 16)))
        results = pool.map(function, tasks, chunksize=chunksize)
        yield from progress_bar(results, total=len(tasks), desc=desc, disable=not progress)


def _handle_bad(path: str, reason: str, on_bad_audio: str, bad: list[dict]) -> None:
    if on_bad_audio == "fail":
        raise BadAudioError(path, f"{reason} (set data.on_bad_audio: skip to skip bad files)")
    log.warning("skipping bad audio %s: %s", path, reason)
    bad.append({"path": path, "reason": reason})


# --------------------------------------------------------------------------- npy streaming


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """numpy's own version 1.0 `.npy` header for a C-order array; it must be `NPY_HEADER_BYTES` long."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": tuple(int(n) for n in shape)})
    header = buffer.getvalue()
    if len(header) != NPY_HEADER_BYTES:
        raise ValueError(f"array shape {shape} does not fit a {NPY_HEADER_BYTES}-byte npy header")
    return header


class _NpyStream:
    """Append C-order rows of a fixed trailing shape to an open `.npy` file; header at close."""

    def __init__(self, handle: BinaryIO, row_shape: tuple[int, ...], dtype: Any = np.float16) -> None:
        self.handle = handle
        self.row_shape = tuple(int(n) for n in row_shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        handle.write(b"\0" * NPY_HEADER_BYTES)

    def append(self, array: np.ndarray) -> None:
        """Write `array` (rows, *row_shape) after the rows written so far."""
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if tuple(array.shape[1:]) != self.row_shape:
            raise ValueError(f"rows of shape {array.shape[1:]} do not match {self.row_shape}")
        self.handle.write(memoryview(array).cast("B"))
        self.rows += array.shape[0]

    def finish(self) -> None:
        """Write the header for the rows written, and flush."""
        self.handle.seek(0)
        self.handle.write(_npy_header((self.rows, *self.row_shape), self.dtype))
        self.handle.flush()


# --------------------------------------------------------------------------- caches


def build_mel_cache(
    catalog: pd.DataFrame,
    mels_path: str | os.PathLike,
    index_path: str | os.PathLike,
    settings: Mapping[str, Any],
    threads: int = 1,
    on_bad_audio: str = "skip",
    progress: bool = True,
) -> dict[str, Any]:
    """Cache the log-mel of each catalog row's `audio_path` (first `max_seconds`).

    Recordings of classes with fewer than `rare_threshold` recordings (optional
    setting, default 0: none) get their first `rare_max_seconds` (default None:
    the whole recording) instead. Writes `mels_path` (float16, (total_frames,
    n_mels)) and `index_path` (filename, primary_label, secondary_labels,
    collection, rating, offset, frames, seconds, rare and, from catalogs that
    have it, pretrain_only), both atomically. The
    array streams to disk as the workers deliver it, so memory stays bounded by
    the workers' in-flight recordings. Returns stats (recordings, frames, bad files).
    """
    settings = {**DEFAULTS, **settings}
    paths = catalog["audio_path"].astype(str).tolist()
    seconds, rare = recording_seconds(catalog, settings)
    tasks = list(zip(paths, seconds.tolist(), strict=True))
    bad: list[dict] = []
    kept_rows: list[int] = []
    frame_counts: list[int] = []
    with atomic_path(mels_path) as tmp, open(tmp, "wb") as handle:
        stream = _NpyStream(handle, (int(settings["n_mels"]),))
        for row, result in enumerate(_map(_recording_mel, tasks, settings, threads, "mels", progress)):
            if isinstance(result, str):
                _handle_bad(paths[row], result, on_bad_audio, bad)
                continue
            stream.append(result)
            kept_rows.append(row)
            frame_counts.append(result.shape[0])
        stream.finish()
    total = int(sum(frame_counts))
    kept = catalog.iloc[kept_rows]
    offsets = np.concatenate([[0], np.cumsum(frame_counts)[:-1]]).astype(np.int64) if kept_rows else []
    index = pd.DataFrame(
        {
            "filename": kept["filename"].astype(str).to_numpy(),
            "primary_label": kept["primary_label"].astype(str).to_numpy(),
            "secondary_labels": [list(x) for x in kept["secondary_labels"]],
            "collection": kept["collection"].astype("string").to_numpy(),
            "rating": pd.to_numeric(kept["rating"], errors="coerce").to_numpy(),
            "offset": np.asarray(offsets, dtype=np.int64),
            "frames": np.asarray(frame_counts, dtype=np.int64),
        }
    )
    index["seconds"] = index["frames"] * settings["hop_length"] / settings["sample_rate"]
    index["rare"] = rare[kept_rows] if kept_rows else np.zeros(0, dtype=bool)
    if "pretrain_only" in kept.columns:  # catalogs before data.extra_roots lack the column
        index["pretrain_only"] = kept["pretrain_only"].astype(bool).to_numpy()
    with atomic_path(index_path) as tmp:
        index.to_parquet(tmp, index=False)
    return {
        "recordings": int(len(index)),
        "frames": total,
        "cached_seconds": float(index["seconds"].sum()),
        "rare_recordings": int(index["rare"].sum()),
        "bad_audio": len(bad),
        "bad_audio_files": bad,
    }


def build_soundscape_cache(
    soundscape_paths: list[str],
    mels_path: str | os.PathLike,
    index_path: str | os.PathLike,
    settings: Mapping[str, Any],
    threads: int = 1,
    on_bad_audio: str = "skip",
    progress: bool = True,
) -> dict[str, Any]:
    """Cache the log-mel of every `window_seconds` window of each soundscape.

    Writes `mels_path` (float16, (n_windows, n_mels, frames)) and `index_path`
    (row_id, soundscape, end_s, site, date, hour), atomically, streaming the array to disk.
    row_id is `<stem>_<end second>`.
    """
    settings = {**DEFAULTS, **settings}
    frames = window_frames(settings)
    rows: list[dict] = []
    bad: list[dict] = []
    with atomic_path(mels_path) as tmp, open(tmp, "wb") as handle:
        stream = _NpyStream(handle, (int(settings["n_mels"]), frames))
        results = _map(_soundscape_mels, list(soundscape_paths), settings, threads, "soundscape mels", progress)
        for path, result in zip(soundscape_paths, results, strict=True):
            if isinstance(result, str):
                _handle_bad(path, result, on_bad_audio, bad)
                continue
            stem = Path(path).stem
            for k in range(result.shape[0]):
                end_s = int(round((k + 1) * settings["window_seconds"]))
                rows.append({"row_id": f"{stem}_{end_s}", "soundscape": stem, "end_s": end_s})
            stream.append(result)
        stream.finish()
    index = pd.DataFrame(rows, columns=["row_id", "soundscape", "end_s"])
    # 2026 names carry site, date and hour (None for anonymous names).
    index = pd.concat([index, soundscape_metadata(index["soundscape"])], axis=1)
    with atomic_path(index_path) as tmp:
        index.to_parquet(tmp, index=False)
    return {
        "soundscapes": len(soundscape_paths) - len(bad),
        "windows": int(len(index)),
        "bad_audio": len(bad),
        "bad_audio_files": bad,
    }


def mels_stage(
    catalog_path: str,
    out_mels: str,
    out_index: str,
    out_manifest: str,
    settings: dict,
    tag: str,
    upstream: dict,
    threads: int = 1,
) -> dict:
    """The mels stage: cache the training recordings the VAD stage kept."""
    manifest = StageManifest("mels", tag, settings, upstream, [catalog_path])
    catalog = pd.read_parquet(catalog_path)
    if "vad_dropped" in catalog.columns:
        catalog = catalog[~catalog["vad_dropped"].astype(bool)]
    if "audio_path" not in catalog.columns:
        catalog = catalog.assign(audio_path=catalog["path"])
    start = time.perf_counter()
    stats = build_mel_cache(
        catalog, out_mels, out_index, settings, threads=threads, on_bad_audio=settings["on_bad_audio"]
    )
    seconds = time.perf_counter() - start
    stats["wall_seconds"] = round(seconds, 3)
    stats["realtime_factor_per_core"] = round(stats["cached_seconds"] / seconds / max(1, threads), 1)
    manifest.headline.update(stats)
    manifest.write(out_manifest)
    log.info("mels: %d recordings, %d frames cached in %.1f s", stats["recordings"], stats["frames"], seconds)
    return stats


def soundscape_mels_stage(
    soundscape_dir: str,
    out_mels: str,
    out_index: str,
    out_manifest: str,
    settings: dict,
    tag: str,
    threads: int = 1,
) -> dict:
    """The soundscape_mels stage: cache every window of every unlabelled soundscape."""
    paths = sorted(str(p) for p in Path(soundscape_dir).glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    manifest = StageManifest("soundscape_mels", tag, settings, {}, [soundscape_dir])
    stats = build_soundscape_cache(
        paths, out_mels, out_index, settings, threads=threads, on_bad_audio=settings["on_bad_audio"]
    )
    manifest.headline.update(stats)
    manifest.write(out_manifest)
    log.info("soundscape mels: %d windows from %d soundscapes", stats["windows"], stats["soundscapes"])
    return stats

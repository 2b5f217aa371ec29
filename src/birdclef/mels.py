"""Log-mel cache: float16 `.npy` memmap plus a parquet index.

Training recordings: each recording's first `max_seconds` become consecutive
rows of one (total_frames, n_mels) array; the index says where each starts.
Soundscapes: every 5 s window becomes one (n_mels, frames) slice of a
(n_windows, n_mels, frames) array, indexed by row_id.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from .audio import BadAudioError, read_audio
from .features import frames_for, log_mel, mel_filterbank, window_waves
from .io import atomic_path

log = logging.getLogger("birdclef.mels")

AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")
MEL_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db")

_worker_state: dict[str, Any] = {}


def mel_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of `settings` that defines the spectrogram itself."""
    return {key: settings[key] for key in MEL_KEYS}


def window_frames(settings: Mapping[str, Any]) -> int:
    """Frames in one window of `window_seconds`."""
    return frames_for(int(round(settings["window_seconds"] * settings["sample_rate"])), settings["hop_length"])


def _init_worker(settings: dict[str, Any]) -> None:
    _worker_state["settings"] = settings
    _worker_state["filterbank"] = mel_filterbank(settings)


def _recording_mel(path: str) -> np.ndarray | str:
    settings = _worker_state["settings"]
    try:
        wave = read_audio(path, settings["sample_rate"], max_seconds=settings["max_seconds"])
    except BadAudioError as error:
        return error.reason
    mel = log_mel(
        wave, _worker_state["filterbank"], settings["n_fft"], settings["hop_length"], settings["top_db"]
    )
    return mel.T.astype(np.float16)


def _soundscape_mels(path: str) -> np.ndarray | str:
    settings = _worker_state["settings"]
    try:
        wave = read_audio(path, settings["sample_rate"])
    except BadAudioError as error:
        return error.reason
    seconds = settings["window_seconds"]
    n_windows = max(1, math.ceil(wave.size / settings["sample_rate"] / seconds - 1e-6))
    windows = window_waves(wave, settings["sample_rate"], seconds, n_windows)
    fb = _worker_state["filterbank"]
    return np.stack(
        [log_mel(w, fb, settings["n_fft"], settings["hop_length"], settings["top_db"]) for w in windows]
    ).astype(np.float16)


def _map(function, paths: list[str], settings: dict[str, Any], threads: int, desc: str, progress: bool):
    """Ordered results of `function` over `paths`, in worker processes when threads > 1."""
    if threads <= 1 or len(paths) <= 1:
        _init_worker(settings)
        yield from (function(p) for p in tqdm(paths, desc=desc, disable=not progress))
        return
    with ProcessPoolExecutor(max_workers=threads, initializer=_init_worker, initargs=(settings,)) as pool:
        results = pool.map(function, paths, chunksize=max(1, min(16, len(paths) // (threads * 4))))
        yield from tqdm(results, total=len(paths), desc=desc, disable=not progress)


def _handle_bad(path: str, reason: str, on_bad_audio: str, bad: list[dict]) -> None:
    if on_bad_audio == "fail":
        raise BadAudioError(path, f"{reason} (set data.on_bad_audio: skip to skip bad files)")
    log.warning("skipping bad audio %s: %s", path, reason)
    bad.append({"path": path, "reason": reason})


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

    Writes `mels_path` (float16, (total_frames, n_mels)) and `index_path`
    (filename, primary_label, secondary_labels, collection, rating, offset,
    frames, seconds), both atomically. The array is filled in place through a
    memmap, so memory stays bounded by the workers' in-flight recordings.
    Returns stats (recordings, frames, bad files).
    """
    settings = dict(settings)
    paths = catalog["audio_path"].astype(str).tolist()
    # Every recording's mel is spilled to a temporary file first, so that the
    # final array can be allocated with its exact size without holding it in memory.
    bad: list[dict] = []
    kept_rows: list[int] = []
    frame_counts: list[int] = []
    mels_path = Path(mels_path)
    n_mels = settings["n_mels"]
    mels_path.parent.mkdir(parents=True, exist_ok=True)
    spill_fd, spill_name = tempfile.mkstemp(prefix=f".{mels_path.name}.", suffix=".spill", dir=mels_path.parent)
    try:
        with os.fdopen(spill_fd, "wb") as spill:
            for row, result in enumerate(_map(_recording_mel, paths, settings, threads, "mels", progress)):
                if isinstance(result, str):
                    _handle_bad(paths[row], result, on_bad_audio, bad)
                    continue
                spill.write(np.ascontiguousarray(result).tobytes())
                kept_rows.append(row)
                frame_counts.append(result.shape[0])
        total = int(sum(frame_counts))
        with atomic_path(mels_path) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(total, n_mels))
            if total:
                array[:] = np.memmap(spill_name, dtype=np.float16, mode="r", shape=(total, n_mels))
            array.flush()
            del array
    finally:
        os.unlink(spill_name)
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
    with atomic_path(index_path) as tmp:
        index.to_parquet(tmp, index=False)
    return {
        "recordings": int(len(index)),
        "frames": total,
        "cached_seconds": float(index["seconds"].sum()),
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
    (row_id, soundscape, end_s), atomically. row_id is `<stem>_<end second>`.
    """
    settings = dict(settings)
    frames = window_frames(settings)
    chunks: list[np.ndarray] = []
    rows: list[dict] = []
    bad: list[dict] = []
    for path, result in zip(
        soundscape_paths,
        _map(_soundscape_mels, soundscape_paths, settings, threads, "soundscape mels", progress),
        strict=True,
    ):
        if isinstance(result, str):
            _handle_bad(path, result, on_bad_audio, bad)
            continue
        stem = Path(path).stem
        for k in range(result.shape[0]):
            end_s = int(round((k + 1) * settings["window_seconds"]))
            rows.append({"row_id": f"{stem}_{end_s}", "soundscape": stem, "end_s": end_s})
        chunks.append(result)
    array = (
        np.concatenate(chunks)
        if chunks
        else np.zeros((0, settings["n_mels"], frames), dtype=np.float16)
    )
    with atomic_path(mels_path) as tmp:
        np.save(tmp, array)
    index = pd.DataFrame(rows, columns=["row_id", "soundscape", "end_s"])
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
    import time

    from .manifest import StageManifest

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
    from .manifest import StageManifest

    paths = sorted(str(p) for p in Path(soundscape_dir).glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    manifest = StageManifest("soundscape_mels", tag, settings, {}, [soundscape_dir])
    stats = build_soundscape_cache(
        paths, out_mels, out_index, settings, threads=threads, on_bad_audio=settings["on_bad_audio"]
    )
    manifest.headline.update(stats)
    manifest.write(out_manifest)
    log.info("soundscape mels: %d windows from %d soundscapes", stats["windows"], stats["soundscapes"])
    return stats

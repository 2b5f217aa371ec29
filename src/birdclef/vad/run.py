"""Running VAD over a catalog: scan its rows, write the cleaned copies, build the output tables."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.io import atomic_dir
from birdclef.common.progress import progress_bar
from birdclef.runtime.audio import BadAudioError
from birdclef.vad.scan import ScanJob, scan_files
from birdclef.vad.settings import (
    BAD_AUDIO_CHOICES,
    CLEAN_SUFFIX,
    DEFAULT_BATCH_FILES,
    DEFAULT_MODEL_KIND,
    MODEL_ENGINES,
    MODEL_FILES,
    SPAN_COLUMNS,
    VadSettings,
    silero_model_path,
)
from birdclef.vad.stats import run_stats

log = logging.getLogger(__name__)


def run_vad(
    catalog: pd.DataFrame,
    audio_root_column: str,
    out_dir: str | os.PathLike,
    settings: VadSettings,
    threads: int = 1,
    on_bad_audio: str = "skip",
    sample_rate: int = 32000,
    progress: bool = True,
    model_kind: str = DEFAULT_MODEL_KIND,
    batch_files: int = DEFAULT_BATCH_FILES,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Find and remove speech in the recordings of `catalog`.

    `catalog` needs columns `filename` (train.csv-style relative name),
    `collection` and `audio_root_column` (usually "path": the audio file's
    absolute or cwd-relative path). Rows whose collection is scanned
    (`settings.collections`) are decoded at `sample_rate`, resampled to 16 kHz
    with soxr and run through Silero VAD (`model_kind`, see `load_vad_model`;
    `batch_files` files per model call), over `threads` worker processes
    (in-process when 1). Recordings with speech that are kept get a cleaned
    copy, padded spans removed, written as 16-bit FLAC to
    `out_dir/clean/<filename with suffix .flac>` (see `CLEAN_SUFFIX`); the
    `out_dir/clean` folder is built in a temporary folder and renamed into
    place only when the whole run succeeds, replacing an older one.

    Returns `(spans, cleaned_catalog, stats)`:

    - spans: one row per detected (unpadded) speech span: filename, start_s,
      end_s, max_prob.
    - cleaned_catalog: every input row, same index and order, plus
      `audio_path` (the cleaned file where cleaned, else the input path),
      `speech_seconds`, `speech_fraction` (NaN where not scanned or bad),
      `vad_status` (one of clean, cleaned, dropped, not_scanned, bad_audio)
      and `vad_dropped` (True for "dropped" and "bad_audio"). Rows are flagged,
      never removed: the caller filters on `~vad_dropped`.
    - stats: a JSON-ready dict of counts, bad files with reasons, seconds of
      speech removed per collection, seconds scanned and wall time.

    `on_bad_audio`: "skip" flags undecodable, empty or missing files as
    bad_audio; "fail" raises `BadAudioError` naming the file instead.
    """
    started = time.perf_counter()
    _check_arguments(catalog, audio_root_column, on_bad_audio, model_kind)
    threads = max(1, int(threads))
    out_dir = Path(out_dir)
    clean_root = out_dir / "clean"

    scanned_mask = np.array([settings.scans(c) for c in catalog["collection"]], dtype=bool)
    positions = np.flatnonzero(scanned_mask)
    filenames = catalog["filename"].astype(str).to_numpy()
    paths = catalog[audio_root_column].astype(str).to_numpy()
    relatives = _clean_relatives(positions, filenames)

    with atomic_dir(clean_root) as tmp_root:
        jobs = [
            ScanJob(int(i), filenames[i], paths[i], str(tmp_root / relatives[int(i)]))
            for i in positions
        ]
        bar = _progress_bar(len(jobs), progress)
        scan = scan_files(
            jobs, settings, threads, sample_rate, model_kind=model_kind, batch_files=batch_files
        )
        results = _collect(scan, bar, filenames, paths, on_bad_audio)

    spans = _spans_frame(results, filenames)
    cleaned = _cleaned_catalog(catalog, results, paths, relatives, clean_root)
    stats = run_stats(catalog, cleaned, results, filenames, paths, settings, threads, started)
    stats["model"] = f"{MODEL_FILES[model_kind]} ({MODEL_ENGINES[model_kind]})"
    stats["batch_files"] = int(batch_files)
    _log_totals(stats)
    return spans, cleaned, stats


def _check_arguments(
    catalog: pd.DataFrame, audio_root_column: str, on_bad_audio: str, model_kind: str
) -> None:
    """Reject a bad `on_bad_audio`, missing catalog columns or a missing model file."""
    if on_bad_audio not in BAD_AUDIO_CHOICES:
        raise ValueError(f"on_bad_audio must be one of {BAD_AUDIO_CHOICES}, got {on_bad_audio!r}")
    missing = {"filename", "collection", audio_root_column} - set(catalog.columns)
    if missing:
        raise KeyError(f"catalog is missing column(s) {sorted(missing)}")
    silero_model_path(model_kind)


def _clean_relatives(positions: np.ndarray, filenames: np.ndarray) -> dict[int, Path]:
    """Each scanned row's cleaned path relative to `out_dir/clean`; no two rows share one."""
    relatives = {int(i): _clean_relative_path(filenames[i]) for i in positions}
    seen: dict[Path, str] = {}
    for i, relative in relatives.items():
        if relative in seen:
            raise ValueError(
                f"two scanned rows would write the same cleaned file {relative}: "
                f"{seen[relative]!r} and {filenames[i]!r}"
            )
        seen[relative] = filenames[i]
    return relatives


def _clean_relative_path(filename: str) -> Path:
    """The cleaned file's path relative to `out_dir/clean`: the filename, suffix `.flac`."""
    relative = Path(str(filename))
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise ValueError(f"filename {filename!r} must be a relative path inside the dataset")
    return relative.with_suffix(CLEAN_SUFFIX)


def _collect(
    scan, bar, filenames: np.ndarray, paths: np.ndarray, on_bad_audio: str
) -> dict[int, dict[str, Any]]:
    """The scan's results by catalog position; bad audio is logged (and raised with "fail")."""
    results: dict[int, dict[str, Any]] = {}
    try:
        for i, result in scan:
            if result["status"] == "bad_audio":
                log.warning("bad audio %s (%s): %s", filenames[i], paths[i], result["reason"])
                if on_bad_audio == "fail":
                    raise BadAudioError(paths[i], f"{result['reason']} (filename {filenames[i]})")
            results[i] = result
            bar.update(1)
    finally:
        scan.close()
        bar.close()
    return results


def _log_totals(stats: dict[str, Any]) -> None:
    """The run's one summary log line."""
    log.info(
        "VAD: %d scanned, %d with speech, %d cleaned, %d dropped, %d bad, %.0f s audio in %.1f s",
        stats["files_scanned"],
        stats["files_with_speech"],
        stats["files_cleaned"],
        stats["files_dropped"],
        stats["files_bad"],
        stats["audio_seconds_scanned"],
        stats["wall_seconds"],
    )


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr when it is a terminal, else log lines (nothing when disabled)."""
    return progress_bar(total=total, desc="vad", unit="file", disable=not enabled, file=sys.stderr)


def _spans_frame(results: dict[int, dict[str, Any]], filenames: np.ndarray) -> pd.DataFrame:
    """The per-span table, in catalog order then time order."""
    rows = [
        (filenames[i], start, end, prob)
        for i in sorted(results)
        for start, end, prob in results[i].get("spans", [])
    ]
    frame = pd.DataFrame(rows, columns=SPAN_COLUMNS)
    return frame.astype(
        {"filename": "object", "start_s": "float64", "end_s": "float64", "max_prob": "float64"}
    )


def _cleaned_catalog(
    catalog: pd.DataFrame,
    results: dict[int, dict[str, Any]],
    paths: np.ndarray,
    relatives: dict[int, Path],
    clean_root: Path,
) -> pd.DataFrame:
    """The input catalog with the VAD columns added."""
    n = len(catalog)
    audio_path = paths.astype(object).copy()
    speech_seconds = np.full(n, np.nan)
    speech_fraction = np.full(n, np.nan)
    status = np.full(n, "not_scanned", dtype=object)
    for i, result in results.items():
        status[i] = result["status"]
        if result["status"] == "bad_audio":
            continue
        speech_seconds[i] = result["speech_seconds"]
        speech_fraction[i] = result["speech_fraction"]
        if result["status"] == "cleaned":
            audio_path[i] = str(clean_root / relatives[i])
    cleaned = catalog.copy()
    cleaned["audio_path"] = audio_path
    cleaned["speech_seconds"] = speech_seconds
    cleaned["speech_fraction"] = speech_fraction
    cleaned["vad_status"] = status
    cleaned["vad_dropped"] = np.isin(status, ["dropped", "bad_audio"])
    return cleaned

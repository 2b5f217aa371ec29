"""The VAD run's statistics: counts, bad files and seconds per collection, JSON-ready."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from birdclef.vad.settings import VadSettings


def run_stats(
    catalog: pd.DataFrame,
    cleaned: pd.DataFrame,
    results: dict[int, dict[str, Any]],
    filenames: np.ndarray,
    paths: np.ndarray,
    settings: VadSettings,
    threads: int,
    started: float,
) -> dict[str, Any]:
    """Counts and seconds for the stage's log and stats JSON."""
    counts = cleaned["vad_status"].value_counts()
    scanned_seconds, speech, removed, dropped_seconds = _seconds_by_collection(catalog, results)
    bad = _bad_files(results, filenames, paths)
    audio_seconds = float(sum(scanned_seconds.values()))
    wall = time.perf_counter() - started
    return {
        "files_total": len(catalog),
        "files_scanned": len(results),
        "files_not_scanned": int(counts.get("not_scanned", 0)),
        "files_with_speech": sum(1 for r in results.values() if r.get("spans")),
        "files_clean": int(counts.get("clean", 0)),
        "files_cleaned": int(counts.get("cleaned", 0)),
        "files_dropped": int(counts.get("dropped", 0)),
        "files_bad": len(bad),
        "bad_files": bad,
        "speech_spans": sum(len(r.get("spans", [])) for r in results.values()),
        "speech_seconds_by_collection": _rounded(speech),
        "speech_seconds_removed_by_collection": _rounded(removed),
        "dropped_audio_seconds_by_collection": _rounded(dropped_seconds),
        "audio_seconds_scanned_by_collection": _rounded(scanned_seconds),
        "audio_seconds_scanned": round(audio_seconds, 3),
        "wall_seconds": round(wall, 3),
        "audio_seconds_per_wall_second": round(audio_seconds / wall, 1) if wall > 0 else None,
        "threads": threads,
        "settings": {
            **asdict(settings),
            "collections": None if settings.collections is None else list(settings.collections),
        },
    }


def _seconds_by_collection(
    catalog: pd.DataFrame, results: dict[int, dict[str, Any]]
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float]]:
    """Seconds scanned, of speech, removed and dropped, per collection (bad audio left out)."""
    collections = catalog["collection"].astype(str).to_numpy()
    removed: dict[str, float] = {}
    speech: dict[str, float] = {}
    scanned_seconds: dict[str, float] = {}
    dropped_seconds: dict[str, float] = {}
    for i, result in results.items():
        if result["status"] == "bad_audio":
            continue
        key = collections[i]
        scanned_seconds[key] = scanned_seconds.get(key, 0.0) + result["duration_s"]
        speech[key] = speech.get(key, 0.0) + result["speech_seconds"]
        removed[key] = removed.get(key, 0.0) + result["removed_seconds"]
        if result["status"] == "dropped":
            dropped_seconds[key] = dropped_seconds.get(key, 0.0) + result["duration_s"]
    return scanned_seconds, speech, removed, dropped_seconds


def _bad_files(
    results: dict[int, dict[str, Any]], filenames: np.ndarray, paths: np.ndarray
) -> list[dict[str, str]]:
    """Filename, path and reason of every bad recording, in catalog order."""
    return [
        {"filename": str(filenames[i]), "path": str(paths[i]), "reason": results[i]["reason"]}
        for i in sorted(results)
        if results[i]["status"] == "bad_audio"
    ]


def _rounded(values: dict[str, float]) -> dict[str, float]:
    """Sorted keys, values rounded to milliseconds, plain floats."""
    return {key: round(float(values[key]), 3) for key in sorted(values)}

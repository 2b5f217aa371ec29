"""Scanning recordings for speech: decode, resample, run the model on a few files together, cut.

Recordings are scanned in worker processes (fork), one inference thread each,
several files per model call.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from birdclef.common.io import atomic_path
from birdclef.runtime.audio import BadAudioError, read_audio, resample
from birdclef.vad.cutting import merge_spans, remove_spans
from birdclef.vad.model import _import_silero, load_vad_model
from birdclef.vad.settings import (
    BATCH_MAX_SECONDS,
    DEFAULT_BATCH_FILES,
    DEFAULT_MODEL_KIND,
    VAD_SAMPLE_RATE,
    VadSettings,
    silero_model_path,
)
from birdclef.vad.speech import batch_speech_probabilities, spans_from_probabilities


@dataclass(frozen=True)
class ScanJob:
    """One recording to scan: its catalog position, names and where a cleaned copy goes.

    `clean_path` None: find speech only, write nothing.
    """

    position: int
    filename: str
    path: str
    clean_path: str | None = None


_worker_model = None


def _init_worker(model_kind: str, batch_files: int) -> None:
    """Process-pool initializer: one inference thread and one VAD model per worker."""
    global _worker_model
    _worker_model = load_vad_model(model_kind, threads=1, batch_files=batch_files)


class VadScanError(RuntimeError):
    """An unexpected error while scanning recordings, naming the files."""


def _failure(jobs: Sequence[ScanJob], error: Exception) -> VadScanError:
    """An unexpected error while scanning `jobs`, naming their files."""
    names = ", ".join(f"{job.filename} ({job.path})" for job in jobs)
    return VadScanError(f"VAD failed on {names}: {error!r}")


def _scan_group(
    jobs: Sequence[ScanJob],
    settings: VadSettings,
    sample_rate: int,
    model=None,
) -> list[tuple[int, dict[str, Any]]]:
    """Scan a few recordings: decode, resample, run the model on them together, cut.

    Returns `(position, result)` pairs: small picklable dicts (never the audio),
    in no set order. Bad audio is reported as status "bad_audio" with the
    reason, not raised. `jobs` is one task of `_groups` (at most `batch_files`
    files); its files go through the model together, split only where they
    pass `BATCH_MAX_SECONDS` seconds of audio.
    """
    model = model if model is not None else _worker_model
    results: list[tuple[int, dict[str, Any]]] = []
    batch: list[tuple[ScanJob, np.ndarray, np.ndarray]] = []
    batch_seconds = 0.0

    def run_batch() -> None:
        nonlocal batch, batch_seconds
        if not batch:
            return
        try:
            all_probs = batch_speech_probabilities([wave_16k for _, _, wave_16k in batch], model)
        except Exception as error:
            raise _failure([job for job, _, _ in batch], error) from error
        for (job, wave, wave_16k), probs in zip(batch, all_probs, strict=True):
            try:
                spans = spans_from_probabilities(probs, wave_16k.size, settings)
                results.append((job.position, _finish(job, wave, spans, settings, sample_rate)))
            except Exception as error:
                raise _failure([job], error) from error
        batch, batch_seconds = [], 0.0

    for job in jobs:
        try:
            wave = read_audio(job.path, sample_rate)
            wave_16k = resample(wave, sample_rate, VAD_SAMPLE_RATE)
        except BadAudioError as error:
            results.append((job.position, {"status": "bad_audio", "reason": error.reason}))
            continue
        except Exception as error:
            raise _failure([job], error) from error
        batch.append((job, wave, wave_16k))
        batch_seconds += wave.size / sample_rate
        if batch_seconds >= BATCH_MAX_SECONDS:
            run_batch()
    run_batch()
    return results


def _finish(
    job: ScanJob,
    wave: np.ndarray,
    spans: list[tuple[float, float, float]],
    settings: VadSettings,
    sample_rate: int,
) -> dict[str, Any]:
    """The result of one decoded recording; writes its cleaned copy when it has speech."""
    duration = wave.size / sample_rate
    speech_seconds = sum(end - start for start, end in merge_spans(spans, duration))
    fraction = speech_seconds / duration if duration > 0 else 0.0
    result: dict[str, Any] = {
        "status": "clean",
        "duration_s": duration,
        "spans": spans,
        "speech_seconds": speech_seconds,
        "speech_fraction": fraction,
        "removed_seconds": 0.0,
        "cleaned_seconds": duration,
    }
    if not spans:
        return result
    if fraction > settings.max_speech_fraction:
        result["status"] = "dropped"
        return result
    cut = merge_spans(spans, duration, settings.pad_seconds)
    cleaned = remove_spans(wave, sample_rate, cut, settings.crossfade_seconds)
    if cleaned.size == 0:
        result["status"] = "dropped"
        return result
    result["status"] = "cleaned"
    result["removed_seconds"] = sum(end - start for start, end in cut)
    result["cleaned_seconds"] = cleaned.size / sample_rate
    if job.clean_path is not None:
        write_clean(job.clean_path, cleaned, sample_rate)
    return result


def write_clean(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    """Write a cleaned recording as 16-bit FLAC (clipped to [-1, 1]), atomically."""
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")


def _groups(jobs: Sequence[ScanJob], workers: int, batch_files: int) -> list[list[ScanJob]]:
    """Consecutive jobs split into tasks of at most `batch_files` (one model batch each).

    The task count is a multiple of `workers`, with tasks as equal as possible,
    so that a short run does not end with one worker busy and the others idle.
    """
    if not jobs:
        return []
    count = min(len(jobs), workers * math.ceil(len(jobs) / (workers * batch_files)))
    small, extra = divmod(len(jobs), count)
    groups, start = [], 0
    for k in range(count):
        size = small + (1 if k < extra else 0)
        groups.append(list(jobs[start : start + size]))
        start += size
    return groups


def _fork_context():
    """A 'fork' multiprocessing context where available.

    Fork (not spawn) because Snakemake `script:` files have no `__main__`
    guard, which spawn/forkserver would re-execute in every worker.
    """
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


def scan_files(
    jobs: Sequence[ScanJob],
    settings: VadSettings,
    threads: int = 1,
    sample_rate: int = 32000,
    model_kind: str = DEFAULT_MODEL_KIND,
    batch_files: int = DEFAULT_BATCH_FILES,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Scan recordings for speech; yield `(position, result)` as each group finishes.

    Each file is decoded at `sample_rate`, resampled to 16 kHz with soxr and
    run through Silero VAD; up to `batch_files` files go through the model
    together. With `threads` > 1 the work is spread over that many worker
    processes (fork), each with one inference thread; results then come in
    completion order. A result is a dict with `status` (clean, cleaned,
    dropped or bad_audio), `spans` and the seconds of audio, speech and cuts;
    a job with a `clean_path` and speech gets its cleaned copy written there.
    Closing the generator early stops the workers.
    """
    silero_model_path(model_kind)
    threads = max(1, int(threads))
    batch_files = max(1, int(batch_files))
    groups = _groups(jobs, threads, batch_files)
    if not groups:
        return
    _import_silero()  # import once here, so that forked workers share it
    if threads == 1 or len(groups) == 1:
        model = load_vad_model(model_kind, threads=1, batch_files=batch_files)
        for group in groups:
            yield from _scan_group(group, settings, sample_rate, model)
        return
    workers = min(threads, len(groups))
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_fork_context(),
        initializer=_init_worker,
        initargs=(model_kind, batch_files),
    ) as pool:
        futures = {
            pool.submit(_scan_group, group, settings, sample_rate): group
            for group in groups
        }
        try:
            for future in as_completed(futures):
                try:
                    done = future.result()
                except VadScanError:
                    raise  # already names the file
                except Exception as error:  # e.g. a worker that died
                    raise _failure(futures[future], error) from error
                yield from done
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise

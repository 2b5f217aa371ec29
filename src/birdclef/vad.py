"""Voice activity detection: find recordists' spoken notes and cut them out.

Training recordings often start or end with the recordist reading a field note
aloud. This stage runs Silero VAD on every scanned recording, writes a cleaned
copy (speech removed, pieces joined with a short equal-power crossfade) for
each recording with speech, and flags recordings that are mostly speech so the
caller can leave them out of training.

Model: the Silero VAD 6 "sequence" ONNX export shipped inside the `silero_vad`
package (`silero_vad_16k_sequence.onnx`). It gives bit-for-bit the same frame
probabilities as the stock streaming ONNX model, but runs a block of 512 frames
per onnxruntime call instead of one Python call per 32 ms frame (about 4x
faster than the streaming ONNX model and 8x faster than the TorchScript one on
one core). `detect_speech` accepts any of the three model kinds (see
`load_vad_model`). Nothing is downloaded.

Importing `silero_vad` calls `torch.set_num_threads(1)` for the whole process;
`load_vad_model` puts the caller's thread count back.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .audio import BadAudioError, read_audio, resample, write_ogg
from .io import atomic_dir

log = logging.getLogger(__name__)

VAD_SAMPLE_RATE = 16000
"""Silero VAD runs on 16 kHz audio."""

VAD_FRAME_SAMPLES = 512
"""One Silero VAD frame at 16 kHz (32 ms)."""

MODEL_FILES = {
    "sequence": "silero_vad_16k_sequence.onnx",
    "onnx": "silero_vad.onnx",
    "jit": "silero_vad.jit",
}
DEFAULT_MODEL_KIND = "sequence"

STATUSES = ("clean", "cleaned", "dropped", "not_scanned", "bad_audio")
BAD_AUDIO_CHOICES = ("skip", "fail")
SPAN_COLUMNS = ["filename", "start_s", "end_s", "max_prob"]


@dataclass(frozen=True)
class VadSettings:
    """Settings of the VAD stage (all durations in seconds).

    threshold: a frame is speech when Silero's probability is >= this (a span
        ends when it falls below threshold - 0.15 for min_silence_seconds).
    min_speech_seconds: shorter speech spans are ignored.
    min_silence_seconds: silence needed inside speech to end a span.
    pad_seconds: padding added on both sides of every span before cutting.
    max_speech_fraction: recordings whose detected speech covers more than this
        fraction of their duration are flagged `vad_dropped`.
    crossfade_seconds: length of the equal-power crossfade at each cut.
    collections: the `collection` values to scan; None scans every row.
    """

    threshold: float = 0.5
    min_speech_seconds: float = 0.25
    min_silence_seconds: float = 0.1
    pad_seconds: float = 0.1
    max_speech_fraction: float = 0.5
    crossfade_seconds: float = 0.02
    collections: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        for name in (
            "min_speech_seconds",
            "min_silence_seconds",
            "pad_seconds",
            "crossfade_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_speech_fraction < 0:
            raise ValueError(f"max_speech_fraction must be >= 0, got {self.max_speech_fraction}")
        if isinstance(self.collections, str):
            raise TypeError("collections must be a sequence of names, not a single string")
        if self.collections is not None:
            object.__setattr__(self, "collections", tuple(self.collections))

    def scans(self, collection: Any) -> bool:
        """Whether a row of `collection` is scanned under these settings."""
        return self.collections is None or collection in self.collections


# --------------------------------------------------------------------------- model


def load_vad_model(kind: str = DEFAULT_MODEL_KIND, threads: int | None = None):
    """Load a Silero VAD model shipped in the `silero_vad` package.

    `kind` is "sequence" (block-wise ONNX, the default and fastest), "onnx"
    (streaming ONNX) or "jit" (TorchScript); all give the same decisions.
    Importing `silero_vad` sets torch to one thread for the whole process: the
    thread count is set back to `threads`, or when None to the value it had
    before this call.
    """
    if kind not in MODEL_FILES:
        raise ValueError(f"unknown VAD model kind {kind!r}: expected one of {sorted(MODEL_FILES)}")
    import torch

    requested = torch.get_num_threads() if threads is None else int(threads)
    try:
        import silero_vad

        if kind == "sequence":
            return silero_vad.load_silero_vad(sequence=True)
        if kind == "onnx":
            return silero_vad.load_silero_vad(onnx=True)
        return silero_vad.load_silero_vad()
    finally:
        torch.set_num_threads(requested)


def speech_probabilities(wave_16k: np.ndarray, model) -> np.ndarray:
    """Silero's speech probability for every 512-sample frame of a 16 kHz signal.

    The last frame is zero-padded; an empty signal gives an empty array.
    """
    wave = np.ascontiguousarray(np.asarray(wave_16k, dtype=np.float32).reshape(-1))
    if wave.size == 0:
        return np.zeros(0, dtype=np.float32)
    if type(model).__name__ == "SileroVADSequence":
        probs = model.audio_forward(wave, sampling_rate=VAD_SAMPLE_RATE)
    else:
        import torch

        with torch.no_grad():
            probs = model.audio_forward(torch.from_numpy(wave), VAD_SAMPLE_RATE)
        model.reset_states()
        probs = probs.cpu().numpy()
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    expected = math.ceil(wave.size / VAD_FRAME_SAMPLES)
    if probs.size != expected:
        raise RuntimeError(f"VAD model gave {probs.size} frame probabilities, expected {expected}")
    return probs


def detect_speech(
    wave_16k: np.ndarray, settings: VadSettings, model
) -> list[tuple[float, float, float]]:
    """Speech spans `(start_s, end_s, max_prob)` in a 16 kHz mono signal.

    Spans are unpadded (settings.pad_seconds is applied when cutting), sorted,
    non-overlapping and clipped to the signal; `max_prob` is the highest frame
    probability inside the span. Empty and sub-frame signals give no spans.
    """
    from silero_vad import get_speech_timestamps_from_probs

    wave = np.asarray(wave_16k, dtype=np.float32).reshape(-1)
    if wave.size == 0:
        return []
    probs = speech_probabilities(wave, model)
    stamps = get_speech_timestamps_from_probs(
        probs.tolist(),
        sampling_rate=VAD_SAMPLE_RATE,
        threshold=settings.threshold,
        min_speech_duration_ms=settings.min_speech_seconds * 1000.0,
        min_silence_duration_ms=settings.min_silence_seconds * 1000.0,
        speech_pad_ms=0,
        audio_length_samples=wave.size,
    )
    spans = []
    for stamp in stamps:
        start = max(0, int(stamp["start"]))
        end = min(wave.size, int(stamp["end"]))
        if end <= start:
            continue
        first = start // VAD_FRAME_SAMPLES
        last = max(first + 1, math.ceil(end / VAD_FRAME_SAMPLES))
        max_prob = float(probs[first:last].max())
        spans.append((start / VAD_SAMPLE_RATE, end / VAD_SAMPLE_RATE, max_prob))
    return spans


# --------------------------------------------------------------------------- cutting


def merge_spans(
    spans: Iterable[Sequence[float]], duration: float, pad: float = 0.0
) -> list[tuple[float, float]]:
    """Pad spans by `pad` on both sides, clip them to [0, duration] and merge overlaps."""
    clipped = []
    for span in spans:
        start = max(0.0, float(span[0]) - pad)
        end = min(float(duration), float(span[1]) + pad)
        if end > start:
            clipped.append((start, end))
    merged: list[tuple[float, float]] = []
    for start, end in sorted(clipped):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def remove_spans(
    wave: np.ndarray,
    sample_rate: int,
    spans: list[tuple[float, float]],
    crossfade_seconds: float,
) -> np.ndarray:
    """Cut `spans` (seconds) out of `wave` and join the pieces with a crossfade.

    Spans are clipped to the signal and merged where they overlap (extra tuple
    items, such as detect_speech's max_prob, are ignored). At every join the
    last `crossfade_seconds` of the piece before and the first of the piece
    after overlap under an equal-power (sin/cos) crossfade, so the result is
    shorter than `len(wave) - cut samples` by one crossfade per join (less when
    a piece is shorter than the crossfade). No removed sample is kept. Returns
    a new float32 array, possibly empty when everything is cut.
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = wave.size
    cuts = []
    for span in spans:
        start = max(0, min(n, int(math.floor(float(span[0]) * sample_rate))))
        end = max(0, min(n, int(math.ceil(float(span[1]) * sample_rate))))
        if end > start:
            cuts.append((start, end))
    if not cuts:
        return wave.copy()
    cuts.sort()
    pieces = []
    position = 0
    for start, end in cuts:
        if start > position:
            pieces.append(wave[position:start])
        position = max(position, end)
    if position < n:
        pieces.append(wave[position:])
    if not pieces:
        return np.zeros(0, dtype=np.float32)

    fade = max(0, int(round(crossfade_seconds * sample_rate)))
    out = np.empty(sum(piece.size for piece in pieces), dtype=np.float32)
    filled = 0
    for piece in pieces:
        overlap = min(fade, filled, piece.size)
        if overlap:
            angle = (np.arange(overlap, dtype=np.float64) + 0.5) / overlap * (np.pi / 2)
            tail = out[filled - overlap : filled]
            tail[:] = tail * np.cos(angle) + piece[:overlap] * np.sin(angle)
        rest = piece.size - overlap
        out[filled : filled + rest] = piece[overlap:]
        filled += rest
    return out[:filled].copy()


# --------------------------------------------------------------------------- one file

_worker_model = None


def _init_worker() -> None:
    """Process-pool initializer: one thread and one VAD model per worker."""
    global _worker_model
    _worker_model = load_vad_model(threads=1)


def _scan_file(
    filename: str,
    path: str,
    clean_path: str | None,
    settings: VadSettings,
    sample_rate: int,
    model=None,
) -> dict[str, Any]:
    """Scan one recording; write its cleaned copy to `clean_path` when it has speech.

    Returns a small picklable dict (never the audio). Bad audio is reported as
    status "bad_audio" with the reason, not raised.
    """
    model = model if model is not None else _worker_model
    try:
        wave = read_audio(path, sample_rate)
    except BadAudioError as error:
        return {"status": "bad_audio", "reason": error.reason}
    duration = wave.size / sample_rate
    spans = detect_speech(resample(wave, sample_rate, VAD_SAMPLE_RATE), settings, model)
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
    write_ogg(clean_path, cleaned, sample_rate)
    result["status"] = "cleaned"
    result["removed_seconds"] = sum(end - start for start, end in cut)
    result["cleaned_seconds"] = cleaned.size / sample_rate
    return result


def _clean_relative_path(filename: str) -> Path:
    """The cleaned file's path relative to `out_dir/clean` (always an .ogg name)."""
    relative = Path(str(filename))
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise ValueError(f"filename {filename!r} must be a relative path inside the dataset")
    if relative.suffix.lower() != ".ogg":
        relative = relative.with_suffix(".ogg")
    return relative


# --------------------------------------------------------------------------- stage


def _fork_context():
    """A 'fork' multiprocessing context where available.

    Fork (not spawn) because Snakemake `script:` files have no `__main__`
    guard, which spawn/forkserver would re-execute in every worker.
    """
    import multiprocessing

    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


def run_vad(
    catalog: pd.DataFrame,
    audio_root_column: str,
    out_dir: str | os.PathLike,
    settings: VadSettings,
    threads: int = 1,
    on_bad_audio: str = "skip",
    sample_rate: int = 32000,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Find and remove speech in the recordings of `catalog`.

    `catalog` needs columns `filename` (train.csv-style relative name),
    `collection` and `audio_root_column` (usually "path": the audio file's
    absolute or cwd-relative path). Rows whose collection is scanned
    (`settings.collections`) are decoded at `sample_rate`, resampled to 16 kHz
    with soxr and run through Silero VAD, over `threads` worker processes
    (in-process when 1). Recordings with speech that are kept get a cleaned
    copy, padded spans removed, written as Ogg Vorbis to
    `out_dir/clean/<filename>` (a non-.ogg name gets the .ogg suffix); the
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
    if on_bad_audio not in BAD_AUDIO_CHOICES:
        raise ValueError(f"on_bad_audio must be one of {BAD_AUDIO_CHOICES}, got {on_bad_audio!r}")
    missing = {"filename", "collection", audio_root_column} - set(catalog.columns)
    if missing:
        raise KeyError(f"catalog is missing column(s) {sorted(missing)}")
    threads = max(1, int(threads))
    out_dir = Path(out_dir)
    clean_root = out_dir / "clean"

    scanned_mask = np.array([settings.scans(c) for c in catalog["collection"]], dtype=bool)
    positions = np.flatnonzero(scanned_mask)
    filenames = catalog["filename"].astype(str).to_numpy()
    paths = catalog[audio_root_column].astype(str).to_numpy()
    relatives = {int(i): _clean_relative_path(filenames[i]) for i in positions}
    seen: dict[Path, str] = {}
    for i, relative in relatives.items():
        if relative in seen:
            raise ValueError(
                f"two scanned rows would write the same cleaned file {relative}: "
                f"{seen[relative]!r} and {filenames[i]!r}"
            )
        seen[relative] = filenames[i]

    results: dict[int, dict[str, Any]] = {}
    with atomic_dir(clean_root) as tmp_root:

        def job(i: int) -> tuple[str, str, str]:
            return filenames[i], paths[i], str(tmp_root / relatives[i])

        def check(i: int, result: dict[str, Any]) -> None:
            if result["status"] == "bad_audio":
                log.warning("bad audio %s (%s): %s", filenames[i], paths[i], result["reason"])
                if on_bad_audio == "fail":
                    raise BadAudioError(paths[i], f"{result['reason']} (filename {filenames[i]})")
            results[i] = result

        bar = _progress_bar(len(positions), progress)
        try:
            if threads == 1 or len(positions) <= 1:
                model = load_vad_model() if len(positions) else None
                for i in map(int, positions):
                    try:
                        result = _scan_file(*job(i), settings, sample_rate, model)
                    except Exception as error:
                        raise _failure(i, filenames, paths, error) from error
                    check(i, result)
                    bar.update(1)
            else:
                workers = min(threads, len(positions))
                with ProcessPoolExecutor(
                    max_workers=workers, mp_context=_fork_context(), initializer=_init_worker
                ) as pool:
                    futures = {
                        pool.submit(_scan_file, *job(int(i)), settings, sample_rate): int(i)
                        for i in positions
                    }
                    try:
                        for future in as_completed(futures):
                            i = futures[future]
                            try:
                                result = future.result()
                            except Exception as error:
                                raise _failure(i, filenames, paths, error) from error
                            check(i, result)
                            bar.update(1)
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
        finally:
            bar.close()

    spans = _spans_frame(results, filenames)
    cleaned = _cleaned_catalog(catalog, results, paths, relatives, clean_root)
    stats = _stats(catalog, cleaned, results, filenames, paths, settings, threads, started)
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
    return spans, cleaned, stats


def _failure(i: int, filenames: np.ndarray, paths: np.ndarray, error: Exception) -> RuntimeError:
    """An unexpected error while scanning row `i`, naming its file."""
    return RuntimeError(f"VAD failed on {filenames[i]} ({paths[i]}): {error!r}")


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr (a no-op one when disabled)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="vad", unit="file", disable=not enabled, file=sys.stderr)


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


def _stats(
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
    collections = catalog["collection"].astype(str).to_numpy()
    counts = cleaned["vad_status"].value_counts()
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
    bad = [
        {"filename": str(filenames[i]), "path": str(paths[i]), "reason": results[i]["reason"]}
        for i in sorted(results)
        if results[i]["status"] == "bad_audio"
    ]
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
        "model": MODEL_FILES[DEFAULT_MODEL_KIND],
        "settings": {
            **asdict(settings),
            "collections": None if settings.collections is None else list(settings.collections),
        },
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    """Sorted keys, values rounded to milliseconds, plain floats."""
    return {key: round(float(values[key]), 3) for key in sorted(values)}


def vad_stage(
    catalog_path: str,
    out_spans: str,
    out_catalog: str,
    out_clean: str,
    out_manifest: str,
    settings: dict,
    tag: str,
    upstream: dict,
    threads: int = 1,
) -> dict:
    """The vad stage: speech spans, cleaned recordings and the catalog the mel stage reads.

    With `settings["enabled"]` false nothing is scanned: every row keeps its
    original audio (status not_scanned) and `out_clean` is an empty folder.
    """
    from .io import write_parquet
    from .manifest import StageManifest

    manifest = StageManifest("vad", tag, settings, upstream, [catalog_path])
    catalog = pd.read_parquet(catalog_path)
    enabled = settings.get("enabled", True)
    vad_settings = VadSettings(
        threshold=settings["threshold"],
        min_speech_seconds=settings["min_speech_seconds"],
        min_silence_seconds=settings["min_silence_seconds"],
        pad_seconds=settings["pad_seconds"],
        max_speech_fraction=settings["max_speech_fraction"],
        crossfade_seconds=settings["crossfade_seconds"],
        collections=tuple(settings["collections"]) if settings.get("collections") is not None else None,
    )
    if not enabled:
        # An empty scan list: no row is scanned, all keep their audio.
        vad_settings = replace(vad_settings, collections=())
    spans, cleaned, stats = run_vad(
        catalog,
        "path",
        os.path.dirname(out_clean),
        vad_settings,
        threads=threads,
        on_bad_audio=settings["on_bad_audio"],
    )
    write_parquet(out_spans, spans)
    write_parquet(out_catalog, cleaned)
    manifest.headline.update({k: v for k, v in stats.items() if k != "settings"})
    manifest.write(out_manifest)
    log.info(
        "vad: %d files scanned, %d with speech, %d cleaned, %d dropped, %d bad",
        stats["files_scanned"], stats["files_with_speech"], stats["files_cleaned"],
        stats["files_dropped"], stats["files_bad"],
    )
    return stats

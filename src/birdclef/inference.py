"""Soundscape inference with an exported OpenVINO bundle: the Kaggle-side code path.

Imports only numpy, pandas, soundfile, openvino and the package's torch-free
`audio` and `features` modules, so it runs in a Kaggle notebook without torch,
timm, librosa or Snakemake: the mel filterbank comes from the bundle's
``mel_filterbank.npy``. (`threadpoolctl` and `soxr` are used when present.)

A soundscape is decoded once (mono, resampled to the bundle's rate), cut into
consecutive windows (5 s in the competition), and turned into log-mel windows
with `features.log_mel` (the function the mel cache uses); every member then
runs on those same windows. The ensemble's probability is the weighted mean of
the members' clip probabilities, followed by the optional post-processing of
the bundle definition (see `postprocess_settings`). Row ids are
``<file stem>_<end second>``.

How it is fast (`predict_soundscapes`): decode + log-mel run in a pool of
worker threads (numpy, libsndfile and OpenVINO release the GIL), several files
ahead of the model; windows of several soundscapes are batched into one infer
call; every member is compiled with the THROUGHPUT hint, one thread per
stream, and fed through asynchronous infer requests with at most `streams`
requests in flight over all members, so the cores stay busy with whichever
of preprocessing or inference has work. The log-mel's BLAS call is held to one
thread while this runs (with threadpoolctl): multi-threaded BLAS inside
parallel workers made it 3-4x slower.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pandas as pd
import soundfile as sf

from .audio import BadAudioError, resample
from .features import frames_for, log_mel, window_waves

logger = logging.getLogger("birdclef.inference")

DEFAULT_WINDOWS = 12  # a 60 s soundscape in 5 s windows: the rows every test soundscape gets
# Windows per infer call: one one-minute soundscape. Per CPU second, b0 int8 ran
# fastest at 8-24 windows (activations stay in cache) and ~7 % slower at 48.
BATCH_WINDOWS = 12
PRECISION_HINTS = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}


@dataclass
class Member:
    """One compiled ensemble member and its infer requests (one per stream)."""

    name: str
    weight: float
    ir: Path
    compiled: Any
    requests: list[Any] = field(default_factory=list, repr=False)
    idle: queue.SimpleQueue = field(default_factory=queue.SimpleQueue, repr=False)


@dataclass
class Bundle:
    """An exported ensemble ready to run: compiled members, classes, mel settings."""

    root: Path
    classes: list[str]
    window_seconds: float
    mel: dict[str, Any]
    filterbank: np.ndarray = field(repr=False)
    members: list[Member]
    precision: str
    precision_hint: str
    threads: int
    definition: dict[str, Any] = field(repr=False)
    streams: int = 1
    postprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        """Sample rate the models were trained at."""
        return int(self.mel["sample_rate"])

    @property
    def window_samples(self) -> int:
        """Samples in one window."""
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Mel frames in one window (313 for 5 s at 32 kHz, hop 512)."""
        return frames_for(self.window_samples, int(self.mel["hop_length"]))

    def predict(self, mels: np.ndarray) -> np.ndarray:
        """Ensemble clip probabilities (n_windows, n_classes) for log-mel windows.

        `mels` is (n_windows, 1, n_mels, frames) float32 log-mel dB; every
        member runs on it (in batches of at most `BATCH_WINDOWS` windows) and
        the result is the weighted mean of the members' probabilities. No
        post-processing: that needs whole soundscapes (`predict_soundscapes`).
        """
        mels = np.ascontiguousarray(mels, dtype=np.float32)
        expected = (1, int(self.mel["n_mels"]), self.frames)
        if mels.ndim != 4 or mels.shape[1:] != expected:
            raise ValueError(
                f"mels must have shape (N, {', '.join(map(str, expected))}), got {mels.shape}"
            )
        runner = _Runner(self)
        jobs = [
            runner.submit(mels[begin : begin + BATCH_WINDOWS])
            for begin in range(0, len(mels), BATCH_WINDOWS)
        ]
        runner.wait()
        if not jobs:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate([job.result for job in jobs])


def postprocess_settings(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The post-processing of a bundle definition's ``"postprocess"`` section, checked.

    Keys (all off by default):

    - ``tta_shift_seconds`` (float, 0 = off): each window is also predicted
      from the audio shifted by -s and +s seconds (zero beyond the file's
      ends); its probability is the mean of the three views. Triples the mel
      and model work.
    - ``smoothing`` (float a in [0, 0.5), 0 = off): within a soundscape,
      p'[t] = (1 - 2a) p[t] + a p[t-1] + a p[t+1]; at the first and last
      window the missing neighbour's share stays on the window itself.
    """
    section = dict(definition.get("postprocess") or {})
    unknown = set(section) - {"tta_shift_seconds", "smoothing"}
    if unknown:
        raise ValueError(
            f"bundle.json postprocess has unknown keys {sorted(unknown)}; "
            "known: tta_shift_seconds, smoothing"
        )
    shift = float(section.get("tta_shift_seconds", 0.0) or 0.0)
    window = float(definition.get("window_seconds", 5.0))
    if not 0.0 <= shift < window:
        raise ValueError(
            f"postprocess.tta_shift_seconds must be in [0, window_seconds={window}), got {shift}"
        )
    smoothing = float(section.get("smoothing", 0.0) or 0.0)
    if not 0.0 <= smoothing < 0.5:
        raise ValueError(f"postprocess.smoothing must be in [0, 0.5), got {smoothing}")
    return {"tta_shift_seconds": shift, "smoothing": smoothing}


def load_bundle(
    bundle_dir: str | os.PathLike,
    threads: int = 2,
    precision_hint: str = "f32",
    streams: int | None = None,
) -> Bundle:
    """Read ``bundle.json`` from `bundle_dir` and compile every member on the CPU.

    Every member is compiled with INFERENCE_PRECISION_HINT=`precision_hint`
    ("f32" is what the export gate measured; "bf16" is faster on CPUs with
    bf16 units but was not gated), INFERENCE_NUM_THREADS=`threads` and
    `streams` streams (default: one per thread, the THROUGHPUT hint, one
    thread per stream; ``streams=1`` gives one stream with all threads, the
    LATENCY hint). IR paths in the bundle are relative to `bundle_dir`, so the
    bundle works from any working directory.
    """
    if precision_hint not in PRECISION_HINTS:
        raise ValueError(
            f"precision_hint must be one of {sorted(PRECISION_HINTS)}, got {precision_hint!r}"
        )
    threads = max(1, int(threads))
    streams = threads if streams is None else max(1, min(int(streams), threads))
    root = Path(bundle_dir).resolve()
    definition = json.loads((root / "bundle.json").read_text())
    mel = dict(definition["mel"])
    filterbank = np.load(root / definition.get("mel_filterbank", "mel_filterbank.npy"))
    expected_fb = (int(mel["n_mels"]), int(mel["n_fft"]) // 2 + 1)
    if filterbank.shape != expected_fb:
        raise ValueError(
            f"{root}/mel_filterbank.npy has shape {filterbank.shape}, "
            f"expected {expected_fb} for the bundle's mel settings"
        )
    postprocess = postprocess_settings(definition)
    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision_hint],
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    }
    classes = list(definition["classes"])
    window_samples = int(round(float(definition["window_seconds"]) * int(mel["sample_rate"])))
    expected_input = [1, int(mel["n_mels"]), frames_for(window_samples, int(mel["hop_length"]))]
    members = []
    for entry in definition["members"]:
        if float(entry.get("weight", 1.0)) == 0.0:
            logger.info("skipping member %r: weight 0", entry.get("name"))
            continue
        ir = root / entry["ir"]
        if Path(entry["ir"]).is_absolute() or not ir.exists():
            raise FileNotFoundError(
                f"member {entry.get('name')!r}: IR {entry['ir']!r} not found "
                f"relative to the bundle folder {root}"
            )
        compiled = core.compile_model(ir, "CPU", config)
        shape = compiled.inputs[0].get_partial_shape()
        dims = [dim.get_length() if dim.is_static else None for dim in shape]
        if len(dims) != 4 or dims[1:] != expected_input:
            raise ValueError(
                f"member {entry.get('name')!r} takes input {shape}, the bundle's mel settings "
                f"give (batch, {', '.join(map(str, expected_input))})"
            )
        n_out = compiled.outputs[0].get_partial_shape()[1]
        if n_out.is_static and n_out.get_length() != len(classes):
            raise ValueError(
                f"member {entry.get('name')!r} outputs {n_out.get_length()} classes, "
                f"the bundle lists {len(classes)}"
            )
        member = Member(
            name=str(entry.get("name", ir.parent.name)),
            weight=float(entry.get("weight", 1.0)),
            ir=ir,
            compiled=compiled,
        )
        for _ in range(streams):
            request = compiled.create_infer_request()
            member.requests.append(request)
            member.idle.put(request)
        members.append(member)
    if not members or sum(member.weight for member in members) <= 0:
        raise ValueError(f"{root}/bundle.json has no members with positive weight")
    bundle = Bundle(
        root=root,
        classes=classes,
        window_seconds=float(definition["window_seconds"]),
        mel=mel,
        filterbank=np.ascontiguousarray(filterbank, dtype=np.float32),
        members=members,
        precision=str(definition.get("precision", "unknown")),
        precision_hint=precision_hint,
        threads=threads,
        definition=definition,
        streams=streams,
        postprocess=postprocess,
    )
    logger.info(
        "loaded bundle %s: %d members, %s IR, OpenVINO CPU INFERENCE_PRECISION_HINT=%s, "
        "%d threads in %d streams, postprocess %s",
        root,
        len(members),
        bundle.precision,
        precision_hint,
        threads,
        streams,
        postprocess,
    )
    return bundle


class _Job:
    """One batch of windows on its way through every member."""

    def __init__(self, batch: np.ndarray, n_members: int, n_classes: int, weights: np.ndarray):
        self.batch = batch  # kept alive: the requests read it in place
        self.outputs = np.empty((n_members, len(batch), n_classes), dtype=np.float32)
        self.weights = weights
        self.pending = n_members
        self.lock = threading.Lock()
        self.result: np.ndarray | None = None

    def member_done(self, index: int, probabilities: np.ndarray) -> None:
        self.outputs[index] = probabilities
        with self.lock:
            self.pending -= 1
            last = self.pending == 0
        if last:
            self.result = np.tensordot(self.weights, self.outputs, axes=1).astype(np.float32)
            self.outputs = self.batch = None


class _Runner:
    """Asynchronous inference of every member, at most `bundle.streams` requests in flight."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        weights = np.array([member.weight for member in bundle.members], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.slots = threading.Semaphore(bundle.streams)
        self.errors: list[BaseException] = []
        for member in bundle.members:
            for request in member.requests:
                request.set_callback(self._done, None)  # userdata is given per start_async

    def _done(self, userdata) -> None:
        job, index, request = userdata
        member = self.bundle.members[index]
        try:
            job.member_done(index, request.get_output_tensor(0).data)
        except BaseException as error:  # noqa: BLE001 - re-raised by wait()
            self.errors.append(error)
        finally:
            member.idle.put(request)
            self.slots.release()

    def submit(self, batch: np.ndarray) -> _Job:
        """Start every member on `batch` (N, 1, n_mels, frames); returns the pending job."""
        if self.errors:
            raise RuntimeError("OpenVINO inference failed") from self.errors[0]
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        job = _Job(batch, len(self.bundle.members), len(self.bundle.classes), self.weights)
        for index, member in enumerate(self.bundle.members):
            self.slots.acquire()
            request = member.idle.get()
            request.start_async({0: batch}, (job, index, request), share_inputs=True)
        return job

    def wait(self) -> None:
        """Block until every submitted job is done; raise the first inference error."""
        for _ in range(self.bundle.streams):
            self.slots.acquire()
        for _ in range(self.bundle.streams):
            self.slots.release()
        for member in self.bundle.members:
            for request in member.requests:
                request.wait()
        if self.errors:
            raise RuntimeError("OpenVINO inference failed") from self.errors[0]


def _end_label(seconds: float) -> str:
    return str(int(round(seconds))) if abs(seconds - round(seconds)) < 1e-6 else f"{seconds:g}"


def decode_soundscape(path: str | os.PathLike, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Mono float32 audio of `path` at `sample_rate`, and notes on what had to be fixed.

    Stereo is averaged to mono, another sample rate is resampled (soxr; linear
    interpolation when soxr is missing), non-finite samples become 0; each
    fix adds a note. Raises `audio.BadAudioError` naming the file when it is
    missing, cannot be decoded or holds no samples.
    """
    notes = []
    if not os.path.isfile(path):
        raise BadAudioError(path, "file not found")
    try:
        with sf.SoundFile(path) as handle:
            source_rate, channels = int(handle.samplerate), int(handle.channels)
            wave = handle.read(dtype="float32", always_2d=True)
    except FileNotFoundError as error:
        raise BadAudioError(path, "file not found") from error
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        raise BadAudioError(path, f"cannot decode audio ({error})") from error
    if wave.shape[0] == 0:
        raise BadAudioError(path, "no audio samples (zero-length file)")
    if channels > 1:
        notes.append(f"{channels} channels mixed down to mono")
        mono = wave.mean(axis=1, dtype=np.float32)
    else:
        mono = np.ascontiguousarray(wave[:, 0])
    finite = np.isfinite(mono)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} NaN/infinite samples set to 0")
        mono = np.where(finite, mono, np.float32(0.0))
    if source_rate != sample_rate:
        notes.append(f"resampled from {source_rate} Hz to {sample_rate} Hz")
        try:
            mono = resample(mono, source_rate, sample_rate)
        except ImportError:  # no soxr: crude but keeps the rows
            notes.append("soxr missing: linear interpolation")
            n_out = int(round(mono.size * sample_rate / source_rate))
            source_times = np.arange(mono.size) / source_rate
            mono = np.interp(np.arange(n_out) / sample_rate, source_times, mono)
    return np.asarray(mono, dtype=np.float32), notes


def _shifted_windows(wave: np.ndarray, bundle: Bundle, n_windows: int, shift: int) -> np.ndarray:
    """`window_waves` of `wave` moved by `shift` samples (later audio for shift > 0)."""
    if shift > 0:
        wave = wave[shift:]
    elif shift < 0:
        wave = np.concatenate([np.zeros(-shift, dtype=np.float32), wave])
    return window_waves(wave, bundle.sample_rate, bundle.window_seconds, n_windows)


def soundscape_mels(
    path: str | os.PathLike,
    bundle: Bundle,
    default_windows: int = DEFAULT_WINDOWS,
    min_windows: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Log-mel windows of one soundscape and their row ids.

    Decodes `path` (`decode_soundscape`), cuts it into
    max(`min_windows`, ceil(duration / window_seconds)) consecutive windows
    (the last one zero-padded) and computes `features.log_mel` per window.
    Returns ((views * n_windows, 1, n_mels, frames) float32, row ids
    ``"<stem>_<end second>"``, e.g. ``soundscape_1_5`` ... ``soundscape_1_60``);
    views is 1, or 3 with ``postprocess.tta_shift_seconds`` (unshifted, -s, +s;
    view-major). `min_windows` defaults to `default_windows` (12 = a 60 s
    soundscape): a short file is padded with silence to all its rows; a corrupt,
    empty or missing file gives `default_windows` windows of silence. Every such
    fix (and stereo, resampling, silence, a longer file) is logged as a warning.
    """
    stem = Path(path).stem
    min_windows = default_windows if min_windows is None else min_windows
    rate, seconds = bundle.sample_rate, bundle.window_seconds
    try:
        wave, notes = decode_soundscape(path, rate)
        duration = wave.size / rate
        n_windows = max(1, math.ceil(duration / seconds - 1e-6))
        if n_windows < min_windows:
            notes.append(
                f"{duration:.2f} s long, shorter than {min_windows * seconds:g} s: padded "
                f"with silence to {min_windows} windows"
            )
            n_windows = min_windows
        elif n_windows > min_windows and min_windows > 0:
            notes.append(
                f"{duration:.2f} s long, longer than {min_windows * seconds:g} s: predicting "
                f"all {n_windows} windows"
            )
        elif abs(duration - n_windows * seconds) > 1.0 / rate:
            notes.append(f"{duration:.2f} s long: last window padded with silence")
        if not np.any(wave):
            notes.append("silent (all samples are 0)")
    except Exception as error:  # noqa: BLE001 - whatever the file does, its rows must exist
        reason = error.reason if isinstance(error, BadAudioError) else f"cannot decode ({error!r})"
        notes = [f"{reason}; predicting {default_windows} windows of silence"]
        wave = np.zeros(0, dtype=np.float32)
        n_windows = int(default_windows)
    if notes:
        logger.warning("%s: %s", path, "; ".join(notes))
    shift_samples = int(round(bundle.postprocess.get("tta_shift_seconds", 0.0) * rate))
    shifts = [0, -shift_samples, shift_samples] if shift_samples else [0]
    n_fft, hop = int(bundle.mel["n_fft"]), int(bundle.mel["hop_length"])
    top_db = bundle.mel.get("top_db", 80.0)
    mels = np.empty(
        (len(shifts) * n_windows, 1, int(bundle.mel["n_mels"]), bundle.frames), dtype=np.float32
    )
    for view, shift in enumerate(shifts):
        windows = _shifted_windows(wave, bundle, n_windows, shift)
        for index, window in enumerate(windows):
            mels[view * n_windows + index, 0] = log_mel(window, bundle.filterbank, n_fft, hop, top_db)
    row_ids = [f"{stem}_{_end_label((i + 1) * seconds)}" for i in range(n_windows)]
    return mels, row_ids


def smooth_windows(probabilities: np.ndarray, amount: float) -> np.ndarray:
    """Neighbour smoothing of one soundscape's (n_windows, n_classes) probabilities."""
    if amount <= 0 or len(probabilities) < 2:
        return probabilities
    previous = np.concatenate([probabilities[:1], probabilities[:-1]])
    following = np.concatenate([probabilities[1:], probabilities[-1:]])
    return ((1 - 2 * amount) * probabilities + amount * (previous + following)).astype(np.float32)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold BLAS (the log-mel's matmul) to one thread; the workers are the parallelism.

    Uses threadpoolctl when installed (Kaggle has it); otherwise set
    OPENBLAS_NUM_THREADS=1 before numpy is imported (the bundled predict.py does).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def iter_soundscape_mels(
    paths: Sequence[str | os.PathLike], bundle: Bundle, workers: int, **kwargs: Any
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """`soundscape_mels` of every path, in order, computed `workers` files in parallel.

    At most 2 * `workers` files are decoded ahead of the consumer; `kwargs` go
    to `soundscape_mels`. Call it inside `single_threaded_blas()`.
    """
    ahead = 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="soundscape-mels") as pool:
        pending: list[Future] = []
        position = 0
        for _ in range(len(paths)):
            while position < len(paths) and len(pending) < ahead:
                pending.append(pool.submit(soundscape_mels, paths[position], bundle, **kwargs))
                position += 1
            yield pending.pop(0).result()


def predict_soundscapes(
    paths: Iterable[str | os.PathLike],
    bundle: Bundle,
    progress: bool = True,
    default_windows: int = DEFAULT_WINDOWS,
    min_windows: int | None = None,
    workers: int | None = None,
    batch_windows: int = BATCH_WINDOWS,
) -> pd.DataFrame:
    """Ensemble probabilities for every window of every soundscape in `paths`.

    Returns a DataFrame with ``row_id`` followed by one column per class (the
    bundle's class order), probabilities in [0, 1] as float32: the weighted
    mean over members, then the bundle's post-processing (`postprocess_settings`).
    Every file gets at least `min_windows` rows (default `default_windows`, 12;
    see `soundscape_mels` for short, long, stereo, resampled, silent and
    corrupt files). Decode + log-mel run in `workers` threads (default
    `bundle.threads`) ahead of the model; windows of several files go into one
    infer call of up to `batch_windows` windows. With `progress`, logs the rate
    and remaining time about every 5 % of the files.
    """
    paths = list(paths)
    workers = bundle.threads if workers is None else max(1, int(workers))
    views = 3 if bundle.postprocess.get("tta_shift_seconds", 0.0) > 0 else 1
    smoothing = float(bundle.postprocess.get("smoothing", 0.0))
    runner = _Runner(bundle)
    files: list[tuple[list[str], _Job, int]] = []  # (row ids, job, first row in the job)
    batch: list[np.ndarray] = []
    batch_rows = 0
    waiting: list[tuple[list[str], int]] = []
    start = time.perf_counter()
    step = max(1, len(paths) // 20)
    windows = 0

    def flush() -> None:
        nonlocal batch, batch_rows, waiting
        if batch:
            job = runner.submit(np.concatenate(batch) if len(batch) > 1 else batch[0])
            files.extend((ids, job, first) for ids, first in waiting)
        batch, batch_rows, waiting = [], 0, []

    with single_threaded_blas():
        stream = iter_soundscape_mels(
            paths, bundle, workers, default_windows=default_windows, min_windows=min_windows
        )
        for index, (mels, ids) in enumerate(stream):
            waiting.append((ids, batch_rows))
            batch.append(mels)
            batch_rows += len(mels)
            windows += len(ids)
            if batch_rows >= batch_windows:
                flush()
            if progress and ((index + 1) % step == 0 or index + 1 == len(paths)):
                elapsed = max(time.perf_counter() - start, 1e-9)
                rate = (index + 1) / elapsed
                logger.info(
                    "%d/%d soundscapes, %.2f files/s, %.1f windows/s, ~%.0f s left",
                    index + 1,
                    len(paths),
                    rate,
                    windows / elapsed,
                    (len(paths) - index - 1) / rate,
                )
        flush()
        runner.wait()

    row_ids: list[str] = []
    blocks: list[np.ndarray] = []
    for ids, job, first in files:
        n = len(ids)
        probs = job.result[first : first + views * n].reshape(views, n, -1).mean(axis=0)
        blocks.append(smooth_windows(probs, smoothing))
        row_ids.extend(ids)
    probs = np.concatenate(blocks) if blocks else np.zeros((0, len(bundle.classes)), np.float32)
    frame = pd.DataFrame(probs.astype(np.float32, copy=False), columns=bundle.classes)
    frame.insert(0, "row_id", row_ids)
    return frame

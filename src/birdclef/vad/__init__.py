"""Voice activity detection: find recordists' spoken notes and cut them out.

Training recordings often start or end with the recordist reading a field note
aloud. This stage runs Silero VAD on every scanned recording, writes a cleaned
copy (speech removed, pieces joined with a short equal-power crossfade; 16-bit
FLAC) for each recording with speech, and flags recordings that are mostly
speech so the caller can leave them out of training. Recordings are scanned in
worker processes (fork), one inference thread each, several files per model
call.

Model: the Silero VAD 6 "sequence" ONNX export shipped inside the `silero_vad`
package (`silero_vad_16k_sequence.onnx`), compiled by OpenVINO in float32
(kind "openvino", the default). The graph is split in two at load time, both
halves built from the shipped file's own operations and weights: the per-frame
encoder (STFT and convolutions), which runs on the frames of several files in
one call, and the LSTM with the output layer, which runs several files as one
batch. Its probabilities match the stock model's within 1e-5. Per CPU second
it is about 2.5x faster than the same model through onnxruntime and 20x faster
than the TorchScript model run frame by frame; with decoding and resampling the
stage scans about 1,000 s of 32 kHz audio per CPU second (bench/bench_vad.py).
The onnxruntime "sequence", streaming "onnx" and TorchScript "jit" kinds stay
available (`load_vad_model`). Nothing is downloaded.

Importing `silero_vad` calls `torch.set_num_threads(1)` for the whole process;
this module puts the caller's thread count back.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.io import atomic_dir, atomic_path
from birdclef.common.progress import progress_bar
from birdclef.runtime.audio import BadAudioError, read_audio, resample

log = logging.getLogger(__name__)

VAD_SAMPLE_RATE = 16000
"""Silero VAD runs on 16 kHz audio."""

VAD_FRAME_SAMPLES = 512
"""One Silero VAD frame at 16 kHz (32 ms)."""

VAD_CONTEXT_SAMPLES = 64
"""Samples of the previous frame the 16 kHz model sees in front of each frame."""

MODEL_FILES = {
    "openvino": "silero_vad_16k_sequence.onnx",
    "sequence": "silero_vad_16k_sequence.onnx",
    "onnx": "silero_vad.onnx",
    "jit": "silero_vad.jit",
}
MODEL_ENGINES = {
    "openvino": "OpenVINO CPU, float32, files batched",
    "sequence": "onnxruntime CPU, float32, one file per call",
    "onnx": "onnxruntime CPU, float32, one frame per call",
    "jit": "TorchScript CPU, float32, one frame per call",
}
DEFAULT_MODEL_KIND = "openvino"

DEFAULT_BATCH_FILES = 8
"""Files whose frames go through the model together (per worker)."""

BATCH_MAX_SECONDS = 900.0
"""A batch is run early once its decoded audio reaches this many seconds (memory bound)."""

CLEAN_SUFFIX = ".flac"
"""Cleaned recordings are 16-bit FLAC: lossless (no second generation of Vorbis
artefacts), about 10x faster to write and 2x faster to read than Ogg Vorbis."""

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


def silero_model_path(kind: str = DEFAULT_MODEL_KIND) -> Path:
    """The model file of `kind` inside the installed `silero_vad` package.

    Found without importing `silero_vad` (which would import torch).
    """
    if kind not in MODEL_FILES:
        raise ValueError(f"unknown VAD model kind {kind!r}: expected one of {sorted(MODEL_FILES)}")
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the silero-vad package is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / MODEL_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(
            f"Silero VAD model file missing from the silero-vad package: {path}"
        )
    return path


def _import_silero(threads: int | None = None):
    """Import `silero_vad`, then set torch back to `threads` (None: the count it had)."""
    import torch

    requested = torch.get_num_threads() if threads is None else int(threads)
    try:
        import silero_vad

        return silero_vad
    finally:
        torch.set_num_threads(requested)


class OpenVinoSileroVad:
    """Silero VAD's shipped sequence model, compiled by OpenVINO, batching several files.

    The shipped graph maps frames `[n, 64 + 512]` (each frame with the last 64
    samples of the one before) through a per-frame encoder to `[1, n, 128]`,
    then an LSTM (batch 1) and a 1x1 convolution with a sigmoid. At load time
    it is cut into two compiled models that reuse its operations and weights:

    - encoder: frames -> features; frames from several files go in one call;
    - recurrent: the same LSTM, output convolution and sigmoid, rebuilt with a
      batch axis and per-file lengths so that files of similar length run as
      one batch (padding frames after a file's end do not change its outputs).

    Float32 is requested explicitly: OpenVINO defaults to bfloat16 on CPUs that
    have it, which moves the probabilities by up to ~3e-3.
    """

    def __init__(
        self,
        threads: int = 1,
        max_batch_files: int = DEFAULT_BATCH_FILES,
        encoder_frames: int = 4096,
        min_length_ratio: float = 0.6,
    ) -> None:
        import openvino as ov
        import openvino.opset13 as ops

        self.threads = max(1, int(threads))
        self.max_batch_files = max(1, int(max_batch_files))
        self.encoder_frames = max(1, int(encoder_frames))
        self.min_length_ratio = float(min_length_ratio)

        core = ov.Core()
        graph = core.read_model(str(silero_model_path("openvino")))
        by_type: dict[str, list] = {}
        for op in graph.get_ops():
            by_type.setdefault(op.get_type_name(), []).append(op)
        if len(by_type.get("LSTMSequence", [])) != 1 or len(by_type.get("Sigmoid", [])) != 1:
            raise RuntimeError("unexpected Silero sequence graph: need one LSTM and one sigmoid")
        lstm = by_type["LSTMSequence"][0]
        frames_input = [p for p in graph.get_parameters() if p.get_friendly_name() == "input"]
        encoder = ov.Model([lstm.input_value(0)], frames_input, "silero_encoder")

        # Output head of the shipped graph: sigmoid(conv1x1(relu(lstm)) + bias).
        bias_add = by_type["Sigmoid"][0].input_value(0).get_node()
        conv = bias_add.input_value(0).get_node()
        bias = bias_add.input_value(1).get_node().input_value(0)  # the [1] constant
        attrs = lstm.get_attributes()
        hidden = int(attrs["hidden_size"])
        x = ops.parameter([-1, -1, hidden], np.float32, name="features")
        h0 = ops.parameter([-1, 1, hidden], np.float32, name="h")
        c0 = ops.parameter([-1, 1, hidden], np.float32, name="c")
        lengths = ops.parameter([-1], np.int32, name="lengths")
        recurrent = ops.lstm_sequence(
            x, h0, c0, lengths,
            lstm.input_value(4), lstm.input_value(5), lstm.input_value(6),
            hidden, attrs["direction"], attrs["activations"],
            attrs["activations_alpha"], attrs["activations_beta"], attrs["clip"],
        )  # fmt: skip
        y = ops.relu(ops.squeeze(recurrent.output(0), [1]))  # [batch, time, hidden]
        logits = ops.convolution(
            ops.transpose(y, [0, 2, 1]),
            conv.input_value(1),
            conv.get_attributes()["strides"],
            conv.get_attributes()["pads_begin"],
            conv.get_attributes()["pads_end"],
            conv.get_attributes()["dilations"],
        )
        probs = ops.squeeze(ops.sigmoid(ops.add(logits, ops.reshape(bias, [1, 1, 1], False))), [1])
        head = ov.Model([probs.output(0)], [x, h0, c0, lengths], "silero_recurrent")

        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32",
            # Pinning would put every single-threaded worker process on the same core.
            "ENABLE_CPU_PINNING": False,
        }
        self.hidden = hidden
        self._encoder = core.compile_model(encoder, "CPU", config).create_infer_request()
        self._recurrent = core.compile_model(head, "CPU", config).create_infer_request()

    # -- frames

    @staticmethod
    def frame_count(n_samples: int) -> int:
        """Frames of a 16 kHz signal of `n_samples` (the last one zero-padded)."""
        return -(-int(n_samples) // VAD_FRAME_SAMPLES)

    @staticmethod
    def frames(wave: np.ndarray, first: int, last: int) -> np.ndarray:
        """Model input for frames [first, last) of `wave`: `[last - first, 576]`.

        Each row is the last 64 samples of the previous frame (zeros before the
        first) and the frame's 512 samples (zeros past the end), as the
        streaming model sees them.
        """
        frame, context = VAD_FRAME_SAMPLES, VAD_CONTEXT_SAMPLES
        block = np.zeros((last - first, context + frame), dtype=np.float32)
        body = wave[first * frame : last * frame]
        full = body.size // frame
        block[:full, context:] = body[: full * frame].reshape(full, frame)
        if full < last - first:
            block[full, context : context + body.size - full * frame] = body[full * frame :]
        block[1:, :context] = block[:-1, -context:]
        if first > 0:
            block[0, :context] = wave[first * frame - context : first * frame]
        return block

    # -- inference

    def _encode(self, waves: Sequence[np.ndarray], counts: Sequence[int]) -> list[np.ndarray]:
        """Encoder features `[n_frames, hidden]` of each wave; several files per call."""
        features = [np.empty((n, self.hidden), dtype=np.float32) for n in counts]
        pending: list[tuple[int, int, int]] = []  # (wave, first, last)
        pending_frames = 0

        def flush() -> None:
            nonlocal pending, pending_frames
            if not pending:
                return
            blocks = [self.frames(waves[i], a, b) for i, a, b in pending]
            batch = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
            out = self._encoder.infer({0: batch}, share_inputs=True)[0].reshape(-1, self.hidden)
            row = 0
            for i, a, b in pending:
                features[i][a:b] = out[row : row + b - a]
                row += b - a
            pending, pending_frames = [], 0

        for i, n in enumerate(counts):
            for first in range(0, n, self.encoder_frames):
                last = min(n, first + self.encoder_frames)
                pending.append((i, first, last))
                pending_frames += last - first
                if pending_frames >= self.encoder_frames:
                    flush()
        flush()
        return features

    def _recur(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Frame probabilities of files run as one LSTM batch (zero initial state)."""
        lengths = np.array([f.shape[0] for f in features], dtype=np.int32)
        batch = np.zeros((len(features), int(lengths.max()), self.hidden), dtype=np.float32)
        for row, feature in enumerate(features):
            batch[row, : feature.shape[0]] = feature
        state = np.zeros((len(features), 1, self.hidden), dtype=np.float32)
        out = self._recurrent.infer(
            {"features": batch, "h": state, "c": state, "lengths": lengths}, share_inputs=True
        )[0]
        return [out[row, :n].copy() for row, n in enumerate(lengths)]

    def batches(self, counts: Sequence[int]) -> list[list[int]]:
        """Indices grouped for the LSTM: similar lengths, at most `max_batch_files`.

        The LSTM's cost follows the longest file of a batch, so a file joins a
        batch only when it has at least `min_length_ratio` of its longest's frames.
        """
        order = sorted((i for i, n in enumerate(counts) if n > 0), key=lambda i: -counts[i])
        groups: list[list[int]] = []
        for i in order:
            if (
                groups
                and len(groups[-1]) < self.max_batch_files
                and counts[i] >= self.min_length_ratio * counts[groups[-1][0]]
            ):
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def probabilities(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-frame speech probabilities of each 16 kHz wave (float32 arrays)."""
        waves = [np.ascontiguousarray(np.asarray(w, dtype=np.float32).reshape(-1)) for w in waves]
        counts = [self.frame_count(w.size) for w in waves]
        out = [np.zeros(0, dtype=np.float32) for _ in waves]
        for group in self.batches(counts):
            features = self._encode([waves[i] for i in group], [counts[i] for i in group])
            for i, probs in zip(group, self._recur(features), strict=True):
                out[i] = probs
        return out


def load_vad_model(
    kind: str = DEFAULT_MODEL_KIND,
    threads: int | None = None,
    batch_files: int = DEFAULT_BATCH_FILES,
):
    """Load a Silero VAD model shipped in the `silero_vad` package.

    `kind` is "openvino" (the sequence ONNX model compiled by OpenVINO, up to
    `batch_files` files per model batch; the default and fastest), "sequence"
    (the same model through onnxruntime, one file per call), "onnx" (streaming
    ONNX) or "jit" (TorchScript); all give the same probabilities within 1e-5.
    `threads` is the OpenVINO inference thread count (default 1); for the other
    kinds (whose loading imports `silero_vad`, which sets torch to one thread)
    the torch thread count is set back to `threads`, or when None to the value
    it had before this call. `batch_files` only matters for "openvino".
    """
    silero_model_path(kind)  # validates kind and that the file is there
    if kind == "openvino":
        return OpenVinoSileroVad(
            threads=1 if threads is None else threads, max_batch_files=batch_files
        )
    # Only the import sets torch's thread count; load_silero_vad() leaves it alone.
    silero_vad = _import_silero(threads)
    if kind == "sequence":
        return silero_vad.load_silero_vad(sequence=True)
    if kind == "onnx":
        return silero_vad.load_silero_vad(onnx=True)
    return silero_vad.load_silero_vad()


def batch_speech_probabilities(waves_16k: Sequence[np.ndarray], model) -> list[np.ndarray]:
    """Silero's per-frame speech probabilities for several 16 kHz signals.

    Batched across files with the "openvino" model, one file at a time with
    the others. Each result has one value per 512-sample frame (the last frame
    zero-padded); an empty signal gives an empty array.
    """
    waves = [np.ascontiguousarray(np.asarray(w, dtype=np.float32).reshape(-1)) for w in waves_16k]
    if isinstance(model, OpenVinoSileroVad):
        results = model.probabilities(waves)
    else:
        results = [_single_file_probabilities(wave, model) for wave in waves]
    for wave, probs in zip(waves, results, strict=True):
        expected = math.ceil(wave.size / VAD_FRAME_SAMPLES)
        if probs.size != expected:
            raise RuntimeError(
                f"VAD model gave {probs.size} frame probabilities, expected {expected}"
            )
    return results


def _single_file_probabilities(wave: np.ndarray, model) -> np.ndarray:
    """Probabilities of one wave with a silero_vad model object (sequence, onnx or jit)."""
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
    return np.asarray(probs, dtype=np.float32).reshape(-1)


def speech_probabilities(wave_16k: np.ndarray, model) -> np.ndarray:
    """Silero's speech probability for every 512-sample frame of a 16 kHz signal.

    The last frame is zero-padded; an empty signal gives an empty array.
    """
    return batch_speech_probabilities([wave_16k], model)[0]


def spans_from_probabilities(
    probs: np.ndarray, n_samples: int, settings: VadSettings
) -> list[tuple[float, float, float]]:
    """Speech spans `(start_s, end_s, max_prob)` from frame probabilities.

    Silero's own state machine (`get_speech_timestamps_from_probs`) with the
    settings' threshold, minimum speech and minimum silence, no padding;
    `n_samples` is the 16 kHz signal's length.
    """
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    if probs.size == 0 or n_samples <= 0 or float(probs.max()) < settings.threshold:
        return []  # no frame reaches the threshold: the state machine finds nothing
    silero_vad = _import_silero()
    stamps = silero_vad.get_speech_timestamps_from_probs(
        probs.tolist(),
        sampling_rate=VAD_SAMPLE_RATE,
        threshold=settings.threshold,
        min_speech_duration_ms=settings.min_speech_seconds * 1000.0,
        min_silence_duration_ms=settings.min_silence_seconds * 1000.0,
        speech_pad_ms=0,
        audio_length_samples=int(n_samples),
    )
    spans = []
    for stamp in stamps:
        start = max(0, int(stamp["start"]))
        end = min(int(n_samples), int(stamp["end"]))
        if end <= start:
            continue
        first = start // VAD_FRAME_SAMPLES
        last = max(first + 1, math.ceil(end / VAD_FRAME_SAMPLES))
        max_prob = float(probs[first:last].max())
        spans.append((start / VAD_SAMPLE_RATE, end / VAD_SAMPLE_RATE, max_prob))
    return spans


def detect_speech(
    wave_16k: np.ndarray, settings: VadSettings, model
) -> list[tuple[float, float, float]]:
    """Speech spans `(start_s, end_s, max_prob)` in a 16 kHz mono signal.

    Spans are unpadded (settings.pad_seconds is applied when cutting), sorted,
    non-overlapping and clipped to the signal; `max_prob` is the highest frame
    probability inside the span. Empty and sub-frame signals give no spans.
    """
    wave = np.asarray(wave_16k, dtype=np.float32).reshape(-1)
    if wave.size == 0:
        return []
    return spans_from_probabilities(speech_probabilities(wave, model), wave.size, settings)


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


# --------------------------------------------------------------------------- scanning files


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
    import soundfile as sf

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


def _clean_relative_path(filename: str) -> Path:
    """The cleaned file's path relative to `out_dir/clean`: the filename, suffix `.flac`."""
    relative = Path(str(filename))
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise ValueError(f"filename {filename!r} must be a relative path inside the dataset")
    return relative.with_suffix(CLEAN_SUFFIX)


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
    if on_bad_audio not in BAD_AUDIO_CHOICES:
        raise ValueError(f"on_bad_audio must be one of {BAD_AUDIO_CHOICES}, got {on_bad_audio!r}")
    missing = {"filename", "collection", audio_root_column} - set(catalog.columns)
    if missing:
        raise KeyError(f"catalog is missing column(s) {sorted(missing)}")
    silero_model_path(model_kind)
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
        jobs = [
            ScanJob(int(i), filenames[i], paths[i], str(tmp_root / relatives[int(i)]))
            for i in positions
        ]
        bar = _progress_bar(len(jobs), progress)
        scan = scan_files(
            jobs, settings, threads, sample_rate, model_kind=model_kind, batch_files=batch_files
        )
        try:
            for i, result in scan:
                if result["status"] == "bad_audio":
                    log.warning("bad audio %s (%s): %s", filenames[i], paths[i], result["reason"])
                    if on_bad_audio == "fail":
                        raise BadAudioError(
                            paths[i], f"{result['reason']} (filename {filenames[i]})"
                        )
                results[i] = result
                bar.update(1)
        finally:
            scan.close()
            bar.close()

    spans = _spans_frame(results, filenames)
    cleaned = _cleaned_catalog(catalog, results, paths, relatives, clean_root)
    stats = _stats(catalog, cleaned, results, filenames, paths, settings, threads, started)
    stats["model"] = f"{MODEL_FILES[model_kind]} ({MODEL_ENGINES[model_kind]})"
    stats["batch_files"] = int(batch_files)
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
    from birdclef.common.io import write_parquet
    from birdclef.common.manifest import StageManifest

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
        collections=tuple(settings["collections"])
        if settings.get("collections") is not None
        else None,
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
        stats["files_scanned"],
        stats["files_with_speech"],
        stats["files_cleaned"],
        stats["files_dropped"],
        stats["files_bad"],
    )
    return stats

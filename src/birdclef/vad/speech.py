"""Speech in a 16 kHz signal: Silero's frame probabilities and the speech spans they give."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from birdclef.vad.model import _import_silero
from birdclef.vad.openvino_model import OpenVinoSileroVad
from birdclef.vad.settings import VAD_FRAME_SAMPLES, VAD_SAMPLE_RATE, VadSettings


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

"""What the VAD stage works with: its constants, its settings and where the model files are."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

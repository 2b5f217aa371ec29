"""`load_teacher`: the teacher the `teacher` settings (or a bundle's teacher entry) name;
`reference_runtime` and `inference_runtime`: which runtime runs a teacher where."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from birdclef.common.errors import DataError
from birdclef.runtime.teacher.base import KINDS, RUNTIMES, Teacher
from birdclef.runtime.teacher.birdnet import BirdNetTeacher
from birdclef.runtime.teacher.perch import PerchTeacher, perch_suffix

log = logging.getLogger(__name__)


def load_teacher(settings: Mapping, threads: int) -> Teacher:
    """The teacher the `teacher` settings name: keys `model` ("birdnet" | "perch"), `model_path`,
    `labels_path`, `runtime` ("auto" or one of `RUNTIMES`), `batch_windows`, `precision_hint`."""
    kind = settings.get("model", "birdnet")
    model_path, labels_path = settings.get("model_path"), settings.get("labels_path")
    batch_windows = settings.get("batch_windows", 16)
    runtime = settings.get("runtime", "auto")
    if kind not in KINDS:
        raise ValueError(f"teacher.model: expected one of {KINDS}, got {kind!r}")
    if runtime != "auto" and runtime not in RUNTIMES:
        raise ValueError(f"teacher.runtime: expected 'auto' or one of {RUNTIMES}, got {runtime!r}")
    if kind == "birdnet":
        if runtime == "auto":
            runtime = inference_runtime(kind, model_path)
        return BirdNetTeacher(model_path, labels_path, threads=threads, batch_windows=batch_windows,
                              runtime=runtime, precision_hint=settings.get("precision_hint", "f32"))
    if model_path is None or labels_path is None:
        missing = "teacher.model_path" if model_path is None else "teacher.labels_path"
        raise DataError(f"{missing} is not set: Perch v2 cannot be downloaded here; expected the path "
                        "of a local Perch v2 ONNX or TFLite model (teacher.model_path) and of its "
                        "labels file (teacher.labels_path)")
    if runtime == "auto":
        runtime = inference_runtime(kind, model_path)
    return PerchTeacher(model_path, labels_path, runtime=runtime, threads=threads,
                        batch_windows=batch_windows, precision_hint=settings.get("precision_hint", "f32"))


def needs_litert(kind: str, runtime: str) -> bool:
    """Whether a teacher needs the `ai-edge-litert` package: on LiteRT, and BirdNET on any runtime
    (its TFLite flatbuffer is parsed with LiteRT's tools to build the OpenVINO model)."""
    return runtime == "litert" or kind == "birdnet"


def reference_runtime(kind: str, path: str | os.PathLike | None) -> str:
    """The runtime a teacher's own release runs on, to time beside ours: LiteRT for BirdNET and a
    TFLite Perch, ONNX Runtime for an ONNX Perch."""
    if kind == "birdnet":
        return "litert"
    if kind != "perch":
        raise ValueError(f"teacher.model: expected one of {KINDS}, got {kind!r}")
    return {".onnx": "onnxruntime", ".tflite": "litert"}[perch_suffix(Path(path or ""))]


def inference_runtime(kind: str, path: str | os.PathLike | None) -> str:
    """The runtime that runs a teacher in the pipeline and in the Kaggle bundle ("auto"): OpenVINO
    (already there for the students) for BirdNET, its front end rebuilt (2.08x LiteRT's speed, 1.72x with
    decoding; the same probabilities within 2e-4: bench/README "BirdNET on OpenVINO"), and for an ONNX
    Perch; LiteRT for a TFLite Perch."""
    if kind == "birdnet":
        return "openvino"
    if kind != "perch":
        raise ValueError(f"teacher.model: expected one of {KINDS}, got {kind!r}")
    return "litert" if perch_suffix(Path(path or "")) == ".tflite" else "openvino"

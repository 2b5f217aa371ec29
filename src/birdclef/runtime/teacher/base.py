"""`Teacher`, a loaded teacher model (windows of raw audio -> embeddings and logits), and the
helpers its loaders share: LiteRT runners, label files, error messages.

`ai_edge_litert` is optional here (a Kaggle image without a LiteRT teacher needs no LiteRT):
it is imported at module level inside try/except and `litert_interpreter` says which package
to install when a teacher needs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import openvino as ov

from birdclef.common.errors import DataError

try:  # LiteRT: BirdNET and TFLite Perch (pip install ai-edge-litert)
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - a pinned dependency of the pipeline, optional on Kaggle
    Interpreter = None

log = logging.getLogger(__name__)

KINDS = ("birdnet", "perch")
RUNTIMES = ("litert", "onnxruntime", "openvino")
PRECISION_HINTS = ("f32", "bf16", "f16")
# pip names of the optional runtimes, for the error that says what to install
RUNTIME_PACKAGES = {"litert": "ai-edge-litert", "onnxruntime": "onnxruntime"}

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
        self.batch_windows = positive(batch_windows, "teacher.batch_windows")
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


def require(module: object, runtime: str, path: Path) -> None:
    """Raise an ImportError naming the pip package when `runtime`'s module (None) is missing."""
    if module is None:
        raise ImportError(f"{path}: the teacher runs on {runtime}, which is not installed: expected "
                          f"`pip install {RUNTIME_PACKAGES[runtime]}`")


def litert_interpreter(path: Path, expected: str, threads: int, content: bytes | None = None) -> Interpreter:
    """A LiteRT interpreter of `path` (or of the model bytes `content`), `threads` threads."""
    require(Interpreter, "litert", path)
    with readable(path, "LiteRT", expected):
        if content is not None:
            return Interpreter(model_content=content, num_threads=threads)
        return Interpreter(model_path=str(path), num_threads=threads)


def litert_runner(interpreter: Interpreter, input_index: int, embedding_index: int, logits_index: int) -> Runner:
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


def openvino_runner(model: ov.Model, path: Path, expected: str, threads: int, precision_hint: str,
                    embedding: str, label: str) -> Runner:
    """A batch -> (embeddings, logits) call of `model` compiled for the CPU: 1 stream x `threads`,
    `precision_hint`, no CPU pinning (it would put every one-thread worker process on the same core);
    outputs named `embedding` and `label`. A compile failure is a DataError naming `path`."""
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": precision_hint,
              "ENABLE_CPU_PINNING": False}
    with readable(path, "OpenVINO", expected):
        compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    embedding_output, label_output = compiled.output(embedding), compiled.output(label)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = request.infer({0: batch}, share_inputs=True)
        return np.array(result[embedding_output]), np.array(result[label_output])

    return run


def read_labels(path: Path, count: int, header_allowed: bool) -> list[str]:
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


def positive(value: int, setting: str) -> int:
    """`value` as an int >= 1, else a ValueError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{setting}: expected an integer >= 1, got {value!r}")
    return int(value)


@contextmanager
def readable(path: str | os.PathLike, runtime: str, expected: str) -> Iterator[None]:
    """Turn a runtime's failure to read or compile `path` into a DataError naming the file."""
    try:
        yield
    except DataError:
        raise
    except Exception as error:  # each runtime raises its own types (InvalidProtobuf, RuntimeError, ValueError)
        raise DataError(f"{path}: {runtime} cannot load it ({first_line(error)}); expected {expected}") from error


def dims(shape) -> list:
    """A shape as a list of ints, None for a dynamic dimension (-1, '?', a symbolic name)."""
    if isinstance(shape, ov.PartialShape):
        return [d.get_length() if d.is_static else None for d in shape]
    return [int(d) if isinstance(d, (int, np.integer)) and d > 0 else None for d in shape]


def describe(pairs: list[tuple[str, list]]) -> str:
    """"'inputs' [?, 96000], ..." for an error message."""
    return ", ".join(f"'{name}' [{', '.join('?' if d is None else str(d) for d in shape)}]" for name, shape in pairs)


def first_line(error: Exception) -> str:
    """The first line of an exception's message, at most 200 characters."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]

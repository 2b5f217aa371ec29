"""Loading Silero VAD: the installed `silero_vad` package's models, by kind.

Model: the Silero VAD 6 "sequence" ONNX export shipped inside the `silero_vad`
package (`silero_vad_16k_sequence.onnx`), compiled by OpenVINO in float32
(kind "openvino", the default; `birdclef.vad.openvino_model`). Per CPU second
it is about 2.5x faster than the same model through onnxruntime and 20x faster
than the TorchScript model run frame by frame; with decoding and resampling the
stage scans about 1,000 s of 32 kHz audio per CPU second (bench/bench_vad.py).
The onnxruntime "sequence", streaming "onnx" and TorchScript "jit" kinds stay
available (`load_vad_model`). Nothing is downloaded.

Importing `silero_vad` calls `torch.set_num_threads(1)` for the whole process;
this module puts the caller's thread count back. It is the only module that
imports `silero_vad` (inside `_import_silero`, so only when VAD runs).
"""

from __future__ import annotations

import torch

from birdclef.vad.openvino_model import OpenVinoSileroVad
from birdclef.vad.settings import DEFAULT_BATCH_FILES, DEFAULT_MODEL_KIND, silero_model_path


def _import_silero(threads: int | None = None):
    """Import `silero_vad`, then set torch back to `threads` (None: the count it had)."""
    requested = torch.get_num_threads() if threads is None else int(threads)
    try:
        import silero_vad

        return silero_vad
    finally:
        torch.set_num_threads(requested)


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

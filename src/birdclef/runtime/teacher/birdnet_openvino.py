"""BirdNET 2.4 as one OpenVINO model: its spectrogram front end rebuilt from the file's own constants,
the rest of its graph converted by OpenVINO's TFLite frontend.

OpenVINO 2026.4 cannot convert the whole file (its `RFFT2D` operator fails), so
the graph is cut at the two spectrograms' concatenation (`BIRDNET_SPECTROGRAM`,
[batch, 96, 511, 2]):

- **The body** (every operator from the first one that reads that tensor: a
  batch norm, the EfficientNet-like network, the classifier) is written as a
  TFLite flatbuffer into a temporary folder, converted by `ov.convert_model`
  with its weights copied, and the folder removed: the model file is still
  read in place and nothing of it is kept on disk (CC BY-NC-SA 4.0).
- **The front end** is built in OpenVINO ops from the constants the file
  holds for each spectrogram (`MEL_SPEC1`, `MEL_SPEC2`): the input scaled to
  [-1, 1] by its own minimum and maximum, frames of `frame_length` every
  `frame_step` samples (no padding), the Hann window, the real part of the DFT
  (BirdNET casts the complex STFT to float), the mel matrix, squared and
  raised to the layer's exponent, the mel axis reversed. Window, real DFT,
  mel matrix and reversal are all linear, so they are folded into one
  [frame_length, 96] matrix (computed in float64): one MatMul per
  spectrogram instead of a DFT op.

The result has BirdNET's input (INPUT [batch, 144000]) and two outputs,
``label`` (the logits) and ``embedding`` (`model/GLOBAL_AVG_POOL/Mean`). It
equals LiteRT's outputs within float rounding (bench/README, "BirdNET on
OpenVINO"); the tests compare them on real audio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset15 as ops

from birdclef.common.errors import DataError

try:  # LiteRT's flatbuffer tools (pip install ai-edge-litert); `birdnet.read_birdnet` says so when missing
    from ai_edge_litert.tools import flatbuffer_utils
except ImportError:  # pragma: no cover - a pinned dependency of the pipeline, optional on Kaggle
    flatbuffer_utils = None

BIRDNET_SPECTROGRAM = "model/concatenate/concat"
BIRDNET_SPECTROGRAMS = ("MEL_SPEC1", "MEL_SPEC2")
# the scaling of the input to [-1, 1]: ((x - min) / (max + eps) - shift) * scale, constants of MEL_SPEC1
SCALING = {"eps": "add/y", "shift": "Sub_1/y", "scale": "Mul/y"}
OUTPUT_NAMES = ("label", "embedding")
# friendly-name prefix of every front-end op (what an int8 quantization leaves in f32: nncf.IgnoredScope patterns)
FRONT_END_PREFIX = "birdnet_front_end/"
FLOAT32, INT32 = 0, 2  # TFLite TensorType codes


def birdnet_openvino_model(path: Path, model, embedding: int, expected: str) -> ov.Model:
    """BirdNET (the parsed flatbuffer `model` of `path`, whose graph is changed here) as one OpenVINO model.

    Outputs ``label`` (the graph's logits) and ``embedding`` (the tensor of index `embedding`);
    a DataError naming `path` and `expected` when the graph is not BirdNET 2.4's.
    """
    graph = model.subgraphs[0]
    names = {_name(tensor): index for index, tensor in enumerate(graph.tensors)}
    if BIRDNET_SPECTROGRAM not in names:
        raise DataError(f"{path}: no tensor '{BIRDNET_SPECTROGRAM}' to cut BirdNET's spectrogram front end from "
                        f"its network; expected {expected}")
    constants, scaling = front_end_constants(path, model, expected)
    window = int(graph.tensors[graph.inputs[0]].shape[-1])
    frames = {(window - c["frame"]) // c["step"] + 1 for c in constants.values()}
    if len(frames) != 1:
        raise DataError(f"{path}: the two spectrograms have {sorted(frames)} frames; expected one count {expected}")
    body = _body(path, model, names[BIRDNET_SPECTROGRAM], embedding, (96, frames.pop(), 2), expected)
    waves = ops.parameter([-1, window], np.float32, name="INPUT")
    spectrogram = front_end(waves, constants, scaling, window)
    _name_front_end(spectrogram)
    source = body.get_parameters()[0]
    for target in list(source.output(0).get_target_inputs()):
        target.replace_source_output(spectrogram.output(0))
    for output, name in zip(body.outputs, OUTPUT_NAMES, strict=True):
        output.get_tensor().set_names({name})
    return ov.Model(body.outputs, [waves], "birdnet")


def front_end_constants(path: Path, model, expected: str) -> tuple[dict, dict]:
    """(per spectrogram layer: frame, step, hann, mel [96, bins], exponent; the input scaling's eps,
    shift and scale) read from the parsed flatbuffer `model` of `path`."""
    names = {_name(tensor): index for index, tensor in enumerate(model.subgraphs[0].tensors)}
    constants = {spec: _spectrogram_constants(path, model, names, spec, expected) for spec in BIRDNET_SPECTROGRAMS}
    scaling = {key: _constant(path, model, names, f"model/MEL_SPEC1/{name}", expected).item()
               for key, name in SCALING.items()}
    return constants, scaling


def scaled_input(waves, scaling: dict):
    """BirdNET's input scaling of `waves` [batch, samples] to [-1, 1]: ((x - min) / (max + eps) - shift) * scale."""
    low = ops.reduce_min(waves, np.array([1]), True)
    shifted = ops.subtract(waves, low)
    high = ops.add(ops.reduce_max(shifted, np.array([1]), True), np.float32(scaling["eps"]))
    return ops.multiply(ops.subtract(ops.divide(shifted, high), np.float32(scaling["shift"])),
                        np.float32(scaling["scale"]))


def front_end(waves, constants: dict, scaling: dict, window: int):
    """The two spectrograms of `waves` [batch, window], concatenated as BirdNET's [batch, 96, frames, 2]."""
    scaled = scaled_input(waves, scaling)
    channels = []
    for c in constants.values():
        count = (window - c["frame"]) // c["step"] + 1
        starts = c["step"] * np.arange(count)[:, None]
        frames = ops.gather(scaled, ops.constant((starts + np.arange(c["frame"])[None]).astype(np.int32)),
                            np.int32(1))  # [batch, count, frame]
        bins = np.arange(c["frame"] // 2 + 1)
        real_dft = np.cos(2 * np.pi * np.outer(np.arange(c["frame"]), bins) / c["frame"])
        folded = (c["hann"][:, None].astype(np.float64) * real_dft) @ c["mel"].T.astype(np.float64)
        mel = ops.matmul(frames, ops.constant(folded[:, ::-1].astype(np.float32)), False, False)
        power = ops.power(ops.multiply(mel, mel), np.float32(c["exponent"]))  # [batch, count, 96]
        channels.append(ops.unsqueeze(ops.transpose(power, np.array([0, 2, 1])), np.array([3])))
    return ops.concat(channels, 3)


def _name_front_end(last) -> None:
    """Prefix the friendly name of every op from the front end's output back to the input parameter
    with `FRONT_END_PREFIX` (the parameter keeps its name)."""
    stack, seen = [last], set()
    while stack:
        node = stack.pop()
        if node.get_name() in seen or node.get_type_name() == "Parameter":
            continue
        seen.add(node.get_name())
        node.set_friendly_name(FRONT_END_PREFIX + node.get_friendly_name())
        stack.extend(value.get_node() for value in node.input_values())


def _body(path: Path, model, cut: int, embedding: int, shape: tuple[int, int, int], expected: str) -> ov.Model:
    """The operators from the first reader of tensor `cut` on, converted by OpenVINO (weights copied)."""
    graph = model.subgraphs[0]
    first = next((k for k, op in enumerate(graph.operators) if cut in list(op.inputs)), None)
    if first is None:
        raise DataError(f"{path}: nothing reads '{BIRDNET_SPECTROGRAM}'; expected {expected}")
    graph.operators = graph.operators[first:]
    made = {cut} | {int(i) for op in graph.operators for i in op.outputs}
    for op in graph.operators:
        for index in (int(i) for i in op.inputs if i >= 0):
            data = model.buffers[graph.tensors[index].buffer].data
            if index not in made and data is None:
                raise DataError(f"{path}: the network reads '{_name(graph.tensors[index])}', computed before "
                                f"the spectrograms; expected {expected}")
    graph.inputs = [cut]
    graph.outputs = [*graph.outputs, embedding]
    graph.tensors[cut].shape, graph.tensors[cut].shapeSignature = [1, *shape], [-1, *shape]
    with tempfile.TemporaryDirectory(prefix="birdnet_body_") as folder:
        body_file = Path(folder) / "body.tflite"
        body_file.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
        try:
            return ov.convert_model(str(body_file), share_weights=False)
        except Exception as error:  # OpenVINO's frontend raises its own types
            raise DataError(f"{path}: OpenVINO cannot convert BirdNET's network ({str(error).splitlines()[0][:200]}); "
                            f"expected {expected}") from error


def _spectrogram_constants(path: Path, model, names: dict, spec: str, expected: str) -> dict:
    """Frame length and step, Hann window, mel matrix [96, bins] and exponent of one spectrogram layer."""
    read = lambda name: _constant(path, model, names, f"model/{spec}/{name}", expected)  # noqa: E731
    constants = {"frame": int(read("stft/frame_length").item()), "step": int(read("stft/frame_step").item()),
                 "hann": read("stft/hann_window/sub_2"), "mel": read("Tensordot/MatMul"),
                 "exponent": float(read("truediv_1").item())}
    if constants["hann"].shape != (constants["frame"],) or constants["mel"].shape != (96, constants["frame"] // 2 + 1):
        raise DataError(f"{path}: {spec} has a window of {constants['hann'].shape} and a mel matrix of "
                        f"{constants['mel'].shape} for frames of {constants['frame']}; expected {expected}")
    return constants


def _constant(path: Path, model, names: dict, name: str, expected: str) -> np.ndarray:
    """The constant tensor `name` of the flatbuffer as a numpy array (float32 or int32)."""
    index = names.get(name)
    tensor = model.subgraphs[0].tensors[index] if index is not None else None
    data = model.buffers[tensor.buffer].data if tensor is not None else None
    if data is None or tensor.type not in (FLOAT32, INT32):
        raise DataError(f"{path}: no constant '{name}' (BirdNET's spectrogram layers); expected {expected}")
    array = np.frombuffer(bytes(data), np.float32 if tensor.type == FLOAT32 else np.int32)
    return array.reshape(tensor.shape) if len(tensor.shape) else array


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name

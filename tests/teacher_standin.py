"""A tiny stand-in for Perch v2 (Google's bird model), for the teacher tests and the benchmark.

Perch v2 cannot be downloaded here, so the tests build a model with its
interface: one float32 input `inputs` [batch, 160000] (5 s at 32 kHz), outputs
`embedding` [batch, 1536] and `label` [batch, 14795] (logits). The network is
small (~1 MB): the window cut into 1,000-sample frames, Linear(1000, 16) and a
ReLU per frame, the mean over frames, then Linear(16, embedding_dim) ->
`embedding` and Linear(16, n_labels) -> `label`.

The same weights are written three ways: a torch module (the reference
output), an ONNX file and a TFLite file. The ONNX file is the module exported
by `torch.onnx.export` (the `onnx` package is a dev dependency); the TFLite
file is written directly with LiteRT's flatbuffer schema, since TFLite
conversion needs TensorFlow. Keyword arguments make the broken variants the
error tests need (another input length, another output name, a fixed batch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ai_edge_litert import schema_py_generated as tfl
from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray

PERCH_WINDOW = 160000
PERCH_EMBEDDING_DIM = 1536
PERCH_CLASSES = 14795
FRAME = 1000
HIDDEN = 16


class PerchStandIn(torch.nn.Module):
    """The stand-in network in torch: frames -> Linear + ReLU -> mean -> two heads."""

    def __init__(self, window: int, embedding_dim: int, n_labels: int, seed: int) -> None:
        super().__init__()
        self.frames = window // FRAME
        self.frame = torch.nn.Linear(FRAME, HIDDEN)
        self.embedding = torch.nn.Linear(HIDDEN, embedding_dim)
        self.label = torch.nn.Linear(HIDDEN, n_labels)
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            for layer in (self.frame, self.embedding, self.label):
                fan_in = layer.weight.shape[1]
                layer.weight.copy_(torch.from_numpy(rng.normal(0, fan_in**-0.5, layer.weight.shape)))
                layer.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, layer.bias.shape)))
        self.eval()

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, label, _ = self.outputs(inputs)
        return embedding, label

    def outputs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`embedding`, `label` and the per-frame features [batch, frames, 16] (`spatial_embedding`)."""
        spatial = torch.relu(self.frame(inputs.reshape(-1, self.frames, FRAME)))
        hidden = spatial.mean(dim=1)
        return self.embedding(hidden), self.label(hidden), spatial

    def weights(self) -> dict[str, np.ndarray]:
        """The float32 weights by layer: frame_w [16, 1000], frame_b, embedding_w, ..."""
        return {
            f"{name}_{kind[0]}": getattr(layer, kind).detach().numpy().astype(np.float32)
            for name, layer in (("frame", self.frame), ("embedding", self.embedding), ("label", self.label))
            for kind in ("weight", "bias")
        }


def build_perch_standin(
    path: str | os.PathLike,
    n_labels: int = PERCH_CLASSES,
    embedding_dim: int = PERCH_EMBEDDING_DIM,
    seed: int = 0,
    *,
    window: int = PERCH_WINDOW,
    input_name: str = "inputs",
    label_output: str = "label",
    extra_output: bool = False,
    fixed_batch: int | None = None,
    signature: bool = False,
) -> PerchStandIn:
    """Write the stand-in to `path` (.onnx or .tflite by suffix); return its torch module.

    Variants: `window` (input length, a multiple of 1000), `input_name`,
    `label_output` (the logits' output name), `extra_output` (adds a
    `spatial_embedding` output [batch, frames, 16], as some conversions carry),
    `fixed_batch` (a static batch dimension instead of a dynamic one) and, for
    TFLite, `signature` (TF-converter tensor names such as
    `serving_default_inputs:0`, the Perch names only in a `serving_default`
    signature).
    """
    model = PerchStandIn(window, embedding_dim, n_labels, seed)
    names = {"input": input_name, "embedding": "embedding", "label": label_output}
    suffix = Path(path).suffix
    if suffix == ".onnx":
        _write_onnx(Path(path), model, names, extra_output, fixed_batch)
    elif suffix == ".tflite":
        Path(path).write_bytes(bytes(_tflite_bytes(model, names, extra_output, fixed_batch, signature)))
    else:
        raise ValueError(f"{path}: expected a .onnx or .tflite path")
    return model


def write_perch_labels(path: str | os.PathLike, names: Sequence[str], header: bool = True) -> Path:
    """Perch's labels file: one scientific name per line, after a header line when `header`."""
    lines = (["inat2024_fsd50k"] if header else []) + [str(n) for n in names]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def standin_names(n_labels: int = PERCH_CLASSES) -> list[str]:
    """Made-up binomials for the stand-in's classes ('Genus0 species0', ...)."""
    return [f"Genus{k // 7} species{k}" for k in range(n_labels)]


# -- ONNX, exported from the torch module


class _ExportedStandIn(torch.nn.Module):
    """The stand-in's outputs for export: embedding, label and, when `extra_output`, the frames."""

    def __init__(self, model: PerchStandIn, extra_output: bool) -> None:
        super().__init__()
        self.model, self.extra_output = model, extra_output

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding, label, spatial = self.model.outputs(inputs)
        return (embedding, label, spatial) if self.extra_output else (embedding, label)


def _write_onnx(path: Path, model: PerchStandIn, names: dict, extra_output: bool, fixed_batch: int | None) -> None:
    """The stand-in as an ONNX opset-17 graph, with a dynamic batch axis unless `fixed_batch`."""
    inputs = [names["input"]]
    outputs = [names["embedding"], names["label"]] + (["spatial_embedding"] if extra_output else [])
    dynamic = None if fixed_batch else {name: {0: "batch"} for name in inputs + outputs}
    example = torch.zeros(fixed_batch or 2, model.frames * FRAME)
    torch.onnx.export(_ExportedStandIn(model, extra_output), (example,), path, input_names=inputs,
                      output_names=outputs, dynamic_axes=dynamic, opset_version=17, dynamo=False)


# -- TFLite, written with LiteRT's flatbuffer schema


def _tflite_bytes(
    model: PerchStandIn, names: dict, extra_output: bool, fixed_batch: int | None, signature: bool
) -> bytearray:
    """The stand-in as a TFLite graph (RESHAPE, FULLY_CONNECTED + RELU, MEAN, FULLY_CONNECTED)."""
    buffers, tensors, operators = [tfl.BufferT()], [], []
    batch = fixed_batch or 1

    def tensor(name, shape, data=None, dynamic=True):
        made = tfl.TensorT()
        made.name, made.shape = name, list(shape)
        made.type = tfl.TensorType.INT32 if data is not None and data.dtype == np.int32 else tfl.TensorType.FLOAT32
        if dynamic and not fixed_batch:
            made.shapeSignature = [-1, *shape[1:]]
        made.buffer = 0
        if data is not None:
            buffers.append(tfl.BufferT())
            buffers[-1].data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            made.buffer = len(buffers) - 1
        tensors.append(made)
        return len(tensors) - 1

    codes = [tfl.BuiltinOperator.RESHAPE, tfl.BuiltinOperator.FULLY_CONNECTED, tfl.BuiltinOperator.MEAN]

    def op(code, inputs, outputs, options_type, options):
        made = tfl.OperatorT()
        made.opcodeIndex, made.inputs, made.outputs = codes.index(code), inputs, outputs
        made.builtinOptionsType, made.builtinOptions = options_type, options
        operators.append(made)

    weights = model.weights()

    def fully_connected(x, prefix, output, relu):
        options = tfl.FullyConnectedOptionsT()
        options.fusedActivationFunction = tfl.ActivationFunctionType.RELU if relu else 0
        w, b = (tensor(f"{prefix}_{k}", weights[f"{prefix}_{k}"].shape, weights[f"{prefix}_{k}"], False)
                for k in ("w", "b"))
        op(codes[1], [x, w, b], [output], tfl.BuiltinOptions.FullyConnectedOptions, options)

    tf_names = dict(names)
    if signature:  # TensorFlow's converter: the model's names only in the signature
        tf_names = {"input": f"serving_default_{names['input']}:0", "embedding": "StatefulPartitionedCall:0",
                    "label": "StatefulPartitionedCall:1"}
    frames, dim, classes = model.frames, model.embedding.out_features, model.label.out_features
    x = tensor(tf_names["input"], [batch, frames * FRAME])
    framed = tensor("frames", [batch * frames, FRAME])
    op(codes[0], [x, tensor("to_frames", [2], np.array([-1, FRAME], np.int32), False)], [framed], 0, None)
    per_frame = tensor("frame_relu", [batch * frames, HIDDEN])
    fully_connected(framed, "frame", per_frame, relu=True)
    spatial = tensor("spatial_embedding" if extra_output else "spatial", [batch, frames, HIDDEN])
    shape = tensor("to_windows", [3], np.array([-1, frames, HIDDEN], np.int32), False)
    op(codes[0], [per_frame, shape], [spatial], 0, None)
    hidden = tensor("hidden", [batch, HIDDEN])
    reducer = tfl.ReducerOptionsT()
    reducer.keepDims = False
    axis = tensor("axis", [1], np.array([1], np.int32), False)
    op(codes[2], [spatial, axis], [hidden], tfl.BuiltinOptions.ReducerOptions, reducer)
    embedding = tensor(tf_names["embedding"], [batch, dim])
    fully_connected(hidden, "embedding", embedding, relu=False)
    label = tensor(tf_names["label"], [batch, classes])
    fully_connected(hidden, "label", label, relu=False)
    outputs = [embedding, label] + ([spatial] if extra_output else [])
    return convert_object_to_bytearray(_tflite_model(tensors, operators, buffers, codes, x, outputs, names, signature))


def _tflite_model(tensors, operators, buffers, codes, x, outputs, names, signature) -> tfl.ModelT:
    """The ModelT of one subgraph, with a `serving_default` signature when `signature`."""
    graph = tfl.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs = tensors, operators, [x], outputs
    graph.name = "main"
    made = tfl.ModelT()
    made.version, made.description, made.subgraphs, made.buffers = 3, "perch stand-in", [graph], buffers
    made.operatorCodes = []
    for code in codes:
        opcode = tfl.OperatorCodeT()
        opcode.builtinCode = opcode.deprecatedBuiltinCode = code
        opcode.version = 1
        made.operatorCodes.append(opcode)
    if signature:
        sig = tfl.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = "serving_default", 0
        sig.inputs, sig.outputs = [_tensor_map(names["input"], x)], []
        for key, index in zip(("embedding", "label", "spatial_embedding"), outputs, strict=False):
            sig.outputs.append(_tensor_map(names.get(key, key), index))
        made.signatureDefs = [sig]
    return made


def _tensor_map(name: str, index: int) -> tfl.TensorMapT:
    made = tfl.TensorMapT()
    made.name, made.tensorIndex = name, index
    return made

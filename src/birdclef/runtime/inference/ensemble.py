"""One OpenVINO model of every ensemble member (`ensemble_model`), each on its mel group's input,
and optionally the teacher (an ONNX Perch's IR) on its own audio input with the class mapping in the graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

MEMBER_OUTPUT = "member_probabilities"
TEACHER_INPUT = "teacher_audio"
TEACHER_OUTPUT = "teacher_probabilities"
# The teacher's logit output (Perch v2's `label`) and the clip of `runtime.teacher.mapping.probabilities`.
TEACHER_LOGITS = "label"
LOGIT_CLIP = 60.0


def ensemble_model(
    models: Sequence[Any],
    input_shapes: Sequence[Sequence[int]],
    member_inputs: Sequence[int],
    teacher: tuple[Any, Sequence[Sequence[int]]] | None = None,
) -> Any:
    """One ``ov.Model`` that runs every member model on the input of its mel group.

    The model has one f32 input per entry of `input_shapes`, ``mels_<g>`` of
    shape (N, *input_shapes[g]); each of `models` (read IR, one input (N,
    *input_shape), one output (N, n_classes)) is wired to input
    `member_inputs[i]`. The output ``member_probabilities`` stacks the
    members' outputs as (n_members, N, n_classes). The members' operations
    are only renamed (prefix ``member<i>/``), so every member computes exactly
    what it computes on its own (OpenVINO computes identical subgraphs once,
    so the same IR listed twice on one input costs one member). Compiled
    once, the ensemble needs one infer request per batch instead of one per
    member, and each stream (pinned to its own core) runs whole batches
    through every member. One compiled model per member put two members'
    requests on the same core most of the time: OpenVINO pins stream k of
    every compiled model to core k.

    With `teacher` = (teacher model, mapping) the model gets a last input
    ``teacher_audio`` (N_t, window samples) f32 (N_t need not be N: the
    teacher reads each window once, the members every TTA view) and a second
    output ``teacher_probabilities`` (N_t, n_classes): the teacher's ``label``
    logits mapped onto the bundle's classes in the graph (`_teacher_output`).
    The teacher model's other outputs (Perch's embedding) are left out.
    """
    if len(member_inputs) != len(models):
        raise ValueError(f"{len(models)} models but {len(member_inputs)} member_inputs")
    unused = sorted(set(range(len(input_shapes))) - set(member_inputs))
    if unused or any(not 0 <= g < len(input_shapes) for g in member_inputs):
        raise ValueError(
            f"member_inputs {list(member_inputs)} must use every input 0..{len(input_shapes) - 1}"
            " and no other"
        )
    inputs = _inputs(input_shapes)
    outputs = [
        _member_output(index, model, inputs[g])
        for index, (model, g) in enumerate(zip(models, member_inputs, strict=True))
    ]
    stacked = ops.concat(outputs, 0) if len(outputs) > 1 else outputs[0]
    result = ops.result(stacked)
    result.output(0).set_names({MEMBER_OUTPUT})
    results = [result]
    if teacher is not None:
        teacher_model, mapping = teacher
        audio = _teacher_input(teacher_model)
        inputs.append(audio)
        results.append(_teacher_output(teacher_model, mapping, audio))
    return ov.Model(results, inputs, "ensemble")


def _teacher_input(model: Any) -> Any:
    """The ensemble's ``teacher_audio`` input: (N_t, the teacher's window samples) f32."""
    shape = model.get_parameters()[0].get_partial_shape()
    if shape.rank.is_dynamic or len(shape) != 2 or shape[1].is_dynamic:
        raise ValueError(f"the teacher model takes input {shape}; expected (batch, window samples)")
    parameter = ops.parameter([-1, shape[1].get_length()], ov.Type.f32, name=TEACHER_INPUT)
    parameter.output(0).set_names({TEACHER_INPUT})
    return parameter


def teacher_index_matrix(mapping: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(indices (n_classes, K) int32, known (n_classes,) float32) of a teacher mapping.

    Row k lists class k's teacher classes, padded to K (the longest list, at
    least 1) with its own first index, so the row's maximum is unchanged; an
    unmapped class's row is 0s, and ``known`` is 0 there (its probability is 0).
    """
    width = max([1, *(len(indices) for indices in mapping)])
    matrix = np.zeros((len(mapping), width), dtype=np.int32)
    for k, indices in enumerate(mapping):
        if indices:
            matrix[k] = list(indices) + [indices[0]] * (width - len(indices))
    known = np.array([1.0 if indices else 0.0 for indices in mapping], dtype=np.float32)
    return matrix, known


def _teacher_output(model: Any, mapping: Sequence[Sequence[int]], source_input: Any) -> Any:
    """The teacher's graph renamed (``teacher/``), fed by `source_input`: the result ``teacher_probabilities``.

    The mapping of `birdclef.runtime.teacher.mapping` in the graph: per class
    the maximum of its teacher classes' logits (Gather of the ``label``
    output with the padded (n_classes, K) index matrix, ReduceMax over K),
    clipped to +-60 and passed through a sigmoid, 0 for an unmapped class;
    (N_t, n_classes) f32.
    """
    logits = next((result.input_value(0) for result in model.get_results()
                   if TEACHER_LOGITS in result.input_value(0).get_names()), None)
    if logits is None:
        raise ValueError(f"the teacher model has no output named {TEACHER_LOGITS!r}")
    _graft(model, "teacher/", source_input)
    if logits.get_element_type() != ov.Type.f32:
        logits = ops.convert(logits, ov.Type.f32).output(0)
    matrix, known = teacher_index_matrix(mapping)
    gathered = ops.gather(logits, ops.constant(matrix), ops.constant(np.int64(1)))  # (N_t, n_classes, K)
    mapped = ops.reduce_max(gathered, ops.constant(np.array([2], np.int64)), keep_dims=False)
    clipped = ops.clamp(mapped, -LOGIT_CLIP, LOGIT_CLIP)
    # Select, not a Multiply by the 0/1 mask: OpenVINO 2026.4's CPU plugin fuses that Multiply into the
    # ReduceMax on the wrong axis (the mask then zeroes whole windows)
    zeros = ops.constant(np.zeros((1, len(known)), np.float32))
    probabilities = ops.select(ops.constant(known[None, :] > 0), ops.sigmoid(clipped), zeros)
    result = ops.result(probabilities)
    result.output(0).set_names({TEACHER_OUTPUT})
    return result


def _inputs(input_shapes: Sequence[Sequence[int]]) -> list[Any]:
    """The ensemble's f32 inputs: ``mels_<g>`` of shape (N, *input_shapes[g])."""
    inputs = []
    for g, shape in enumerate(input_shapes):
        parameter = ops.parameter([-1, *map(int, shape)], ov.Type.f32, name=f"mels_{g}")
        parameter.output(0).set_names({f"mels_{g}"})
        inputs.append(parameter)
    return inputs


def _graft(model: Any, prefix: str, source_input: Any) -> None:
    """Rename `model`'s operations and tensors with `prefix` and feed its one input from `source_input`
    (converted to the input's element type), so the graph can join the ensemble model unchanged."""
    for op in model.get_ordered_ops():
        op.set_friendly_name(f"{prefix}{op.get_friendly_name()}")
        for port in op.outputs():
            names = port.get_names()
            if names:
                port.set_names({f"{prefix}{name}" for name in names})
    parameter = model.get_parameters()[0]
    source = source_input.output(0)
    if parameter.get_element_type() != ov.Type.f32:
        source = ops.convert(source_input, parameter.get_element_type()).output(0)
    for target in list(parameter.output(0).get_target_inputs()):
        target.replace_source_output(source)


def _member_output(index: int, model: Any, source_input: Any) -> Any:
    """Member `index`'s graph renamed (``member<i>/``), fed by `source_input`: its (1, N, n_classes) f32 output."""
    _graft(model, f"member{index}/", source_input)
    output = model.get_results()[0].input_value(0)
    if output.get_element_type() != ov.Type.f32:
        output = ops.convert(output, ov.Type.f32).output(0)
    return ops.unsqueeze(output, 0)

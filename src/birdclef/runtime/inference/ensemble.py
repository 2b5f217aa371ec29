"""One OpenVINO model of every ensemble member (`ensemble_model`), each on its mel group's input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openvino as ov
import openvino.opset13 as ops


def ensemble_model(
    models: Sequence[Any], input_shapes: Sequence[Sequence[int]], member_inputs: Sequence[int]
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
    result.output(0).set_names({"member_probabilities"})
    return ov.Model([result], inputs, "ensemble")


def _inputs(input_shapes: Sequence[Sequence[int]]) -> list[Any]:
    """The ensemble's f32 inputs: ``mels_<g>`` of shape (N, *input_shapes[g])."""
    inputs = []
    for g, shape in enumerate(input_shapes):
        parameter = ops.parameter([-1, *map(int, shape)], ov.Type.f32, name=f"mels_{g}")
        parameter.output(0).set_names({f"mels_{g}"})
        inputs.append(parameter)
    return inputs


def _member_output(index: int, model: Any, source_input: Any) -> Any:
    """Member `index`'s graph renamed (``member<i>/``), fed by `source_input`: its (1, N, n_classes) f32 output."""
    for op in model.get_ordered_ops():
        op.set_friendly_name(f"member{index}/{op.get_friendly_name()}")
        for port in op.outputs():
            names = port.get_names()
            if names:
                port.set_names({f"member{index}/{name}" for name in names})
    parameter = model.get_parameters()[0]
    source = source_input.output(0)
    if parameter.get_element_type() != ov.Type.f32:
        source = ops.convert(source_input, parameter.get_element_type()).output(0)
    for target in list(parameter.output(0).get_target_inputs()):
        target.replace_source_output(source)
    output = model.get_results()[0].input_value(0)
    if output.get_element_type() != ov.Type.f32:
        output = ops.convert(output, ov.Type.f32).output(0)
    return ops.unsqueeze(output, 0)

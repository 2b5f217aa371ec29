"""One ensemble member: rebuild its checkpoint, write its IRs (f32, fp16 or int8), score it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from birdclef.export.checks import _check_member_classes, _check_member_windows
from birdclef.export.convert import _convert, _ir_bytes
from birdclef.export.quantize import _quantize
from birdclef.export.scoring import _auc, _compile, _run_openvino, _run_torch
from birdclef.train.model import InferenceWrapper, load_model


def _load_member(member: Mapping[str, Any], classes: list[str], group: Mapping[str, Any], frames: int):
    """The member's checkpoint as an `InferenceWrapper` in eval mode, checked against the ensemble."""
    model, payload = load_model(member["checkpoint"])
    _check_member_classes(member, payload, classes)
    _check_member_windows(member, payload, group, frames)
    return InferenceWrapper(model).eval()


def member_context(wrapper) -> int:
    """Windows the member's model joins (``context_windows``; 1: each window alone)."""
    return int(wrapper.model.context_windows)


def _write_irs(
    ov_model,
    member: Mapping[str, Any],
    index: int,
    member_dir: Path,
    calibration: np.ndarray,
    precision: str,
    calibration_size: int,
    preset: str,
    context_windows: int = 1,
) -> dict[str, Any]:
    """Save the f32 IR (and the fp16 or int8 one) in `member_dir`; the member's report entry.

    With `context_windows` m > 1 the calibration windows come in runs of m consecutive windows
    (`birdclef.export.windows.calibration_windows` with a block of a multiple of m) and each
    calibration sample is one run."""
    member_dir.mkdir(parents=True)
    ov.save_model(ov_model, member_dir / "model_f32.xml", compress_to_fp16=False)
    entry: dict[str, Any] = {
        "name": member["name"],
        "mel_group": member["mel_group"],
        "weight": float(member.get("weight", 1.0)),
        "context_windows": int(context_windows),
        "ir_f32": f"members/{index}/model_f32.xml",
        "ir_bytes": {"f32": _ir_bytes(member_dir / "model_f32.xml")},
    }
    if precision == "fp16":
        ov.save_model(ov_model, member_dir / "model_fp16.xml", compress_to_fp16=True)
        entry["ir_bytes"]["fp16"] = _ir_bytes(member_dir / "model_fp16.xml")
    elif precision == "int8":
        t_quant = time.perf_counter()
        quantized = _quantize(ov_model, calibration, calibration_size, preset, context_windows)
        ov.save_model(quantized, member_dir / "model_int8.xml", compress_to_fp16=False)
        entry["ir_bytes"]["int8"] = _ir_bytes(member_dir / "model_int8.xml")
        entry["quantize_seconds"] = round(time.perf_counter() - t_quant, 2)
    entry["ir"] = f"members/{index}/model_{precision}.xml"
    return entry


def _export_member(
    member: Mapping[str, Any],
    index: int,
    member_dir: Path,
    classes: list[str],
    group: Mapping[str, Any],
    n_mels: int,
    frames: int,
    calibration: np.ndarray,
    precision: str,
    calibration_size: int,
    preset: str,
) -> tuple[Any, Any, dict[str, Any]]:
    """Member `index` converted and written to `member_dir`: (torch wrapper, f32 OpenVINO model, entry).

    `group`, `n_mels`, `frames` and `calibration` are those of the member's mel group.
    """
    wrapper = _load_member(member, classes, group, frames)
    context = member_context(wrapper)
    if len(calibration) % context:
        raise ValueError(f"member {member['name']!r} joins {context} consecutive windows, but its mel group has "
                         f"{len(calibration)} calibration windows: expected runs of a multiple of {context}")
    ov_model = _convert(wrapper, calibration[: min(max(2, context), len(calibration))], n_mels, frames)
    entry = _write_irs(
        ov_model, member, index, member_dir, calibration, precision, calibration_size, preset, context
    )
    return wrapper, ov_model, entry


def _score_member(
    entry: dict[str, Any],
    wrapper,
    member_dir: Path,
    eval_mels: np.ndarray,
    eval_targets: np.ndarray,
    precision: str,
    core,
    threads: int,
    member_probs: dict[str, list[np.ndarray]],
) -> None:
    """Run torch fp32, the f32 IR and the chosen IR on the member's gate windows `eval_mels`.

    Appends each run's probabilities to `member_probs` and records throughput and AUCs in `entry`.
    """
    probs, speed = _run_torch(wrapper, eval_mels)
    member_probs["torch_fp32"].append(probs)
    entry["clips_per_second"] = {"torch_fp32": round(speed, 1)}
    runs = ["f32"] if precision == "f32" else ["f32", precision]
    for run in runs:
        compiled = _compile(core, member_dir / f"model_{run}.xml", threads)
        probs, speed = _run_openvino(compiled, eval_mels)
        member_probs[f"openvino_{run}"].append(probs)
        entry["clips_per_second"][f"openvino_{run}"] = round(speed, 1)
    entry["auc"] = {
        key: _auc(eval_targets, values[-1]) for key, values in member_probs.items()
    }

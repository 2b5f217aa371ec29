"""`export_ensemble`: every member to IR, the accuracy gate, the bundle folder written atomically."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from birdclef.common.io import atomic_dir
from birdclef.export.bundle import _write_bundle, window_frames
from birdclef.export.checks import (
    _check_ensemble,
    _check_eval,
    _check_group_windows,
    _check_options,
)
from birdclef.export.gate import _apply_gate
from birdclef.export.member import _export_member, _score_member
from birdclef.export.scoring import INFERENCE_PRECISION_HINT, member_weights
from birdclef.export.teacher import TeacherAudio, write_teacher

logger = logging.getLogger(__name__)


def export_ensemble(
    ensemble: dict,
    out_dir: str | os.PathLike,
    calibration_mels: Sequence[np.ndarray] | np.ndarray,
    precision: str = "int8",
    calibration_size: int = 300,
    preset: str = "performance",
    eval_mels: Sequence[np.ndarray] | np.ndarray | None = None,
    eval_targets: np.ndarray | None = None,
    max_auc_drop: float = 0.003,
    on_gate_fail: str = "fail",
    threads: int = 2,
    teacher: tuple[Mapping[str, Any], Mapping[str, Path]] | None = None,
    teacher_audio: TeacherAudio | None = None,
) -> dict:
    """Export every ensemble member to OpenVINO IR and write a self-contained bundle.

    Writes, atomically (the whole folder appears only when complete):
    ``out_dir/members/<i>/model_f32.xml`` (+ ``.bin``) for every member, plus
    ``model_fp16.xml`` or ``model_int8.xml`` for those precisions,
    ``out_dir/mel_filterbank_<g>.npy`` for every mel group g and
    ``out_dir/bundle.json`` (the ensemble definition with each member's
    ``"ir"`` path relative to ``out_dir``, the precision used, classes, window
    length and ``mel_groups``: each group's mel settings plus its
    ``"filterbank"`` file and ``"window_frames"``).

    `calibration_mels` holds one array per mel group (``ensemble["mel_groups"]``
    order; a bare array is accepted when there is one group): (N_g, 1, n_mels,
    frames) float32 log-mel dB windows of that group, which feed NNCF's int8
    calibration of the group's members (at most `calibration_size` of them,
    `preset` "performance" = symmetric, "mixed" = asymmetric activations).

    With `eval_mels` (one array per mel group, like `calibration_mels`, each
    with the same N windows) and binary `eval_targets` (N, n_classes) an
    accuracy gate runs. Window i of every group must be the same recording and
    the same span of time (`gate_windows`): each member is scored on its own
    group's windows and the members are combined window by window. Scored:
    macro ROC-AUC of torch fp32, OpenVINO f32 and the chosen precision, for the
    weighted ensemble and for each member (all OpenVINO runs compiled with
    INFERENCE_PRECISION_HINT=f32). When the ensemble AUC of the chosen
    precision is more than `max_auc_drop` below OpenVINO f32, `on_gate_fail`
    decides: "fail" raises `ExportGateError` (nothing is written), "fp16"
    exports fp16 IRs instead and records it, "warn" keeps the IRs and records
    a warning. The gate does not apply to precision "f32".

    With `teacher` (its ``bundle.json`` entry and files: `birdclef.export.teacher.teacher_entry`)
    the teacher is written into the same folder after the students' gate
    (`birdclef.export.teacher.write_teacher`): an ONNX Perch as OpenVINO IR
    (``teacher/model_f32.xml``; with precision "int8" also NNCF's int8 IR,
    calibrated on `teacher_audio`'s windows (at most `calibration_size`, same
    `preset`) and kept only when the teacher's own gate on its labelled
    windows loses at most `max_auc_drop` macro ROC-AUC on the mapped classes,
    else the f32 IR is shipped), any other teacher's files copied (BirdNET's
    never). The teacher takes no part in the students' gate; the report's
    ``teacher`` block holds its gate.

    Returns the report: AUCs with the precision of each, per member (with its
    ``mel_group``), the gate result, window frames and calibration windows per
    mel group, IR sizes in bytes, throughput of the gate runs and seconds taken.
    """
    start = time.perf_counter()
    _check_options(precision, preset, on_gate_fail, eval_mels, eval_targets)
    _check_ensemble(ensemble)

    classes = list(ensemble["classes"])
    frames = window_frames(ensemble)
    n_mels = [int(group["n_mels"]) for group in ensemble["mel_groups"]]
    calibration = _check_group_windows("calibration_mels", calibration_mels, n_mels, frames)
    if eval_mels is not None:
        eval_mels, eval_targets, _ = _check_eval(eval_mels, eval_targets, n_mels, frames, len(classes))

    core = ov.Core()
    out_dir = Path(out_dir)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    report = _new_report(precision, preset, calibration, calibration_size, threads, frames)
    try:
        with atomic_dir(out_dir) as tmp:
            member_probs, ov_models = _export_members(
                ensemble, tmp, report, classes, frames, n_mels, calibration, precision,
                calibration_size, preset, eval_mels, eval_targets, core, threads,
            )
            used = precision
            if eval_mels is not None:
                used = _apply_gate(
                    report, member_probs, ensemble["members"],
                    member_weights(ensemble),
                    ov_models, tmp, core, threads, eval_mels, eval_targets,
                    precision, max_auc_drop, on_gate_fail,
                )
            else:
                report["gate"] = {"status": "not run", "reason": "no eval_mels/eval_targets given"}
            entry = None
            if teacher is not None:
                entry, report["teacher"] = write_teacher(
                    tmp, *teacher, precision=precision, audio=teacher_audio, max_auc_drop=max_auc_drop,
                    calibration_size=calibration_size, preset=preset, threads=threads,
                )
            _finish_bundle(tmp, ensemble, report, used, entry)
    finally:
        torch.set_num_threads(previous_threads)
    report["seconds"] = round(time.perf_counter() - start, 2)
    logger.info(
        "export finished in %.1f s: precision %s, gate %s",
        report["seconds"],
        report["precision"],
        report["gate"]["status"],
    )
    return report


def _new_report(
    precision: str, preset: str, calibration: list[np.ndarray], calibration_size: int,
    threads: int, frames: list[int],
) -> dict[str, Any]:
    """The export report before any member is exported."""
    return {
        "requested_precision": precision,
        "precision": precision,
        "inference_precision_hint": INFERENCE_PRECISION_HINT,
        "preset": preset if precision == "int8" else None,
        "calibration_windows": [
            int(min(calibration_size, len(mels))) if precision == "int8" else 0
            for mels in calibration
        ],
        "threads": int(threads),
        "window_frames": frames,
        "members": [],
        "warnings": [],
    }


def _export_members(
    ensemble: Mapping[str, Any],
    tmp: Path,
    report: dict[str, Any],
    classes: list[str],
    frames: list[int],
    n_mels: list[int],
    calibration: list[np.ndarray],
    precision: str,
    calibration_size: int,
    preset: str,
    eval_mels: list[np.ndarray] | None,
    eval_targets: np.ndarray | None,
    core,
    threads: int,
) -> tuple[dict[str, list[np.ndarray]], list]:
    """Every member's IRs under ``tmp/members/<i>``, scored when there are gate windows.

    Appends each member's entry to ``report["members"]``; returns the members'
    probabilities per run (for the ensemble AUCs) and their f32 OpenVINO models.
    """
    groups = ensemble["mel_groups"]
    member_probs: dict[str, list[np.ndarray]] = {"torch_fp32": [], "openvino_f32": []}
    member_probs[f"openvino_{precision}"] = []
    ov_models = []
    for index, member in enumerate(ensemble["members"]):
        t0 = time.perf_counter()
        g = member["mel_group"]
        member_dir = tmp / "members" / str(index)
        wrapper, ov_model, entry = _export_member(
            member, index, member_dir, classes, groups[g], n_mels[g], frames[g], calibration[g],
            precision, calibration_size, preset,
        )
        ov_models.append(ov_model)
        if eval_mels is not None:
            _score_member(
                entry, wrapper, member_dir, eval_mels[g], eval_targets, precision, core, threads,
                member_probs,
            )
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        report["members"].append(entry)
        logger.info("exported member %d %s: %s", index, member["name"], entry)
    return member_probs, ov_models


def _finish_bundle(tmp: Path, ensemble: Mapping[str, Any], report: dict[str, Any], used: str,
                   teacher: Mapping[str, Any] | None = None) -> None:
    """Point the report at the IRs of precision `used`, write the bundle (with the `teacher` entry)
    and total the members' IR sizes."""
    report["precision"] = used
    for index, entry in enumerate(report["members"]):
        entry["ir"] = f"members/{index}/model_{used}.xml"
    _write_bundle(tmp, ensemble, report, used, teacher)
    report["ir_bytes_total"] = {
        key: sum(entry["ir_bytes"].get(key, 0) for entry in report["members"])
        for key in ("f32", "fp16", "int8")
        if any(key in entry["ir_bytes"] for entry in report["members"])
    }

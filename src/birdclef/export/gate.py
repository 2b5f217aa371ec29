"""The accuracy gate: the chosen precision's ensemble AUC vs OpenVINO f32's, and what a failure does."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from birdclef.export.convert import _ir_bytes, _ir_files
from birdclef.export.scoring import _auc, _compile, _run_openvino, _weighted_mean

logger = logging.getLogger(__name__)


class ExportGateError(RuntimeError):
    """The exported precision lost more ROC-AUC than allowed; carries the numbers.

    ``report`` holds the partial export report (AUCs per precision, ensemble and
    per member) so a caller can log it before failing.
    """

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _auc_precision(precision: str) -> dict[str, str]:
    """What each of the gate's AUCs was computed with."""
    return {
        "torch_fp32": "PyTorch float32",
        "openvino_f32": "OpenVINO f32 IR, INFERENCE_PRECISION_HINT=f32",
        f"openvino_{precision}": (
            f"OpenVINO {precision} IR, INFERENCE_PRECISION_HINT=f32"
            + (
                " (int8 where NNCF quantized, f32 elsewhere)"
                if precision == "int8"
                else ""
            )
        ),
    }


def _apply_gate(
    report: dict[str, Any],
    member_probs: Mapping[str, list[np.ndarray]],
    members: list[Mapping[str, Any]],
    weights: np.ndarray,
    ov_models: list,
    tmp: Path,
    core,
    threads: int,
    eval_mels: list[np.ndarray],
    eval_targets: np.ndarray,
    precision: str,
    max_auc_drop: float,
    on_gate_fail: str,
) -> str:
    """Score the ensemble, decide the gate and act on a failure; the precision the bundle uses.

    Records the ensemble AUCs, what they were computed with, the number of gate
    windows and the gate in `report`; a failed gate raises `ExportGateError`
    ("fail"), falls back to fp16 IRs ("fp16") or keeps the IRs with a warning. `weights`
    are the members' combining weights per class (`birdclef.export.scoring.member_weights`).
    """
    aucs = {
        key: _auc(eval_targets, _weighted_mean(values, weights))
        for key, values in member_probs.items()
    }
    report["auc"] = aucs
    report["auc_precision"] = _auc_precision(precision)
    report["eval_windows"] = int(len(eval_targets))
    report["gate"] = _gate(aucs, precision, max_auc_drop, report, members, on_gate_fail)
    used = precision
    if report["gate"]["status"] == "failed":
        if on_gate_fail == "fail":
            raise ExportGateError(report["gate"]["message"], report)
        if on_gate_fail == "fp16" and precision != "fp16":
            used = "fp16"
            _fallback_fp16(
                ov_models,
                tmp,
                core,
                threads,
                eval_mels,
                eval_targets,
                weights,
                report,
                max_auc_drop,
            )
        else:
            report["warnings"].append(report["gate"]["message"])
            logger.warning(
                "%s; keeping %s (on_gate_fail=%s)",
                report["gate"]["message"],
                precision,
                on_gate_fail,
            )
    return used


def _gate(
    aucs: Mapping[str, float | None],
    precision: str,
    max_auc_drop: float,
    report: dict[str, Any],
    members: list[Mapping[str, Any]],
    on_gate_fail: str,
) -> dict[str, Any]:
    """Compare the chosen precision's ensemble AUC with OpenVINO f32's."""
    if precision == "f32":
        return {"status": "not applicable", "reason": "precision f32 is the reference"}
    reference, chosen = aucs["openvino_f32"], aucs[f"openvino_{precision}"]
    member_drops = []
    for entry in report["members"]:
        ref, val = entry["auc"]["openvino_f32"], entry["auc"][f"openvino_{precision}"]
        member_drops.append(None if ref is None or val is None else round(ref - val, 6))
    if reference is None or chosen is None:
        return {
            "status": "not run",
            "reason": "macro ROC-AUC undefined: no class has both positives and negatives "
            "in eval_targets",
            "member_drops": dict(zip([m["name"] for m in members], member_drops, strict=True)),
        }
    drop = round(reference - chosen, 6)
    gate = {
        "status": "passed" if drop <= max_auc_drop else "failed",
        "drop": drop,
        "max_auc_drop": float(max_auc_drop),
        "reference": "openvino_f32",
        "reference_auc": reference,
        "candidate": f"openvino_{precision}",
        "candidate_auc": chosen,
        "member_drops": dict(zip([m["name"] for m in members], member_drops, strict=True)),
        "on_gate_fail": on_gate_fail,
    }
    if gate["status"] == "failed":
        gate["message"] = (
            f"{precision} export loses {drop:.6f} ensemble macro ROC-AUC vs OpenVINO f32 "
            f"({chosen:.6f} vs {reference:.6f}, both run with INFERENCE_PRECISION_HINT=f32; "
            f"torch fp32 {aucs['torch_fp32']}), more than max_auc_drop={max_auc_drop}; "
            f"per-member drops {gate['member_drops']}"
        )
    return gate


def _fallback_fp16(
    ov_models, tmp: Path, core, threads: int, eval_mels, eval_targets, weights, report, max_drop
) -> None:
    """Write fp16 IRs after a failed gate, evaluate them and record the fallback.

    `eval_mels` holds one array per mel group; each member runs on its group's.
    """
    probs = []
    for index, (ov_model, entry) in enumerate(zip(ov_models, report["members"], strict=True)):
        xml = tmp / "members" / str(index) / "model_fp16.xml"
        ov.save_model(ov_model, xml, compress_to_fp16=True)
        entry["ir_bytes"]["fp16"] = _ir_bytes(xml)
        member_probs, speed = _run_openvino(
            _compile(core, xml, threads), eval_mels[entry["mel_group"]]
        )
        probs.append(member_probs)
        entry["clips_per_second"]["openvino_fp16"] = round(speed, 1)
        entry["auc"]["openvino_fp16"] = _auc(eval_targets, member_probs)
    auc = _auc(eval_targets, _weighted_mean(probs, weights))
    report["auc"]["openvino_fp16"] = auc
    report["auc_precision"]["openvino_fp16"] = "OpenVINO fp16 IR, INFERENCE_PRECISION_HINT=f32"
    reference = report["auc"]["openvino_f32"]
    drop = None if auc is None or reference is None else round(reference - auc, 6)
    report["gate"]["fallback"] = {"precision": "fp16", "auc": auc, "drop": drop}
    for index in range(len(ov_models)):  # the bundle ships only what inference loads
        dropped = tmp / "members" / str(index) / f"model_{report['requested_precision']}.xml"
        for path in _ir_files(dropped):
            path.unlink(missing_ok=True)
    message = f"{report['gate']['message']}; fell back to fp16 IR (ensemble AUC {auc})"
    if drop is not None and drop > max_drop:
        message += f", which also exceeds max_auc_drop (drop {drop:.6f}); kept anyway"
    report["warnings"].append(message)
    logger.warning(message)

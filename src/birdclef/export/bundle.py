"""The bundle folder's definition: ``bundle.json`` (with the teacher's entry), one mel filterbank file per mel group."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from birdclef.common.io import write_json
from birdclef.export.convert import INPUT_NAME, OUTPUT_NAME
from birdclef.export.scoring import INFERENCE_PRECISION_HINT
from birdclef.runtime.features import mel_filterbank
from birdclef.runtime.features import window_frames as group_frames


def window_frames(ensemble: Mapping[str, Any]) -> list[int]:
    """Mel frames of one window for each of the ensemble's ``mel_groups``, in their order."""
    return [group_frames(group, ensemble["window_seconds"]) for group in ensemble["mel_groups"]]


def filterbank_file(group: int) -> str:
    """The bundle file (relative to the bundle folder) holding mel group `group`'s filterbank."""
    return f"mel_filterbank_{int(group)}.npy"


def _bundle_definition(ensemble: Mapping[str, Any], report: Mapping[str, Any], used: str) -> dict:
    bundle = copy.deepcopy(dict(ensemble))
    bundle["precision"] = used
    bundle["inference_precision_hint"] = INFERENCE_PRECISION_HINT
    bundle["mel_groups"] = [
        {**dict(group), "filterbank": filterbank_file(g), "window_frames": frames}
        for g, (group, frames) in enumerate(
            zip(ensemble["mel_groups"], report["window_frames"], strict=True)
        )
    ]
    bundle["input_name"] = INPUT_NAME
    bundle["output_name"] = OUTPUT_NAME
    bundle["members"] = [
        {
            **dict(member),
            "weight": float(member.get("weight", 1.0)),
            "ir": entry["ir"],
            "ir_f32": entry["ir_f32"],
            "context_windows": int(entry.get("context_windows", 1)),
        }
        for member, entry in zip(ensemble["members"], report["members"], strict=True)
    ]
    gate = report["gate"]
    bundle["export"] = {
        "requested_precision": report["requested_precision"],
        "gate_status": gate["status"],
        "auc": report.get("auc"),
        "auc_precision": report.get("auc_precision"),
    }
    return bundle


def _write_bundle(folder: Path, ensemble: Mapping[str, Any], report: Mapping[str, Any], used: str,
                  teacher: Mapping[str, Any] | None = None) -> None:
    """Each mel group's filterbank and ``bundle.json`` (IRs of precision `used`) into `folder`; with
    `teacher` (its final bundle.json entry, `birdclef.export.teacher.write_teacher`) its entry too."""
    for g, group in enumerate(ensemble["mel_groups"]):
        np.save(folder / filterbank_file(g), mel_filterbank(group))
    bundle = _bundle_definition(ensemble, report, used)
    if teacher is not None:
        bundle["teacher"] = dict(teacher)
    write_json(folder / "bundle.json", bundle)

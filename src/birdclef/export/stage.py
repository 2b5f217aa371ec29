"""`export_stage`: the Snakemake export stage: read the caches, draw windows, export, score, manifest."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.errors import DataError
from birdclef.common.io import read_json
from birdclef.common.manifest import StageManifest
from birdclef.export.bundle import window_frames
from birdclef.export.checks import _check_ensemble
from birdclef.export.ensemble import export_ensemble
from birdclef.export.scoring import score_bundle_windows
from birdclef.export.teacher import is_quantizable, teacher_entry
from birdclef.export.teacher_windows import teacher_audio
from birdclef.export.windows import (
    cache_windows,
    calibration_windows,
    gate_targets,
    gate_windows,
    labelled_soundscape_windows,
)
from birdclef.runtime.audio import AUDIO_SUFFIXES
from birdclef.runtime.inference import load_bundle, predict_soundscapes
from birdclef.runtime.teacher.perch import PERCH_RATE
from birdclef.soundscapes import soundscape_score, validation_windows
from birdclef.train.model import checkpoint_context

logger = logging.getLogger(__name__)


def export_stage(
    ensemble_path: str,
    mels_paths: Sequence[str],
    index_paths: Sequence[str],
    folds_path: str,
    out_bundle: str,
    out_manifest: str,
    settings: Mapping[str, Any],
    tag: str,
    upstream: Mapping[str, Any],
    threads: int = 2,
    seed: int = 0,
    soundscape_mels_paths: Sequence[str] | None = None,
    soundscape_index_paths: Sequence[str] | None = None,
    labelled_path: str | None = None,
    teacher: Mapping[str, Any] | None = None,
    taxonomy_csv: str | None = None,
    catalog_path: str | None = None,
    soundscapes_dir: str | None = None,
) -> dict:
    """The export stage: IR per member, quantization, accuracy gate, manifest.

    `mels_paths` and `index_paths` are the training mel caches (``.npy``) and
    their parquet indexes, one per mel group of the ensemble definition, in
    its ``mel_groups`` order; the mel settings come from the definition.
    Calibration windows are drawn at random (seeded) from each group's cache;
    the gate scores the windows of `gate_windows` (validated recordings,
    fold >= 0, cached in every group; at most `MAX_EVAL_WINDOWS`, spread
    evenly, aligned in time across the groups), each against its recording's
    primary and secondary labels. With `labelled_path` (the soundscape_labels
    table) and each group's soundscape cache, the exported f32 and chosen-precision
    ensembles are also scored on the held-out labelled soundscape windows
    (``soundscape_auc`` in the report; the gate itself is decided on the
    recordings' windows).

    With `teacher` (the teacher settings plus its blend ``weight``: the plan's
    ``export_teacher``) and `taxonomy_csv`, the teacher is loaded and mapped
    onto the classes first (a bad teacher stops the export before it starts),
    and after the students' export and gate it is written into the bundle
    (`birdclef.export.teacher`): an ONNX Perch as OpenVINO IR compiled into
    the ensemble model at inference; with precision int8 and `catalog_path`
    (the VAD catalog: each recording's audio) NNCF quantizes it, calibrated
    on 5 s windows of the training recordings' audio drawn at random (seeded
    by `seed` + 1), and the teacher's gate scores int8 against f32 on the
    students' gate windows (at most `MAX_TEACHER_EVAL_WINDOWS`) and their
    targets (`birdclef.export.teacher_windows.teacher_audio`); any other
    teacher's files are copied (BirdNET's never). The teacher takes no part
    in the students' gate. With a teacher, `labelled_path` and `soundscapes_dir` (the
    train_soundscapes folder) the written bundle is also scored end to end on the held-out
    labelled soundscape files, through Kaggle's inference path (`predict_soundscapes`: rank
    blend with the teacher and post-processing), and once more with the teacher left out
    (``soundscape_auc_blend`` in the report).
    """
    if isinstance(mels_paths, (str, os.PathLike)) or isinstance(index_paths, (str, os.PathLike)):
        raise TypeError("mels_paths and index_paths must be lists of paths, one per mel group")
    if teacher is not None and taxonomy_csv is None:
        raise ValueError("export: a teacher in the blend needs taxonomy_csv (its classes are mapped by name)")
    manifest = StageManifest(
        "export", tag, {**settings, **({"teacher": dict(teacher)} if teacher else {})}, upstream,
        [ensemble_path, *index_paths, folds_path, *([taxonomy_csv] if teacher else []),
         *([catalog_path] if teacher and catalog_path else [])],
    )
    ensemble = _read_ensemble(ensemble_path, mels_paths, index_paths)
    branch = teacher_entry(teacher, taxonomy_csv, ensemble["classes"], threads) if teacher else None
    groups = ensemble["mel_groups"]
    frames = window_frames(ensemble)
    mels, indexes = _read_caches(ensemble_path, groups, mels_paths, index_paths)
    folds = pd.read_parquet(folds_path)
    rng = np.random.default_rng(seed)

    # members that join consecutive windows (context_windows) get them in whole runs
    multiple = math.lcm(*(checkpoint_context(member["checkpoint"]) for member in ensemble["members"]))
    calibration = calibration_windows(mels, indexes, frames, int(settings["calibration_size"]), rng,
                                      multiple)
    eval_rows, eval_starts = gate_windows(indexes, folds, groups, ensemble["window_seconds"],
                                          multiple=multiple)
    eval_mels = [
        cache_windows(array, index, starts, rows, group_window)
        for array, index, starts, rows, group_window in zip(
            mels, indexes, eval_starts, eval_rows, frames, strict=True
        )
    ]
    eval_targets = gate_targets(indexes[0], eval_rows[0], ensemble["classes"])
    audio = None  # the compiled teacher's calibration and gate audio, when it is quantized
    if branch is not None and is_quantizable(branch[0]) and settings["precision"] == "int8":
        if catalog_path is None:
            logger.warning("export: no catalog_path (the VAD catalog), so no audio to calibrate the teacher "
                           "on: it ships as an f32 IR")
        else:
            audio = teacher_audio(catalog_path, indexes[0], groups[0], ensemble["window_seconds"], eval_rows[0],
                                  eval_starts[0], eval_targets, int(settings["calibration_size"]),
                                  np.random.default_rng([seed, 1]), PERCH_RATE)

    report = export_ensemble(
        ensemble,
        Path(out_bundle).parent,
        calibration,
        precision=settings["precision"],
        calibration_size=int(settings["calibration_size"]),
        preset=settings["preset"],
        eval_mels=eval_mels,
        eval_targets=eval_targets,
        max_auc_drop=settings["max_auc_drop"],
        on_gate_fail=settings["on_gate_fail"],
        threads=threads,
        teacher=branch,
        teacher_audio=audio,
    )
    if labelled_path and soundscape_mels_paths and soundscape_index_paths:
        _score_soundscapes(report, out_bundle, soundscape_mels_paths, soundscape_index_paths,
                           labelled_path, ensemble["classes"], threads, multiple)
    if branch is not None and labelled_path and soundscapes_dir:
        report["soundscape_auc_blend"] = blend_soundscape_score(
            Path(out_bundle).parent, soundscapes_dir, labelled_path, ensemble["classes"], threads)
    manifest.headline.update(report)
    manifest.write(out_manifest)
    logger.info(
        "export: %s members in %d mel groups, precision %s (requested %s), AUC %s (OpenVINO numbers "
        "with INFERENCE_PRECISION_HINT f32)",
        len(ensemble["members"]), len(groups), report.get("precision"), settings["precision"],
        report.get("auc"),
    )
    return report


def _read_ensemble(
    ensemble_path: str, mels_paths: Sequence[str], index_paths: Sequence[str]
) -> dict:
    """The checked ensemble definition, with one mel cache and one index per mel group."""
    ensemble = read_json(ensemble_path)
    try:
        _check_ensemble(ensemble)
    except ValueError as error:
        raise ValueError(f"{ensemble_path}: {error}") from None
    groups = ensemble["mel_groups"]
    if len(mels_paths) != len(groups) or len(index_paths) != len(groups):
        raise ValueError(
            f"{ensemble_path} has {len(groups)} mel groups "
            f"({[group.get('tag') for group in groups]}), but the export got "
            f"{len(mels_paths)} mel caches and {len(index_paths)} indexes: expected one of each "
            "per group, in mel_groups order"
        )
    return ensemble


def _read_caches(
    ensemble_path: str,
    groups: Sequence[Mapping[str, Any]],
    mels_paths: Sequence[str],
    index_paths: Sequence[str],
) -> tuple[list[np.ndarray], list[pd.DataFrame]]:
    """Each mel group's training mel cache (memory-mapped, shape checked) and index."""
    mels = [np.load(path, mmap_mode="r") for path in mels_paths]
    indexes = [pd.read_parquet(path) for path in index_paths]
    for g, (array, group, path) in enumerate(zip(mels, groups, mels_paths, strict=True)):
        if array.ndim != 2 or array.shape[1] != int(group["n_mels"]):
            raise ValueError(
                f"{path}: mel cache of shape {array.shape}, but mel_groups[{g}] of {ensemble_path} "
                f"(tag {group.get('tag')!r}) expects (frames, {int(group['n_mels'])})"
            )
    return mels, indexes


def _score_soundscapes(
    report: dict[str, Any],
    out_bundle: str,
    soundscape_mels_paths: Sequence[str],
    soundscape_index_paths: Sequence[str],
    labelled_path: str,
    classes: Sequence[str],
    threads: int,
    multiple: int = 1,
) -> None:
    """Score the written bundle on the held-out labelled soundscape windows, into `report`."""
    windows, targets, keep = labelled_soundscape_windows(
        soundscape_mels_paths, soundscape_index_paths, labelled_path, classes, multiple)
    report["soundscape_auc"] = (
        score_bundle_windows(Path(out_bundle).parent, windows, targets, threads, keep) if len(targets)
        else None)
    report["soundscape_windows_scored"] = int(len(targets))
    logger.info("export: labelled-soundscape AUC %s on %d held-out windows",
                report["soundscape_auc"], len(targets))


def blend_soundscape_score(
    bundle_dir: Path, soundscapes_dir: str, labelled_path: str, classes: Sequence[str], threads: int
) -> dict[str, Any]:
    """The bundle's score on the held-out labelled soundscapes, as Kaggle runs it, with and without
    its teacher: {"students_and_teacher", "students", "windows", "soundscapes"}.

    Each held-out soundscape file (``split == "validation"`` of `labelled_path`, found by stem in
    `soundscapes_dir`) goes through `predict_soundscapes` (students, the teacher's rank blend,
    post-processing), scored by `birdclef.soundscapes.soundscape_score`; then again with the
    bundle's teacher removed. Raises DataError naming the folder when a file is missing.
    """
    labelled = pd.read_parquet(labelled_path)
    names = sorted(validation_windows(labelled)["soundscape"].astype(str).unique())
    if not names:
        return {"students_and_teacher": None, "students": None, "windows": 0, "soundscapes": 0}
    files = {Path(path).stem: path for path in sorted(Path(soundscapes_dir).iterdir())
             if path.suffix.lower() in AUDIO_SUFFIXES}
    missing = [name for name in names if name not in files]
    if missing:
        raise DataError(f"{soundscapes_dir}: no audio file for the held-out labelled soundscapes {missing[:5]} "
                        "(train_soundscapes_labels.csv names them): expected <name>.ogg")
    bundle = load_bundle(bundle_dir, threads=threads)
    paths = [files[name] for name in names]
    blended, windows = soundscape_score(predict_soundscapes(paths, bundle, progress=False), labelled, classes)
    # the same path, the students alone (a compiled teacher: the students-only model's requests)
    bundle.requests, bundle.teacher = bundle.student_requests(), None
    students, _ = soundscape_score(predict_soundscapes(paths, bundle, progress=False), labelled, classes)
    logger.info("export: held-out labelled soundscapes through the bundle: %s with the teacher, %s without "
                "(%d windows of %d files)", blended, students, windows, len(paths))
    return {"students_and_teacher": blended, "students": students, "windows": int(windows),
            "soundscapes": len(paths)}

"""The submission file: predictions aligned to `sample_submission.csv`, and its score.

The written CSV has exactly sample_submission's columns and row order. Rows the
predictions lack (a soundscape missing from test_soundscapes) are filled with
sample_submission's own values and counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .catalog import DataError
from .io import atomic_path

log = logging.getLogger("birdclef.submission")


def align_to_sample(predictions: pd.DataFrame, sample: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Predictions in sample_submission's rows and columns; returns (frame, rows filled from sample)."""
    if "row_id" not in sample.columns:
        raise DataError(f"sample_submission.csv has no row_id column (columns: {list(sample.columns)[:5]}...)")
    classes = [c for c in sample.columns if c != "row_id"]
    missing_classes = [c for c in classes if c not in predictions.columns]
    if missing_classes:
        raise DataError(
            f"sample_submission.csv has class columns the models do not predict: {missing_classes[:10]}; "
            "train on the same taxonomy.csv as the submission"
        )
    by_row = predictions.set_index("row_id")[classes]
    by_row = by_row[~by_row.index.duplicated(keep="first")]
    aligned = by_row.reindex(sample["row_id"])
    missing = aligned.isna().any(axis=1).to_numpy()
    if missing.any():
        log.warning(
            "%d of %d submission rows have no prediction (soundscape missing?); filled from "
            "sample_submission.csv", int(missing.sum()), len(sample)
        )
        fill = sample.set_index("row_id")[classes].to_numpy(dtype=np.float64)
        values = np.array(aligned.to_numpy(dtype=np.float64))
        values[missing] = fill[missing]
        aligned = pd.DataFrame(values, index=aligned.index, columns=classes)
    out = aligned.reset_index()
    out.columns = ["row_id", *classes]
    return out, int(missing.sum())


def write_submission(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the submission CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")


def aligned_truth(submission: pd.DataFrame, ground_truth: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The ground truth's `classes` columns in the submission's row order (index: row_id).

    Raises DataError when the ground truth lacks a class or a row of the submission.
    """
    absent = [c for c in classes if c not in ground_truth.columns]
    if absent:
        raise DataError(f"ground truth lacks classes of the submission, e.g. {absent[:5]}")
    truth = ground_truth.set_index("row_id").reindex(submission["row_id"])[list(classes)]
    if truth.isna().any().any():
        missing = truth.index[truth.isna().any(axis=1)][:5].tolist()
        raise DataError(f"ground truth lacks rows of the submission, e.g. {missing}")
    return truth


def score_submission(submission: pd.DataFrame, ground_truth: pd.DataFrame, classes: Sequence[str]) -> float:
    """Macro ROC-AUC of `submission` against a ground-truth table with the same row_ids."""
    from .metrics import macro_roc_auc

    truth = aligned_truth(submission, ground_truth, classes)
    return macro_roc_auc(truth.to_numpy(), submission[list(classes)].to_numpy())


AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")


def submission_stage(
    bundle_path: str,
    sample_submission_csv: str,
    soundscape_dir: str,
    ground_truth_csv: str | None,
    out_submission: str,
    out_manifest: str,
    settings: dict,
    tag: str,
    upstream: dict,
    threads: int = 4,
) -> dict:
    """The submission stage: OpenVINO CPU inference, the CSV, and its score when truth is known."""
    import time
    from pathlib import Path

    from .inference import load_bundle, predict_soundscapes
    from .manifest import StageManifest

    manifest = StageManifest("submission", tag, settings, upstream, [bundle_path, sample_submission_csv])
    sample = pd.read_csv(sample_submission_csv)
    paths = sorted(str(p) for p in Path(soundscape_dir).glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    start = time.perf_counter()
    bundle = load_bundle(Path(bundle_path).parent, threads=threads, precision_hint=settings["precision_hint"])
    predictions = predict_soundscapes(paths, bundle)
    seconds = time.perf_counter() - start
    submission, filled = align_to_sample(predictions, sample)
    write_submission(submission, out_submission)
    audio_seconds = len(predictions) * bundle.window_seconds
    headline = {
        "soundscapes": len(paths),
        "rows": int(len(submission)),
        "rows_filled_from_sample": filled,
        "inference_seconds": round(seconds, 3),
        "realtime_factor_per_core": round(audio_seconds / seconds / max(1, threads), 1) if seconds else None,
        "threads": threads,
        "inference_precision": settings["precision_hint"],
        "model_precision": getattr(bundle, "precision", None),
    }
    log.info(
        "submission: %d rows from %d soundscapes in %.1f s (OpenVINO CPU, inference precision %s)",
        len(submission), len(paths), seconds, settings["precision_hint"],
    )
    if ground_truth_csv:
        classes = [c for c in sample.columns if c != "row_id"]
        score = score_submission(submission, pd.read_csv(ground_truth_csv), classes)
        headline["macro_roc_auc"] = score
        log.info("submission score against %s: macro ROC-AUC %.4f", ground_truth_csv, score)
    manifest.headline.update(headline)
    manifest.write(out_manifest)
    return headline


def publish_submission(source: str, destination: str) -> None:
    """Copy the current config's submission to the stable path, atomically."""
    from .io import copy_file

    copy_file(source, destination)
    log.info("published %s -> %s", source, destination)

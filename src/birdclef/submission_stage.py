"""The submission stage: the export bundle's predictions for the test soundscapes, and their score.

The rows and values come from `birdclef.runtime.submission.predict_submission`
(the code the Kaggle bundle runs too); this stage adds the manifest, the score
against a ground truth when one is given (`birdclef.common.metrics.score_submission`),
and the publication of the current config's file to ``results/submission.csv``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from birdclef.common.io import copy_file
from birdclef.common.manifest import StageManifest
from birdclef.common.metrics import score_submission
from birdclef.runtime.inference import load_bundle
from birdclef.runtime.submission import predict_submission, write_submission

log = logging.getLogger(__name__)


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
    kaggle_data_dir: str | None = None,
) -> dict:
    """The submission stage: OpenVINO CPU inference (`predict_submission`), the CSV, its score.

    The score is computed when `ground_truth_csv` is given. `kaggle_data_dir`
    (config ``submission.kaggle_data_dir``: where the Kaggle bundle's
    predict.py looks for the competition data) does not change the result: it
    is only recorded in the manifest headline, for ``python -m birdclef.export.kaggle``.
    """
    manifest = StageManifest("submission", tag, settings, upstream, [bundle_path, sample_submission_csv])
    start = time.perf_counter()
    bundle = load_bundle(Path(bundle_path).parent, threads=threads, precision_hint=settings["precision_hint"])
    submission, stats = predict_submission(soundscape_dir, sample_submission_csv, bundle)
    seconds = time.perf_counter() - start
    write_submission(submission, out_submission)
    audio_seconds = stats.pop("audio_seconds")
    stats.pop("predict_seconds")
    headline = {
        **stats,
        "inference_seconds": round(seconds, 3),
        "realtime_factor_per_core": round(audio_seconds / seconds / max(1, threads), 1) if seconds else None,
        "threads": threads,
        "inference_precision": settings["precision_hint"],
        "model_precision": getattr(bundle, "precision", None),
        "kaggle_data_dir": kaggle_data_dir,
    }
    log.info(
        "submission: %d rows from %d soundscapes (%d undecodable, %d rows from the sample) in %.1f s "
        "(OpenVINO CPU, inference precision %s)",
        len(submission), stats["soundscapes"], stats["undecodable_files"], stats["rows_from_sample"],
        seconds, settings["precision_hint"],
    )
    if ground_truth_csv:
        classes = [c for c in submission.columns if c != "row_id"]
        score = score_submission(submission, pd.read_csv(ground_truth_csv), classes)
        headline["macro_roc_auc"] = score
        log.info("submission score against %s: macro ROC-AUC %.4f", ground_truth_csv, score)
    manifest.headline.update(headline)
    manifest.write(out_manifest)
    return headline


def publish_submission(source: str, destination: str) -> None:
    """Copy the current config's submission to the stable path, atomically."""
    copy_file(source, destination)
    log.info("published %s -> %s", source, destination)

"""The submission file: one row per 5 s window of every test soundscape.

`predict_submission` is the one code path of both the pipeline's submission
stage (`birdclef.submission_stage`) and the Kaggle bundle's ``predict.py``
(`birdclef.runtime.predict`): the rows come from the audio files in
``test_soundscapes/`` (sorted by file name; ``<stem>_<end second>``, one per
window of each file's own length), ``sample_submission.csv`` gives only the
class columns and their order (on Kaggle it lists just a few rows: the test
soundscapes are hidden until the notebook is rerun). With no test audio at
all, the sample's own rows and values are written, so the file is still
valid. This module stays torch-free: it is copied into the Kaggle bundle.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.errors import DataError
from birdclef.common.io import atomic_path
from birdclef.runtime.audio import AUDIO_SUFFIXES
from birdclef.runtime.inference import predict_soundscapes

log = logging.getLogger(__name__)

# Where the competition data is in a Kaggle notebook (the bundle's predict.py --data default).
KAGGLE_DATA_DIR = "/kaggle/input/competitions/birdclef-2026"


def write_submission(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the submission CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")


def list_test_audio(test_dir: str | os.PathLike) -> list[Path]:
    """The audio files (`AUDIO_SUFFIXES`, any case) in `test_dir`, sorted by file name.

    A missing folder gives an empty list (on Kaggle before the rerun the test
    soundscapes are hidden).
    """
    folder = Path(test_dir)
    if not folder.is_dir():
        return []
    return sorted(
        (path for path in folder.iterdir() if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()),
        key=lambda path: path.name,
    )


def check_sample_columns(
    sample: pd.DataFrame, classes: Sequence[str], where: str | os.PathLike = "sample_submission.csv"
) -> list[str]:
    """The sample's class columns, checked to be exactly `classes` in the same order.

    `classes` are the bundle's classes (taxonomy.csv order). Raises DataError
    naming `where` when the sample has no row_id column, when classes are
    missing or extra (a few named), or when the order differs (the first
    position that differs named): the taxonomy.csv order must match the
    sample's columns.
    """
    if "row_id" not in sample.columns:
        raise DataError(f"{where} has no row_id column (columns: {list(sample.columns)[:5]}...)")
    columns = [str(c) for c in sample.columns if c != "row_id"]
    classes = [str(c) for c in classes]
    extra = [c for c in columns if c not in set(classes)]
    missing = [c for c in classes if c not in set(columns)]
    if extra or missing or len(columns) != len(classes):
        raise DataError(
            f"{where} has {len(columns)} class columns, the models predict {len(classes)} classes: "
            f"columns the models do not predict: {extra[:5]}{' ...' if len(extra) > 5 else ''} "
            f"({len(extra)}); classes without a column: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}); train and export on the "
            "taxonomy.csv whose primary_label column lists exactly the sample's class columns"
        )
    for position, (column, label) in enumerate(zip(columns, classes, strict=True)):
        if column != label:
            raise DataError(
                f"{where}: class column {position + 1} (after row_id) is {column!r}, the models' "
                f"class {position + 1} (taxonomy.csv order) is {label!r}; same classes, different "
                "order: the taxonomy.csv order must match the sample's columns (retrain with a "
                "taxonomy.csv in the sample's column order)"
            )
    return columns


def sample_rows(sample: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The sample's own rows and values (row_id, then `classes`): the file without test audio."""
    out = sample[["row_id", *classes]].copy()
    out[list(classes)] = out[list(classes)].astype(np.float64)
    return out


def predict_submission(
    test_dir: str | os.PathLike,
    sample_csv: str | os.PathLike,
    bundle: Any,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """The submission of `bundle` (a loaded `birdclef.runtime.inference.bundle.Bundle`) for `test_dir`.

    Checks that `sample_csv`'s class columns are exactly `bundle.classes` in
    order (`check_sample_columns`), predicts every audio file of `test_dir`
    (`list_test_audio`: sorted by name) with
    `birdclef.runtime.inference.predict_soundscapes`: one row per window of each
    file's own length, row_id ``<stem>_<end second>``; a file that cannot be
    decoded gets its rows as 0. With no audio file (an empty or missing
    folder: Kaggle before the rerun) the sample's rows and values are
    returned and a warning logged. Returns (frame: row_id then the sample's
    class columns, stats: soundscapes, rows, rows_from_sample,
    undecodable_files, undecodable (file names), audio_seconds,
    predict_seconds).
    """
    sample = pd.read_csv(sample_csv)
    classes = check_sample_columns(sample, bundle.classes, sample_csv)
    paths = list_test_audio(test_dir)
    start = time.perf_counter()
    if paths:
        predictions = predict_soundscapes(paths, bundle, progress=progress)
        undecodable = list(predictions.attrs.get("undecodable", []))
        frame = predictions[["row_id", *classes]]
        from_sample = 0
    else:
        log.warning(
            "no audio files (%s) in %s (on Kaggle the test soundscapes are hidden until the "
            "notebook is rerun): writing the %d rows of %s with its values",
            "/".join(AUDIO_SUFFIXES), test_dir, len(sample), sample_csv,
        )
        frame = sample_rows(sample, classes)
        undecodable, from_sample = [], len(frame)
    frame = frame.reset_index(drop=True)
    frame.attrs = {}
    stats = {
        "soundscapes": len(paths),
        "rows": int(len(frame)),
        "rows_from_sample": int(from_sample),
        "undecodable_files": len(undecodable),
        "undecodable": undecodable,
        "audio_seconds": float((len(frame) - from_sample) * bundle.window_seconds),
        "predict_seconds": round(time.perf_counter() - start, 3),
    }
    return frame, stats

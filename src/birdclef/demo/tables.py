"""The demo's tables: window labels and the CSV files (train.csv, taxonomy.csv,
train_soundscapes_labels.csv, test_ground_truth.csv, sample_submission.csv)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.io import atomic_path
from birdclef.demo.layout import (
    MIN_OVERLAP_SECONDS,
    SAMPLE_SUBMISSION_ROWS,
    TAXONOMY_COLUMNS,
    TRAIN_COLUMNS_2026,
    WINDOW_SECONDS,
)
from birdclef.demo.species import Species
from birdclef.soundscapes import LABEL_COLUMNS


def window_labels(
    calls: Sequence[Sequence[Any]], seconds: float, labels: Sequence[str]
) -> np.ndarray:
    """0/1 matrix (windows x labels) of which species call in each 5 s window.

    A call counts in a window when it overlaps it by `MIN_OVERLAP_SECONDS`, or
    by half its own length when it is shorter than twice that.
    """
    n_windows = int(round(seconds / WINDOW_SECONDS))
    column = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((n_windows, len(labels)), dtype=np.int64)
    for label, start, end in calls:
        need = min(MIN_OVERLAP_SECONDS, 0.5 * (end - start))
        for w in range(n_windows):
            overlap = min(end, (w + 1) * WINDOW_SECONDS) - max(start, w * WINDOW_SECONDS)
            if overlap >= need and overlap > 0:
                matrix[w, column[label]] = 1
    return matrix


def _hhmmss(seconds: float) -> str:
    """`HH:MM:SS` of a whole number of seconds, as in train_soundscapes_labels.csv."""
    total = int(round(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def _write_train_and_taxonomy(
    tmp: Path, rows: list[dict[str, Any]], species: Sequence[Species]
) -> None:
    """train.csv (the recordings' `rows`) and taxonomy.csv (one row per species)."""
    train = pd.DataFrame(rows, columns=TRAIN_COLUMNS_2026)
    _write_csv(tmp / "train.csv", train)
    taxonomy = pd.DataFrame(
        [
            [s.label, s.inat_taxon_id, s.scientific_name, s.common_name, s.class_name]
            for s in species
        ],
        columns=TAXONOMY_COLUMNS,
    )
    _write_csv(tmp / "taxonomy.csv", taxonomy)


def _write_soundscape_labels(
    tmp: Path,
    labelled: Sequence[int],
    train_stems: Sequence[str],
    train_calls: Sequence[Sequence[Sequence[Any]]],
    soundscape_seconds: float,
    labels: Sequence[str],
) -> tuple[list[list[str]], pd.DataFrame]:
    """train_soundscapes_labels.csv; return its distinct rows and the table written."""
    # train_soundscapes_labels.csv: the windows with a call, then the same rows again.
    label_rows = []
    for i in labelled:
        present = window_labels(train_calls[i], soundscape_seconds, labels)
        for w in np.flatnonzero(present.any(axis=1)):
            label_rows.append(
                [
                    f"{train_stems[i]}.ogg",
                    _hhmmss(w * WINDOW_SECONDS),
                    _hhmmss((w + 1) * WINDOW_SECONDS),
                    ";".join(label for label, on in zip(labels, present[w], strict=True) if on),
                ]
            )
    scape_labels = pd.DataFrame(label_rows * 2, columns=list(LABEL_COLUMNS))
    _write_csv(tmp / "train_soundscapes_labels.csv", scape_labels)
    return label_rows, scape_labels


def _write_ground_truth(
    tmp: Path,
    test_stems: Sequence[str],
    test_calls: Sequence[Sequence[Sequence[Any]]],
    soundscape_seconds: float,
    labels: list[str],
    n_windows: int,
) -> list[str]:
    """test_ground_truth.csv (every window of every test soundscape); return its row ids."""
    row_ids = [
        f"{stem}_{(w + 1) * WINDOW_SECONDS}" for stem in test_stems for w in range(n_windows)
    ]
    truth = np.concatenate(
        [window_labels(calls, soundscape_seconds, labels) for calls in test_calls]
    )
    ground_truth = pd.DataFrame(truth, columns=labels)
    ground_truth.insert(0, "row_id", row_ids)
    _write_csv(tmp / "test_ground_truth.csv", ground_truth)
    return row_ids


def _write_sample_submission(
    tmp: Path, test_stems: Sequence[str], labels: list[str], n_windows: int
) -> pd.DataFrame:
    """sample_submission.csv; return the table written."""
    # The first windows of the first test soundscape (sorted), uniform values.
    sample_ids = [
        f"{min(test_stems)}_{(w + 1) * WINDOW_SECONDS}"
        for w in range(min(SAMPLE_SUBMISSION_ROWS, n_windows))
    ]
    submission = pd.DataFrame(
        np.full((len(sample_ids), len(labels)), 1.0 / len(labels)), columns=labels
    )
    submission.insert(0, "row_id", sample_ids)
    _write_csv(tmp / "sample_submission.csv", submission)
    return submission

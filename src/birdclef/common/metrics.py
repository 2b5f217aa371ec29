"""The competition metric, in one place: macro ROC-AUC over scored classes.

As Kaggle scores BirdCLEF 2025: ROC-AUC per class, averaged over the classes
that have at least one positive in the ground truth. Every stage that reports a
score calls `macro_roc_auc`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from birdclef.common.errors import DataError


def per_class_roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """ROC-AUC per class; NaN for classes with no positive (or no negative)."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(
            f"y_true {y_true.shape} and y_score {y_score.shape} must be equal (rows, classes)"
        )
    positives = (y_true > 0.5).astype(np.int8)
    scores = np.full(y_true.shape[1], np.nan)
    for k in range(y_true.shape[1]):
        column = positives[:, k]
        if 0 < column.sum() < column.size:
            scores[k] = roc_auc_score(column, y_score[:, k])
    return scores


def macro_roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro ROC-AUC over classes with at least one positive (Kaggle's BirdCLEF metric).

    A class that is positive in every row has an undefined AUC and is skipped,
    as it cannot be ranked. Returns NaN when no class can be scored.
    """
    scores = per_class_roc_auc(y_true, y_score)
    if np.all(np.isnan(scores)):
        return float("nan")
    return float(np.nanmean(scores))


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
    truth = aligned_truth(submission, ground_truth, classes)
    return macro_roc_auc(truth.to_numpy(), submission[list(classes)].to_numpy())

"""The competition metric, in one place: macro ROC-AUC over scored classes.

As Kaggle scores BirdCLEF 2025: ROC-AUC per class, averaged over the classes
that have at least one positive in the ground truth. Every stage that reports a
score calls `macro_roc_auc`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


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

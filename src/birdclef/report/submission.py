"""Submission figures: per-class prediction histograms, and per-class ROC-AUC against ground truth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from birdclef.common.metrics import aligned_truth, per_class_roc_auc
from birdclef.report.figures import CLASSES_PER_PAGE, _class_pages, read_class_names
from birdclef.report.per_class import plot_per_class_auc

ABSENT_COLOUR, PRESENT_COLOUR = "#7f7f7f", "#d62728"


def submission_per_class(submission: pd.DataFrame, truth: pd.DataFrame,
                         classes: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-class ROC-AUC of a submission against ground truth, and positive windows per class.

    The truth is aligned as `birdclef.common.metrics.score_submission` aligns it (it must cover every row)."""
    present = [c for c in classes if c in submission.columns]
    y_true = aligned_truth(submission, truth, present).to_numpy(dtype=float)
    scores = per_class_roc_auc(y_true, submission[present].to_numpy(dtype=float))
    positives = (y_true > 0.5).sum(axis=0)
    return ({c: float(s) for c, s in zip(present, scores, strict=True)},
            {c: int(p) for c, p in zip(present, positives, strict=True)})


def plot_prediction_histograms(submission: pd.DataFrame, truth: pd.DataFrame | None,
                               classes: Sequence[str], names: Mapping[str, str],
                               out_dir: str | os.PathLike, per_page: int = CLASSES_PER_PAGE) -> list:
    """Per class, the histogram of predicted probabilities over the submission's windows
    (split into windows with and without the species when ground truth is known; the truth
    is aligned as `birdclef.common.metrics.score_submission` aligns it, so it must cover every row)."""
    classes = [c for c in classes if c in submission.columns]
    aligned = None if truth is None else aligned_truth(submission, truth, classes)
    bins = np.linspace(0, 1, 21)
    figures = []
    for figure, panels, span in _class_pages(classes, out_dir, per_page, (3.3, 2.7), (0.0, 1.2)):
        for label, axis in panels:
            values = submission[label].to_numpy(dtype=float)
            title = names.get(label, label)
            if aligned is not None:
                present = aligned[label].to_numpy(dtype=float) > 0.5
                axis.hist(values[~present], bins=bins, color=ABSENT_COLOUR, alpha=0.75)
                axis.hist(values[present], bins=bins, color=PRESENT_COLOUR, alpha=0.75)
                title += f"\npresent in {int(present.sum())} of {len(values)} windows"
            else:
                axis.hist(values, bins=bins, color="#1f77b4")
            axis.set_yscale("log")
            axis.set_xlim(0, 1)
            axis.set_title(title, fontsize=9)
            axis.set_xlabel("predicted probability", fontsize=8)
            axis.set_ylabel("5 s windows (log)", fontsize=8)
            axis.tick_params(labelsize=8)
            axis.grid(alpha=0.3)
        if aligned is not None:
            figure.legend(handles=[
                Patch(color=ABSENT_COLOUR, alpha=0.75, label="windows without the species"),
                Patch(color=PRESENT_COLOUR, alpha=0.75, label="windows with the species (ground truth)"),
            ], loc="outside lower center", ncols=2, fontsize=9)
        figure.suptitle(f"Submission: predicted probabilities per class over {len(submission)} windows "
                        f"({span})" + ("" if aligned is not None else "; no ground truth"))
        figures.append(figure)
    return figures


def _read_submission_tables(submission_csv: str, ground_truth_csv: str | None):
    submission = pd.read_csv(submission_csv)
    truth = pd.read_csv(ground_truth_csv) if ground_truth_csv else None
    return submission, truth


def submission_report(submission_csv: str, taxonomy_csv: str, out_histograms: str,
                      ground_truth_csv: str | None = None) -> None:
    """Per-class prediction histograms of a submission (split by ground truth when known)."""
    submission, truth = _read_submission_tables(submission_csv, ground_truth_csv)
    classes, names = read_class_names(taxonomy_csv)
    plot_prediction_histograms(submission, truth, classes, names, out_histograms)


def submission_score_report(submission_csv: str, ground_truth_csv: str, taxonomy_csv: str,
                            out_png: str) -> None:
    """Per-class ROC-AUC of a submission against the test ground truth."""
    submission, truth = _read_submission_tables(submission_csv, ground_truth_csv)
    classes, names = read_class_names(taxonomy_csv)
    auc, positives = submission_per_class(submission, truth, classes)
    plot_per_class_auc(auc, positives, names,
                       f"Submission on the test soundscapes ({len(submission)} windows)",
                       "ROC-AUC on the test soundscape windows (ground truth known)", out_png,
                       positive_unit="windows")

"""Pseudo-labels for unlabelled soundscapes: ensemble predictions, sharpened.

Power scaling (BirdCLEF 2025, 1st place): p_i <- p_i^e / sum_j p_j^e per window,
with the round's exponent e (e = 1/c in the write-up's notation): e = 1 leaves the
distribution unchanged, e > 1 sharpens it. Threshold rule (2nd place): keep only
windows whose top probability exceeds `keep_threshold` and zero probabilities
below `zero_threshold`. Method "both" applies the threshold rule, then scaling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

METHODS = ("power", "threshold", "both")


def power_scale(probs: np.ndarray, exponent: float) -> np.ndarray:
    """Raise each probability to `exponent` and renormalise every row to sum to 1.

    Rows that are all zero stay all zero.
    """
    if exponent <= 0:
        raise ValueError(f"power exponent must be > 0, got {exponent}")
    powered = np.power(np.clip(np.asarray(probs, dtype=np.float64), 0.0, None), exponent)
    totals = powered.sum(axis=1, keepdims=True)
    out = np.divide(powered, totals, out=np.zeros_like(powered), where=totals > 0)
    return out.astype(np.float32)


def threshold_labels(
    probs: np.ndarray, keep_threshold: float, zero_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(kept-window mask, labels with probabilities below `zero_threshold` zeroed)."""
    probs = np.asarray(probs, dtype=np.float32)
    keep = probs.max(axis=1) > keep_threshold
    labels = np.where(probs < zero_threshold, 0.0, probs).astype(np.float32)
    return keep, labels


def make_pseudo_labels(
    predictions: Sequence[pd.DataFrame], classes: Sequence[str], round_settings: Mapping[str, Any]
) -> tuple[pd.DataFrame, dict]:
    """Average the models' soundscape predictions and transform them into soft labels.

    `predictions` are the previous round's `soundscape_preds.parquet` tables
    (row_id, soundscape, end_s, one column per class). Returns the kept windows
    (row_id, soundscape, end_s, classes...) and stats.
    """
    method = round_settings.get("method", "power")
    if method not in METHODS:
        raise ValueError(f"pseudo.rounds[].method must be one of {METHODS}, got {method!r}")
    if not predictions:
        raise ValueError("pseudo-labelling needs the previous round's soundscape predictions; none given")
    classes = list(classes)
    base = predictions[0][["row_id", "soundscape", "end_s"]].reset_index(drop=True)
    stacked = []
    for frame in predictions:
        if list(frame["row_id"]) != list(base["row_id"]):
            raise ValueError("soundscape predictions of the previous round cover different windows")
        stacked.append(frame[classes].to_numpy(dtype=np.float32))
    mean = np.mean(stacked, axis=0) if stacked else np.zeros((0, len(classes)), np.float32)
    keep = np.ones(len(base), dtype=bool)
    labels = mean
    if method in ("threshold", "both"):
        keep, labels = threshold_labels(
            labels, round_settings.get("keep_threshold", 0.5), round_settings.get("zero_threshold", 0.1)
        )
    if method in ("power", "both"):
        labels = power_scale(labels, round_settings.get("power", 1.0))
    out = base.copy()
    out[classes] = labels
    out = out[keep].reset_index(drop=True)
    stats = {
        "windows": int(len(base)),
        "windows_kept": int(keep.sum()),
        "models": len(predictions),
        "mean_top_probability_before": float(mean.max(axis=1).mean()) if len(mean) else None,
        "mean_top_label_after": float(labels[keep].max(axis=1).mean()) if keep.any() else None,
    }
    return out, stats


def pseudo_stage(
    prediction_paths: Sequence[str],
    taxonomy_csv: str,
    out_labels: str,
    out_manifest: str,
    settings: Mapping[str, Any],
    tag: str,
    upstream: Mapping[str, Any],
) -> dict:
    """The pseudo stage: soft labels for round `settings['round']`, with provenance."""
    from .catalog import read_taxonomy
    from .io import write_parquet
    from .manifest import StageManifest

    manifest = StageManifest("pseudo", tag, settings, upstream, prediction_paths)
    classes = read_taxonomy(taxonomy_csv)
    predictions = [pd.read_parquet(p) for p in prediction_paths]
    labels, stats = make_pseudo_labels(predictions, classes, settings)
    write_parquet(out_labels, labels)
    manifest.headline.update(stats)
    manifest.data["models"] = list(prediction_paths)
    manifest.write(out_manifest)
    return stats

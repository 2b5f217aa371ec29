"""Pseudo-labels for unlabelled soundscapes: ensemble predictions, sharpened.

Power scaling (BirdCLEF 2025, 1st place): p_i <- p_i^e / sum_j p_j^e per window,
with the round's exponent e (e = 1/c in the write-up's notation): e = 1 leaves the
distribution unchanged, e > 1 sharpens it. Threshold rule (2nd place): keep only
windows whose top probability exceeds `keep_threshold` and zero probabilities
below `zero_threshold`. Method "both" applies the threshold rule, then scaling.

The sum-to-1 renormalisation treats a window's sigmoid outputs as one
distribution: a window where nothing calls (all probabilities low) still gets
labels summing to 1, and a window with three species splits the mass between
them. `normalize` chooses the renormalisation: ``"sum"`` (the formula above,
the default), ``"max"`` (rescale so the window keeps its top probability:
p_i^e * max_j p_j / max_j p_j^e; quiet windows stay quiet) or ``"none"``
(p_i^e). bench/README.md compares them.

Self-distillation on the training recordings (``pseudo.rounds[].recordings``,
5th place 2025; the cap from 1st place 2026): the previous round's out-of-fold
predictions of each training recording (``oof.parquet``: every recording scored
only by the fold model that held it out; averaged over backbones) are power
scaled like the soundscape windows (`recording_soft_labels`) and combined with
the recording's true labels y by `self_distill_targets`: t = max(y, q), so a
true label is never lowered and the pseudo part is what q adds above y; with
``label_mass_cap`` that pseudo part is scaled down, per recording, so that its
sum never exceeds sum(y).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from birdclef.catalog import read_taxonomy
from birdclef.common.io import atomic_path
from birdclef.common.manifest import StageManifest
from birdclef.runtime.postprocess import blend_teacher
from birdclef.runtime.teacher.mapping import probabilities
from birdclef.soundscapes import soundscape_score

log = logging.getLogger(__name__)

METHODS = ("power", "threshold", "both")
SOURCES = ("students", "teacher", "blend")
BLENDS = ("probability", "rank")
NORMALIZE = ("sum", "max", "none")


def power_scale(probs: np.ndarray, exponent: float, normalize: str = "sum") -> np.ndarray:
    """Raise each probability to `exponent` and renormalise every row (see the module doc).

    ``normalize="sum"``: rows sum to 1; ``"max"``: each row keeps its largest
    probability; ``"none"``: no renormalisation. Rows that are all zero stay all zero.
    """
    if exponent <= 0:
        raise ValueError(f"power exponent must be > 0, got {exponent}")
    if normalize not in NORMALIZE:
        raise ValueError(f"pseudo.rounds[].normalize must be one of {NORMALIZE}, got {normalize!r}")
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    powered = np.power(probs, exponent)
    if normalize == "none":
        return powered.astype(np.float32)
    if normalize == "sum":
        totals = powered.sum(axis=1, keepdims=True)
        out = np.divide(powered, totals, out=np.zeros_like(powered), where=totals > 0)
    else:
        peak = powered.max(axis=1, keepdims=True)
        out = np.divide(powered * probs.max(axis=1, keepdims=True), peak, out=np.zeros_like(powered),
                        where=peak > 0)
    return out.astype(np.float32)


def recording_soft_labels(
    predictions: Sequence[pd.DataFrame], classes: Sequence[str], exponent: float, normalize: str = "sum",
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Power-scaled out-of-fold soft labels of the training recordings: (filename, classes..., n_models).

    `predictions` are the previous round's ``oof.parquet`` tables (filename, fold, one
    probability column per class; each holds the recordings its fold model never trained
    on). A recording's probabilities are averaged over the tables that score it (one per
    backbone), then `power_scale`d with `exponent` and `normalize`. `names` (the paths, for
    errors) name the tables.
    """
    classes = list(classes)
    names = list(names) if names is not None else [f"OOF table {k}" for k in range(len(predictions))]
    frames = []
    for name, frame in zip(names, predictions, strict=True):
        missing = [c for c in ("filename", *classes) if c not in frame.columns]
        if missing:
            raise ValueError(f"{name}: out-of-fold predictions lack columns {missing[:5]}: expected the "
                             "train stage's oof.parquet (filename, fold, one column per class)")
        if frame["filename"].duplicated().any():
            first = frame.loc[frame["filename"].duplicated(), "filename"].iloc[0]
            raise ValueError(f"{name}: recording {first!r} is scored twice; expected one row per "
                             "held-out recording")
        frames.append(frame[["filename", *classes]].astype({"filename": str}))
    if not frames:
        return pd.DataFrame(columns=["filename", *classes, "n_models"])
    stacked = pd.concat(frames, ignore_index=True)
    grouped = stacked.groupby("filename", sort=True)
    mean = grouped[classes].mean()
    out = pd.DataFrame(power_scale(mean.to_numpy(np.float64), exponent, normalize), columns=classes)
    out.insert(0, "filename", mean.index.to_numpy())
    out["n_models"] = grouped.size().reindex(mean.index).to_numpy(np.int64)
    return out


def self_distill_targets(
    true: np.ndarray, scaled: np.ndarray, mass_cap: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """Training targets from true labels `true` (n, K) and scaled OOF soft labels `scaled` (n, K).

    t = y + s * max(q - y, 0) = max(y, q) at s = 1: a true label is never lowered. The
    pseudo mass of a row is sum_k max(q_k - y_k, 0); with `mass_cap`, s = min(1, sum(y) /
    pseudo mass) so that it never exceeds the true labels' mass sum(y) (a row without true
    labels gets no pseudo mass). A row of `scaled` that is NaN (a recording no model held
    out) keeps its true labels. Returns (targets float32, stats).
    """
    true = np.asarray(true, dtype=np.float64)
    scaled = np.asarray(scaled, dtype=np.float64)
    if true.shape != scaled.shape:
        raise ValueError(f"true labels {true.shape} and soft labels {scaled.shape} differ in shape")
    has = ~np.isnan(scaled).any(axis=1)
    extra = np.where(has[:, None], np.clip(np.nan_to_num(scaled) - true, 0.0, None), 0.0)
    mass = extra.sum(axis=1)
    true_mass = true.sum(axis=1)
    factor = np.ones(len(true))
    if mass_cap:
        over = mass > true_mass
        factor[over] = true_mass[over] / mass[over]
        extra *= factor[:, None]
    targets = (true + extra).astype(np.float32)
    stats = {
        "recordings": int(len(true)),
        "recordings_with_oof": int(has.sum()),
        "pseudo_mass_mean": float(extra[has].sum(axis=1).mean()) if has.any() else 0.0,
        "true_mass_mean": float(true_mass[has].mean()) if has.any() else 0.0,
        "recordings_capped": int((factor < 1.0).sum()),
    }
    return targets, stats


def threshold_labels(
    probs: np.ndarray, keep_threshold: float, zero_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(kept-window mask, labels with probabilities below `zero_threshold` zeroed)."""
    probs = np.asarray(probs, dtype=np.float32)
    keep = probs.max(axis=1) > keep_threshold
    labels = np.where(probs < zero_threshold, 0.0, probs).astype(np.float32)
    return keep, labels


def soundscape_folds(soundscapes: Sequence[str], folds: Sequence[int], seed: int) -> dict[str, int]:
    """Each soundscape's fold for out-of-fold pseudo-labelling, deterministic from `seed`.

    The distinct soundscape names are sorted, shuffled with `seed` and dealt
    round-robin over `folds` (the folds that are trained), so the folds differ
    in size by at most one soundscape. With ``pseudo.oof_by_soundscape``, the
    fold-k model of a round trains on the pseudo-labels of the other folds'
    soundscapes and labels fold k's soundscapes for the next round.
    """
    folds = [int(f) for f in folds]
    if not folds:
        raise ValueError("soundscape_folds needs at least one fold")
    names = sorted({str(s) for s in soundscapes})
    order = np.random.default_rng(int(seed)).permutation(len(names))
    return {names[position]: folds[k % len(folds)] for k, position in enumerate(order)}


def teacher_probabilities(logits: np.ndarray, index: pd.DataFrame, row_ids: Sequence[str]) -> np.ndarray:
    """The teacher's probabilities (sigmoid of its mapped logits; NaN for a class it does not know) of
    the soundscape windows `row_ids`, from the teacher artifact's `logits` and `index`."""
    rows = index[index["source"] == "soundscape"]
    position = pd.Series(rows.index.to_numpy(), index=rows["row_id"].astype(str).to_numpy())
    wanted = position.reindex([str(r) for r in row_ids])
    if wanted.isna().any():
        missing = wanted.index[wanted.isna()][:3].tolist()
        raise ValueError(f"the teacher artifact has no window {missing} of the soundscape predictions: "
                         "expected the teacher stage to cover every train soundscape (rerun it)")
    values = np.asarray(logits[wanted.to_numpy(np.int64)], dtype=np.float32)
    return np.where(np.isnan(values), np.nan, probabilities(values)).astype(np.float32)


def label_source(students: np.ndarray, teacher: np.ndarray | None, round_settings: Mapping[str, Any]) -> np.ndarray:
    """The probabilities a round labels from (`round_settings` source, teacher_weight, blend).

    ``students``: the students' mean; ``teacher``: the teacher's probabilities where it knows the
    class, the students' elsewhere; ``blend``: teacher_weight x teacher + (1 - teacher_weight) x
    students (of probabilities, or of per-class ranks over all windows), the students alone
    for classes the teacher does not know.
    """
    source = round_settings.get("source", "students")
    if source not in SOURCES:
        raise ValueError(f"pseudo.rounds[].source must be one of {SOURCES}, got {source!r}")
    if source == "students":
        return students
    if teacher is None:
        raise ValueError(f"pseudo.rounds[].source is {source!r} but no teacher predictions were given: "
                         "expected teacher.enabled: true")
    known = ~np.isnan(teacher)
    if source == "teacher":
        return np.where(known, teacher, students).astype(np.float32)
    blend = round_settings.get("blend", "probability")
    if blend not in BLENDS:
        raise ValueError(f"pseudo.rounds[].blend must be one of {BLENDS}, got {blend!r}")
    weight = float(round_settings.get("teacher_weight", 0.5))
    if blend == "rank":  # the inference's final blend: per-class ranks, unknown classes the students'
        return blend_teacher(students, np.where(known, teacher, 0.0), weight, known.any(axis=0))
    return np.where(known, weight * teacher + (1.0 - weight) * students, students).astype(np.float32)


def make_pseudo_labels(
    predictions: Sequence[pd.DataFrame],
    classes: Sequence[str],
    round_settings: Mapping[str, Any],
    labelled: pd.DataFrame | None = None,
    teacher: tuple[np.ndarray, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Average the models' soundscape predictions and transform them into soft labels.

    `predictions` are the previous round's `soundscape_preds.parquet` tables
    (row_id, soundscape, end_s, one column per class, and ``seen_in_training``:
    whether the model trained on that window's pseudo-label). With
    ``oof_by_soundscape`` in `round_settings`, each window is averaged only over
    the models that did not see it in training (out of fold by soundscape);
    otherwise over all models. Windows of `labelled` (the soundscape_labels
    table) are never pseudo-labelled: their true labels train (``train``
    split) or they are held out (``validation``), and the averaged predictions
    are scored on the held-out ones (``soundscape_auc``). `teacher` (the teacher
    artifact's logits and index) feeds rounds whose ``source`` is ``teacher`` or
    ``blend`` (`label_source`). Returns the kept windows (row_id, soundscape,
    end_s, classes..., round, n_models) and stats.
    """
    method = round_settings.get("method", "power")
    if method not in METHODS:
        raise ValueError(f"pseudo.rounds[].method must be one of {METHODS}, got {method!r}")
    if not predictions:
        raise ValueError("pseudo-labelling needs the previous round's soundscape predictions; none given")
    classes = list(classes)
    base = predictions[0][["row_id", "soundscape", "end_s"]].reset_index(drop=True)
    oof = bool(round_settings.get("oof_by_soundscape", False))
    total = np.zeros((len(base), len(classes)), dtype=np.float64)
    used = np.zeros(len(base), dtype=np.int64)
    for k, frame in enumerate(predictions):
        if list(frame["row_id"]) != list(base["row_id"]):
            if frame["row_id"].duplicated().any() or set(frame["row_id"]) != set(base["row_id"]):
                raise ValueError(
                    f"soundscape predictions of model {k} cover different windows than model 0"
                )
            # Same windows in another order (e.g. another mel configuration's cache).
            frame = frame.set_index("row_id").loc[base["row_id"]].reset_index()
        missing = [c for c in classes if c not in frame.columns]
        if missing:
            raise ValueError(f"soundscape predictions of model {k} lack classes {missing[:5]}")
        take = np.ones(len(base), dtype=bool)
        if oof and "seen_in_training" in frame.columns:
            take = ~frame["seen_in_training"].fillna(False).to_numpy(bool)
        total[take] += frame.loc[take, classes].to_numpy(dtype=np.float64)
        used += take
    if (used == 0).any():
        first = base.loc[used == 0, "row_id"].iloc[0]
        raise ValueError(
            f"{int((used == 0).sum())} soundscape windows (e.g. {first!r}) were seen in training by "
            "every model of the previous round, so no out-of-fold prediction exists: "
            "set pseudo.oof_by_soundscape: false or train every fold"
        )
    mean = (total / used[:, None]).astype(np.float32)
    keep = np.ones(len(base), dtype=bool)
    soundscape_auc, scored = soundscape_score(
        pd.concat([base[["row_id"]], pd.DataFrame(mean, columns=classes)], axis=1), labelled, classes)
    labelled_rows = np.zeros(len(base), dtype=bool)
    if labelled is not None:
        labelled_rows = base["row_id"].astype(str).isin(set(labelled["row_id"].astype(str))).to_numpy()
    teacher_probs = None if teacher is None else teacher_probabilities(*teacher, base["row_id"])
    labels = label_source(mean, teacher_probs, round_settings)
    source = round_settings.get("source", "students")
    # the classes whose labels come from the teacher (the students label the others)
    teacher_classes = None if teacher_probs is None else int((~np.isnan(teacher_probs)).any(axis=0).sum())
    if source != "students" and teacher_classes == 0:
        log.warning("pseudo round with source %r: the teacher knows none of the %d classes (no class of "
                    "taxonomy.csv maps onto it), so the students label every window", source, len(classes))
    if method in ("threshold", "both"):
        keep, labels = threshold_labels(
            labels, round_settings.get("keep_threshold", 0.5), round_settings.get("zero_threshold", 0.1)
        )
    if method in ("power", "both"):
        labels = power_scale(labels, round_settings.get("power", 1.0), round_settings.get("normalize") or "sum")
    keep &= ~labelled_rows
    out = base.copy()
    out[classes] = labels
    out["round"] = int(round_settings.get("round", 0))
    out["n_models"] = used
    out = out[keep].reset_index(drop=True)
    kept_mean = mean[keep]
    stats = {
        "windows": int(len(base)),
        "windows_kept": int(keep.sum()),
        "labelled_windows_left_out": int(labelled_rows.sum()),
        # The previous round's averaged predictions on the held-out labelled windows.
        "soundscape_auc": soundscape_auc,
        "soundscape_windows_scored": scored,
        "models": len(predictions),
        "source": source,
        "teacher_classes": teacher_classes,
        "oof_by_soundscape": oof,
        "models_per_window_min": int(used.min()) if len(used) else 0,
        "models_per_window_max": int(used.max()) if len(used) else 0,
        "mean_top_probability_before": float(mean.max(axis=1).mean()) if len(mean) else None,
        "mean_top_label_after": float(labels[keep].max(axis=1).mean()) if keep.any() else None,
        # Label distribution: mean soft label per class, before and after the transform.
        "class_mass_before": dict(zip(classes, kept_mean.mean(axis=0).tolist(), strict=True))
        if keep.any() else {},
        "class_mass_after": dict(zip(classes, labels[keep].mean(axis=0).tolist(), strict=True))
        if keep.any() else {},
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
    labelled_path: str | None = None,
    teacher_paths: Mapping[str, str] | None = None,
) -> dict:
    """The pseudo stage: soft labels for round `settings['round']`, with provenance.

    `teacher_paths` (``logits``, ``index``: the teacher artifact) when the round's
    source is the teacher or a blend.

    `labelled_path` (the soundscape_labels stage's table) names windows that
    are never pseudo-labelled and scores the previous round on the held-out ones.

    The labels parquet carries its provenance twice: per row (``round``,
    ``n_models``) and in the file's metadata (key ``birdclef_provenance``: the
    models read, the round and its settings); the manifest holds the same.
    """
    manifest = StageManifest("pseudo", tag, settings, upstream, prediction_paths)
    classes = read_taxonomy(taxonomy_csv)
    predictions = []
    for path in prediction_paths:
        frame = pd.read_parquet(path)
        for column in ("row_id", "soundscape", "end_s"):
            if column not in frame.columns:
                raise ValueError(f"{path}: soundscape predictions lack column {column!r}")
        predictions.append(frame)
    labelled = pd.read_parquet(labelled_path) if labelled_path else None
    teacher = None
    if teacher_paths:
        teacher = (np.load(teacher_paths["logits"], mmap_mode="r"), pd.read_parquet(teacher_paths["index"]))
    labels, stats = make_pseudo_labels(predictions, classes, settings, labelled, teacher)
    provenance = {"round": settings.get("round"), "settings": dict(settings), "models": list(prediction_paths),
                  "upstream": dict(upstream)}
    table = pa.Table.from_pandas(labels, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[b"birdclef_provenance"] = json.dumps(provenance, sort_keys=True, default=str).encode()
    with atomic_path(out_labels) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
    manifest.headline.update({k: v for k, v in stats.items() if not k.startswith("class_mass")})
    manifest.data["label_distribution"] = {
        "before": stats["class_mass_before"], "after": stats["class_mass_after"],
    }
    manifest.data["models"] = list(prediction_paths)
    manifest.write(out_manifest)
    return stats


def read_provenance(labels_path: str) -> dict:
    """The provenance stored in a pseudo-labels parquet's metadata."""
    metadata = pq.read_schema(labels_path).metadata or {}
    if b"birdclef_provenance" not in metadata:
        raise ValueError(f"{labels_path} has no birdclef_provenance metadata: not written by the pseudo stage")
    return json.loads(metadata[b"birdclef_provenance"])

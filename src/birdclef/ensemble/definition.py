"""The ensemble definition: the final round's models across folds and backbones, weighted and scored.

Members are combined by the weighted mean of their probabilities or of their
per-class ranks (`birdclef.runtime.postprocess.combine_members`); weights are equal,
per backbone from config, or fitted on the out-of-fold predictions. With
``soup``, each (backbone, fold) member is first replaced by the greedy soup of
that fold's checkpoints over all rounds (`birdclef.ensemble.soup`). Each member's OOF
score and the ensemble's are computed with the one metric; the definition
also carries the submission's post-processing settings.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.labels import targets_of
from birdclef.common.metrics import macro_roc_auc
from birdclef.runtime.features import MEL_KEYS
from birdclef.runtime.features import check_mel_groups as check_group_settings
from birdclef.runtime.postprocess import (
    combine_members,
    member_class_weights,
    pool_sonotypes,
    postprocess_soundscape,
)

log = logging.getLogger(__name__)

# Candidate multipliers of one backbone's weight in the coordinate search.
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def check_mel_groups(groups: Sequence[Mapping[str, Any]], members: Sequence[Mapping[str, Any]]) -> None:
    """`features.check_mel_groups` for the stage's groups, which also carry one shared window_seconds."""
    check_group_settings(groups, members, keys=(*MEL_KEYS, "window_seconds"))
    lengths = {float(group["window_seconds"]) for group in groups}
    if len(lengths) > 1:
        raise ValueError(f"mel groups have window_seconds {sorted(lengths)}: every mel configuration of "
                         "one ensemble must cut the same windows (the submission's rows)")


def backbone_oof(
    members: Sequence[Mapping[str, Any]], oof_tables: Mapping[str, pd.DataFrame], classes: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """Per backbone: its folds' OOF predictions stacked, one row per recording (index: filename)."""
    by_backbone: dict[str, list[pd.DataFrame]] = {}
    for member in members:
        table = oof_tables[member["name"]]
        if len(table):
            by_backbone.setdefault(member["backbone"], []).append(table[["filename", *classes]])
    out = {}
    for backbone, parts in by_backbone.items():
        stacked = pd.concat(parts, ignore_index=True)
        duplicated = stacked["filename"].duplicated()
        if duplicated.any():
            raise ValueError(f"backbone {backbone}: recording {stacked['filename'][duplicated].iloc[0]!r} "
                             "is out of fold in two members; folds must not overlap")
        out[backbone] = stacked.set_index("filename").sort_index()
    return out


def ensemble_oof(
    per_backbone: Mapping[str, pd.DataFrame], weights: Mapping[str, float], method: str, classes: Sequence[str],
    specialists: Mapping[str, Sequence[str] | None] | None = None,
) -> tuple[list[str], np.ndarray]:
    """(filenames, combined predictions) over the recordings every backbone predicted out of fold.

    `specialists` maps a taxon specialist backbone to its classes: those columns come
    from the specialists alone (`member_class_weights`).
    """
    common = None
    for table in per_backbone.values():
        common = table.index if common is None else common.intersection(table.index)
    filenames = sorted(common) if common is not None else []
    if not filenames:
        return [], np.zeros((0, len(classes)), dtype=np.float32)
    names = list(per_backbone)
    preds = [per_backbone[b].loc[filenames, list(classes)].to_numpy(np.float32) for b in names]
    matrix = member_class_weights([weights[b] for b in names], [(specialists or {}).get(b) for b in names], classes)
    return filenames, combine_members(preds, matrix, method)


def fit_weights(
    per_backbone: Mapping[str, pd.DataFrame], targets_of, method: str, classes: Sequence[str],
    start: Mapping[str, float], rounds: int = 3, specialists: Mapping[str, Sequence[str] | None] | None = None,
) -> dict[str, float]:
    """Per-backbone weights maximising the ensemble's OOF macro ROC-AUC (coordinate search).

    Each pass tries every backbone's weight times each factor of `WEIGHT_GRID`,
    keeping a change only when the score rises. `targets_of(filenames)` gives
    the binary targets.
    """
    weights = {b: float(start.get(b, 1.0)) for b in per_backbone}
    if len(weights) < 2:
        return weights

    def covers_every_class(w: Mapping[str, float]) -> bool:
        """Some backbone with a positive weight predicts every class (a weight of 0 can leave a
        class to specialists only, or to no member)."""
        covered: set[str] = set()
        for backbone, weight in w.items():
            if weight > 0:
                subset = (specialists or {}).get(backbone)
                covered.update(classes if subset is None else (str(label) for label in subset))
        return covered >= {str(label) for label in classes}

    def score(w: Mapping[str, float]) -> float:
        if not covers_every_class(w):
            return -1.0
        filenames, preds = ensemble_oof(per_backbone, w, method, classes, specialists)
        value = macro_roc_auc(targets_of(filenames), preds) if filenames else None
        return -1.0 if value is None else float(value)

    best = score(weights)
    for _ in range(rounds):
        improved = False
        for backbone, factor in itertools.product(list(weights), WEIGHT_GRID):
            trial = {**weights, backbone: weights[backbone] * factor}
            value = score(trial)
            if value > best + 1e-9:
                weights, best, improved = trial, value, True
        if not improved:
            break
    return weights


def build_ensemble(
    members: Sequence[Mapping[str, Any]],
    oof_tables: Mapping[str, pd.DataFrame],
    index: pd.DataFrame,
    classes: Sequence[str],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The ensemble definition: members with weights and OOF scores, and the ensemble's OOF score.

    `members` carry name, backbone, fold, checkpoint. `oof_tables` maps a
    member name to its OOF predictions (filename, fold, classes...). A
    recording's ensemble OOF prediction combines, per backbone, the member that
    predicted it out of fold (`ensemble_oof`). Member weights are the
    backbone's weight divided over its folds, normalised to sum to 1.
    """
    classes = list(classes)
    method = settings.get("method", "mean")
    config_weights = settings.get("weights") or {}
    unknown = set(config_weights) - {m["backbone"] for m in members}
    if unknown:
        raise ValueError(f"ensemble.weights names backbones {sorted(unknown)} that are not trained; "
                         f"trained: {sorted({m['backbone'] for m in members})}")
    backbone_weights = {m["backbone"]: float(config_weights.get(m["backbone"], 1.0)) for m in members}

    def targets_for(filenames):
        return targets_of(index, filenames, classes)

    per_backbone = backbone_oof(members, oof_tables, classes)
    specialists = {m["backbone"]: m.get("specialist_classes") for m in members}
    if settings.get("fit_weights") and per_backbone:
        fitted = fit_weights(per_backbone, targets_for, method, classes, backbone_weights,
                             specialists=specialists)
        backbone_weights.update(fitted)
        log.info("fitted backbone weights on OOF: %s", fitted)
    if sum(backbone_weights.values()) <= 0:
        raise ValueError(f"ensemble weights are all zero: {backbone_weights}")
    ensemble_auc = None
    if per_backbone:
        filenames, preds = ensemble_oof(
            per_backbone, {b: backbone_weights[b] for b in per_backbone}, method, classes, specialists)
        if filenames:
            ensemble_auc = macro_roc_auc(targets_for(filenames), preds)
    per_fold = {b: sum(1 for m in members if m["backbone"] == b) for b in backbone_weights}
    definition_members = []
    for member in members:
        table = oof_tables[member["name"]]
        scored = member.get("specialist_classes") or classes  # a specialist is scored on its classes
        score = (macro_roc_auc(targets_of(index, table["filename"], scored), table[scored].to_numpy())
                 if len(table) else None)
        weight = backbone_weights[member["backbone"]] / per_fold[member["backbone"]]
        definition_members.append({**member, "weight": weight, "oof_auc": score})
    total = sum(m["weight"] for m in definition_members) or 1.0
    for m in definition_members:
        m["weight"] = m["weight"] / total
    return {
        "combine": method,
        "classes": classes,
        "members": definition_members,
        "backbone_weights": backbone_weights,
        "oof_auc": ensemble_auc,
    }


def soundscape_predictions(
    tables: Sequence[pd.DataFrame],
    weights: Sequence[float],
    method: str,
    classes: Sequence[str],
    postprocess: Mapping[str, Any] | None = None,
    member_classes: Sequence[Sequence[str] | None] | None = None,
) -> pd.DataFrame:
    """The ensemble's predictions of the train_soundscapes windows, as the submission makes them.

    `tables` are the members' ``soundscape_preds.parquet`` (row_id, soundscape,
    end_s, classes...), matched by row_id; they are combined over all windows
    (`combine_members`: ranks are taken over every window together), then each
    soundscape's windows, in time order, get the post-processing.
    """
    classes = list(classes)
    base = tables[0][["row_id", "soundscape", "end_s"]].reset_index(drop=True)
    base["row_id"] = base["row_id"].astype(str)
    members = []
    for table in tables:
        by_row = table.assign(row_id=table["row_id"].astype(str)).set_index("row_id")
        members.append(by_row.loc[base["row_id"], classes].to_numpy(np.float64))
    matrix = member_class_weights(list(weights), list(member_classes or [None] * len(tables)), classes)
    probs = combine_members(members, matrix, method)
    if postprocess:
        probs = pool_sonotypes(probs, classes, postprocess)
        order = np.lexsort((base["end_s"].to_numpy(), base["soundscape"].astype(str).to_numpy()))
        base, probs = base.iloc[order].reset_index(drop=True), probs[order]
        blocks = [postprocess_soundscape(probs[rows], postprocess)
                  for rows in base.groupby("soundscape", sort=False).indices.values()]
        probs = np.concatenate(blocks) if blocks else probs
    return pd.concat([base, pd.DataFrame(probs, columns=classes)], axis=1)

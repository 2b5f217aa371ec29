"""Ensemble: the final round's models across folds and backbones.

Prediction averaging with weights from config (uniform by default); the OOF
score of each member and of the ensemble are computed with the one metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .metrics import macro_roc_auc


def oof_targets(index: pd.DataFrame, filenames: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Binary targets (primary and secondary labels) for `filenames`, from the mel index."""
    position = {c: k for k, c in enumerate(classes)}
    by_name = index.set_index("filename")
    targets = np.zeros((len(filenames), len(classes)), dtype=np.float32)
    for row, name in enumerate(filenames):
        record = by_name.loc[name]
        targets[row, position[record["primary_label"]]] = 1.0
        for label in record["secondary_labels"]:
            if label in position:
                targets[row, position[label]] = 1.0
    return targets


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
    recording's ensemble OOF prediction is the weighted mean over the members
    that predicted it out of fold (one per backbone).
    """
    classes = list(classes)
    weights = settings.get("weights") or {}
    definition_members = []
    all_oof = []
    for member in members:
        table = oof_tables[member["name"]]
        weight = float(weights.get(member["backbone"], 1.0))
        score = None
        if len(table):
            score = macro_roc_auc(oof_targets(index, table["filename"], classes), table[classes].to_numpy())
        definition_members.append({**member, "weight": weight, "oof_auc": score})
        if len(table):
            part = table[["filename", *classes]].copy()
            part[classes] = part[classes].to_numpy() * weight
            part["weight"] = weight
            all_oof.append(part)
    ensemble_auc = None
    if all_oof:
        stacked = pd.concat(all_oof, ignore_index=True)
        summed = stacked.groupby("filename", sort=True)[[*classes, "weight"]].sum()
        preds = summed[classes].to_numpy() / summed[["weight"]].to_numpy()
        ensemble_auc = macro_roc_auc(oof_targets(index, summed.index, classes), preds)
    total = sum(m["weight"] for m in definition_members) or 1.0
    for m in definition_members:
        m["weight"] = m["weight"] / total
    return {
        "method": settings.get("method", "mean"),
        "classes": classes,
        "members": definition_members,
        "oof_auc": ensemble_auc,
    }


def ensemble_stage(
    checkpoint_paths: Sequence[str],
    oof_paths: Sequence[str],
    members: Sequence[Mapping[str, Any]],
    index_path: str,
    taxonomy_csv: str,
    mel: Mapping[str, Any],
    out_ensemble: str,
    out_manifest: str,
    settings: Mapping[str, Any],
    tag: str,
    upstream: Mapping[str, Any],
) -> dict:
    """The ensemble stage: the definition file (members, weights, mel settings, scores)."""
    from .catalog import read_taxonomy
    from .io import write_json
    from .manifest import StageManifest

    manifest = StageManifest("ensemble", tag, settings, upstream, [*oof_paths])
    classes = read_taxonomy(taxonomy_csv)
    index = pd.read_parquet(index_path)
    full_members = [
        {**member, "checkpoint": checkpoint}
        for member, checkpoint in zip(members, checkpoint_paths, strict=True)
    ]
    oof_tables = {
        member["name"]: pd.read_parquet(path) for member, path in zip(members, oof_paths, strict=True)
    }
    definition = build_ensemble(full_members, oof_tables, index, classes, settings)
    definition["mel"] = {k: mel[k] for k in ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db")}
    definition["window_seconds"] = mel["window_seconds"]
    write_json(out_ensemble, definition)
    manifest.headline.update(
        {
            "members": len(full_members),
            "oof_auc": definition["oof_auc"],
            "member_oof_auc": {m["name"]: m["oof_auc"] for m in definition["members"]},
        }
    )
    manifest.write(out_manifest)
    return definition

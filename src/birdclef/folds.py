"""Folds: a stratified, grouped k-fold table.

Stratified on primary label; grouped so that one recording (or any larger group
named by `group_column`, e.g. author) never straddles folds. Classes with fewer
groups than folds always stay in training (fold -1). Recordings the mel index
marks `pretrain_only` (data.extra_roots) get fold -2: no fold trains or
validates on them; only the pretrain stage reads them.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from birdclef.common.io import write_parquet
from birdclef.common.labels import PRETRAIN_ONLY_FOLD
from birdclef.common.manifest import StageManifest

log = logging.getLogger(__name__)

ALWAYS_TRAIN = -1
PRETRAIN_ONLY = PRETRAIN_ONLY_FOLD


def make_folds(
    index: pd.DataFrame, n_folds: int, seed: int, group_column: str = "filename"
) -> pd.DataFrame:
    """Assign every recording of `index` to a fold; returns filename, primary_label, group, fold."""
    if n_folds < 2:
        raise ValueError(f"folds.n_folds must be at least 2, got {n_folds}")
    if group_column not in index.columns:
        raise ValueError(
            f"folds.group_column {group_column!r} is not a column of the mel index "
            f"(available: {list(index.columns)})"
        )
    table = pd.DataFrame(
        {
            "filename": index["filename"].astype(str).to_numpy(),
            "primary_label": index["primary_label"].astype(str).to_numpy(),
            "group": index[group_column].astype(str).fillna("").to_numpy(),
        }
    )
    table["fold"] = ALWAYS_TRAIN
    pretrain = (
        index["pretrain_only"].astype(bool).to_numpy()
        if "pretrain_only" in index.columns
        else np.zeros(len(table), dtype=bool)
    )
    table.loc[pretrain, "fold"] = PRETRAIN_ONLY
    groups_per_class = table[~pretrain].groupby("primary_label")["group"].nunique()
    rare = set(groups_per_class.index[groups_per_class < n_folds])
    splittable = table.index[~table["primary_label"].isin(rare) & ~pretrain]
    if len(rare):
        log.info("%d classes with fewer than %d groups stay in training: %s", len(rare), n_folds, sorted(rare))
    if len(splittable):
        part = table.loc[splittable]
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = np.full(len(part), ALWAYS_TRAIN, dtype=np.int64)
        for fold, (_, valid) in enumerate(splitter.split(part, part["primary_label"], part["group"])):
            folds[valid] = fold
        table.loc[splittable, "fold"] = folds
    table["fold"] = table["fold"].astype(np.int64)
    return table


def fold_summary(folds: pd.DataFrame) -> dict:
    """Recordings per fold and classes always in training, for the manifest."""
    return {
        "recordings_per_fold": {str(k): int(v) for k, v in folds["fold"].value_counts().sort_index().items()},
        "always_train_classes": sorted(folds.loc[folds["fold"] == ALWAYS_TRAIN, "primary_label"].unique()),
        **(
            {"pretrain_only_classes": int(folds.loc[folds["fold"] == PRETRAIN_ONLY, "primary_label"].nunique())}
            if (folds["fold"] == PRETRAIN_ONLY).any()
            else {}
        ),
    }


def folds_stage(index_path: str, out_folds: str, out_manifest: str, settings: dict, tag: str, upstream: dict) -> dict:
    """The folds stage: fold table from the mel index, and its manifest."""
    manifest = StageManifest("folds", tag, settings, upstream, [index_path])
    index = pd.read_parquet(index_path)
    folds = make_folds(index, settings["n_folds"], settings["seed"], settings.get("group_column", "filename"))
    write_parquet(out_folds, folds)
    manifest.headline.update(fold_summary(folds))
    manifest.write(out_manifest)
    return manifest.headline

"""Ensemble: the final round's models across folds and backbones.

Members are combined by the weighted mean of their probabilities or of their
per-class ranks (`birdclef.runtime.postprocess.combine_members`); weights are equal,
per backbone from config, or fitted on the out-of-fold predictions. With
``soup``, each (backbone, fold) member is first replaced by the greedy soup of
that fold's checkpoints over all rounds (`birdclef.soup`). Each member's OOF
score and the ensemble's are computed with the one metric; the definition
also carries the submission's post-processing settings.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.labels import targets_of
from birdclef.common.metrics import macro_roc_auc
from birdclef.runtime.features import MEL_KEYS
from birdclef.runtime.features import check_mel_groups as check_group_settings
from birdclef.runtime.postprocess import (
    combine_members,
    postprocess_settings,
    postprocess_soundscape,
)
from birdclef.soundscapes import soundscape_score

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
    per_backbone: Mapping[str, pd.DataFrame], weights: Mapping[str, float], method: str, classes: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """(filenames, combined predictions) over the recordings every backbone predicted out of fold."""
    common = None
    for table in per_backbone.values():
        common = table.index if common is None else common.intersection(table.index)
    filenames = sorted(common) if common is not None else []
    if not filenames:
        return [], np.zeros((0, len(classes)), dtype=np.float32)
    names = list(per_backbone)
    preds = [per_backbone[b].loc[filenames, list(classes)].to_numpy(np.float32) for b in names]
    return filenames, combine_members(preds, [weights[b] for b in names], method)


def fit_weights(
    per_backbone: Mapping[str, pd.DataFrame], targets_of, method: str, classes: Sequence[str],
    start: Mapping[str, float], rounds: int = 3,
) -> dict[str, float]:
    """Per-backbone weights maximising the ensemble's OOF macro ROC-AUC (coordinate search).

    Each pass tries every backbone's weight times each factor of `WEIGHT_GRID`,
    keeping a change only when the score rises. `targets_of(filenames)` gives
    the binary targets.
    """
    weights = {b: float(start.get(b, 1.0)) for b in per_backbone}
    if len(weights) < 2:
        return weights

    def score(w: Mapping[str, float]) -> float:
        if sum(w.values()) <= 0:
            return -1.0
        filenames, preds = ensemble_oof(per_backbone, w, method, classes)
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
    if settings.get("fit_weights") and per_backbone:
        fitted = fit_weights(per_backbone, targets_for, method, classes, backbone_weights)
        backbone_weights.update(fitted)
        log.info("fitted backbone weights on OOF: %s", fitted)
    if sum(backbone_weights.values()) <= 0:
        raise ValueError(f"ensemble weights are all zero: {backbone_weights}")
    ensemble_auc = None
    if per_backbone:
        filenames, preds = ensemble_oof(
            per_backbone, {b: backbone_weights[b] for b in per_backbone}, method, classes)
        if filenames:
            ensemble_auc = macro_roc_auc(targets_for(filenames), preds)
    per_fold = {b: sum(1 for m in members if m["backbone"] == b) for b in backbone_weights}
    definition_members = []
    for member in members:
        table = oof_tables[member["name"]]
        score = macro_roc_auc(targets_for(table["filename"]), table[classes].to_numpy()) if len(table) else None
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
    probs = combine_members(members, list(weights), method)
    if postprocess:
        order = np.lexsort((base["end_s"].to_numpy(), base["soundscape"].astype(str).to_numpy()))
        base, probs = base.iloc[order].reset_index(drop=True), probs[order]
        blocks = [postprocess_soundscape(probs[rows], postprocess)
                  for rows in base.groupby("soundscape", sort=False).indices.values()]
        probs = np.concatenate(blocks) if blocks else probs
    return pd.concat([base, pd.DataFrame(probs, columns=classes)], axis=1)


def ensemble_stage(
    members: Sequence[Mapping[str, Any]],
    index_paths: Sequence[str],
    taxonomy_csv: str,
    mel_groups: Sequence[Mapping[str, Any]],
    out_ensemble: str,
    out_soups: str,
    out_manifest: str,
    settings: Mapping[str, Any],
    tag: str,
    upstream: Mapping[str, Any],
    mels_paths: Sequence[str] | None = None,
    folds_path: str | None = None,
    train_settings: Mapping[str, Any] | None = None,
    threads: int = 1,
    labelled_path: str | None = None,
) -> dict:
    """The ensemble stage: the definition file (members, weights, mel groups, post-processing, scores).

    `members`: name, backbone, fold, ``mel_group`` (an index into
    `mel_groups`) and ingredients (``best.pt`` paths; the last is the final
    round's, and its ``oof.parquet`` lies beside it). `mel_groups`: the mel
    settings (with their cache ``tag``) the members were trained on, all with
    the same ``window_seconds``; `index_paths` and `mels_paths` are each
    group's training mel cache, in the same order. Without soup each member is
    its final-round checkpoint. With ``settings['soup']`` every member becomes
    the greedy soup of its ingredients, scored on its fold's recordings in its
    own group's cache (written to `out_soups`; needs `mels_paths`,
    `folds_path` and `train_settings`). `out_soups` is always created (empty
    without soup). With `labelled_path` (the soundscape_labels table) the
    ensemble's predictions of the held-out labelled soundscape windows are
    scored (``soundscape_auc``), from each member's final-round
    ``soundscape_preds.parquet`` (soups are not re-run on the soundscapes).
    """
    from birdclef.catalog import read_taxonomy
    from birdclef.common.io import atomic_dir, write_json
    from birdclef.common.manifest import StageManifest

    inputs = [str(Path(i).parent / "oof.parquet") for m in members for i in m["ingredients"]]
    manifest = StageManifest("ensemble", tag, settings, upstream, inputs)
    classes = read_taxonomy(taxonomy_csv)
    groups = [dict(group) for group in mel_groups]
    check_mel_groups(groups, members)
    if len(index_paths) != len(groups):
        raise ValueError(f"{len(index_paths)} mel cache indexes for {len(groups)} mel groups")
    index = pd.read_parquet(index_paths[0])  # labels are per recording: the same in every group's index
    full_members: list[dict[str, Any]] = []
    oof_tables: dict[str, pd.DataFrame] = {}
    soups: dict[str, Any] = {}
    with atomic_dir(out_soups) as soup_dir:
        if settings.get("soup"):
            import torch

            from birdclef.runtime.features import frames_per_second
            from birdclef.runtime.features import window_frames as mel_window_frames
            from birdclef.soup import fold_validation, greedy_soup
            from birdclef.train import settings_from_config

            if mels_paths is None or folds_path is None or train_settings is None:
                raise ValueError("ensemble.soup needs the mel caches, the folds and the train settings")
            torch.set_num_threads(max(1, int(threads)))
            caches = [np.load(path, mmap_mode="r") for path in mels_paths]
            indexes = [index, *(pd.read_parquet(path) for path in index_paths[1:])]
            folds = pd.read_parquet(folds_path)
            tsettings = settings_from_config(train_settings)
        for member in members:
            ingredients = list(member["ingredients"])
            if not ingredients:
                raise ValueError(f"ensemble member {member['name']!r} has no checkpoint")
            final = ingredients[-1]
            entry = {k: v for k, v in member.items() if k != "ingredients"}
            if settings.get("soup"):
                group = int(member["mel_group"])
                mel = groups[group]
                validation = fold_validation(caches[group], indexes[group], folds, int(member["fold"]), classes,
                                             tsettings, mel_window_frames(mel),
                                             frames_per_second(mel))
                name = f"{member['backbone']}-fold{member['fold']}.pt"
                result = greedy_soup(ingredients, validation, tsettings, str(Path(soup_dir) / name))
                checkpoint = result["checkpoint"]
                if Path(checkpoint).parent == Path(soup_dir):
                    checkpoint = str(Path(out_soups) / name)
                entry.update(checkpoint=checkpoint, soup=result["ingredients"])
                soups[member["name"]] = {k: v for k, v in result.items() if k != "oof"}
                oof = pd.DataFrame({"filename": validation.table["filename"].astype(str).to_numpy(),
                                    "fold": validation.table["fold"].to_numpy(np.int64)})
                oof_tables[member["name"]] = pd.concat(
                    [oof, pd.DataFrame(result["oof"], columns=classes)], axis=1)
            else:
                entry["checkpoint"] = final
                oof_tables[member["name"]] = pd.read_parquet(Path(final).parent / "oof.parquet")
            full_members.append(entry)
        definition = build_ensemble(full_members, oof_tables, index, classes, settings)
    definition["mel_groups"] = [{k: group[k] for k in ("tag", *MEL_KEYS) if k in group} for group in groups]
    window_seconds = groups[0]["window_seconds"]
    definition["window_seconds"] = window_seconds
    definition["postprocess"] = postprocess_settings(
        {"postprocess": settings.get("postprocess") or {}, "window_seconds": window_seconds})
    soundscape_auc = scored = None
    if labelled_path:
        tables = [pd.read_parquet(Path(m["ingredients"][-1]).parent / "soundscape_preds.parquet")
                  for m in members]
        predictions = soundscape_predictions(
            tables, [m["weight"] for m in definition["members"]], definition["combine"], classes,
            definition["postprocess"])
        soundscape_auc, scored = soundscape_score(predictions, pd.read_parquet(labelled_path), classes)
        log.info("ensemble: OOF AUC %s, labelled-soundscape AUC %s (%d held-out windows)",
                 definition["oof_auc"], soundscape_auc, scored)
    definition["soundscape_auc"] = soundscape_auc
    write_json(out_ensemble, definition)
    manifest.headline.update(
        {
            "members": len(full_members),
            "oof_auc": definition["oof_auc"],
            "soundscape_auc": soundscape_auc,
            "soundscape_windows_scored": scored,
            "combine": definition["combine"],
            "backbone_weights": definition["backbone_weights"],
            "member_oof_auc": {m["name"]: m["oof_auc"] for m in definition["members"]},
        }
    )
    if soups:
        manifest.data["soups"] = soups
    manifest.write(out_manifest)
    return definition

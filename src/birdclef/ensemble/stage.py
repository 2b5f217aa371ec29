"""The ensemble stage: read the members' OOF tables (or soup them), weight, score, write ``ensemble.json``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from birdclef.catalog import read_taxonomy, specialist_classes
from birdclef.common.io import atomic_dir, write_json
from birdclef.common.manifest import StageManifest
from birdclef.ensemble.definition import build_ensemble, check_mel_groups, soundscape_predictions
from birdclef.ensemble.soup import fold_validation, greedy_soup
from birdclef.runtime.features import MEL_KEYS, frames_per_second, window_frames
from birdclef.runtime.postprocess import postprocess_settings
from birdclef.soundscapes import soundscape_score
from birdclef.train.model import checkpoint_context
from birdclef.train.settings import settings_from_config

log = logging.getLogger(__name__)


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
    inputs = [str(Path(i).parent / "oof.parquet") for m in members for i in m["ingredients"]]
    manifest = StageManifest("ensemble", tag, settings, upstream, inputs)
    classes = read_taxonomy(taxonomy_csv)
    members = _with_specialist_classes(members, taxonomy_csv)
    groups = [dict(group) for group in mel_groups]
    check_mel_groups(groups, members)
    if len(index_paths) != len(groups):
        raise ValueError(f"{len(index_paths)} mel cache indexes for {len(groups)} mel groups")
    index = pd.read_parquet(index_paths[0])  # labels are per recording: the same in every group's index
    for member in members:
        if not list(member["ingredients"]):
            raise ValueError(f"ensemble member {member['name']!r} has no checkpoint")
    soups: dict[str, Any] = {}
    with atomic_dir(out_soups) as soup_dir:
        if settings.get("soup"):
            if mels_paths is None or folds_path is None or train_settings is None:
                raise ValueError("ensemble.soup needs the mel caches, the folds and the train settings")
            torch.set_num_threads(max(1, int(threads)))
            caches = [np.load(path, mmap_mode="r") for path in mels_paths]
            indexes = [index, *(pd.read_parquet(path) for path in index_paths[1:])]
            full_members, oof_tables, soups = _soup_members(
                members, groups, caches, indexes, pd.read_parquet(folds_path), classes,
                settings_from_config(train_settings), soup_dir, out_soups,
            )
        else:
            full_members, oof_tables = _final_members(members)
        definition = build_ensemble(full_members, oof_tables, index, classes, settings)
    definition["mel_groups"] = [{k: group[k] for k in ("tag", *MEL_KEYS) if k in group} for group in groups]
    window_seconds = groups[0]["window_seconds"]
    definition["window_seconds"] = window_seconds
    definition["postprocess"] = postprocess_settings(
        {"postprocess": settings.get("postprocess") or {}, "window_seconds": window_seconds})
    soundscape_auc, scored = _soundscape_auc(members, definition, classes, labelled_path)
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


def _with_specialist_classes(members: Sequence[Mapping[str, Any]], taxonomy_csv: str) -> list[dict[str, Any]]:
    """The members, each taxon specialist (``specialist``: its backbone entry's filter) with the
    classes that filter selects in taxonomy.csv (``specialist_classes``, taxonomy order)."""
    out = []
    for member in members:
        entry = dict(member)
        labels = specialist_classes(taxonomy_csv, member.get("specialist"),
                                    f"train.backbones {member['backbone']!r} specialist")
        if labels is not None:
            entry["specialist_classes"] = labels
        out.append(entry)
    return out


def _final_members(
    members: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, pd.DataFrame]]:
    """Without soup: each member is its final-round checkpoint, with that training's OOF table."""
    full_members, oof_tables = [], {}
    for member in members:
        final = list(member["ingredients"])[-1]
        entry = {k: v for k, v in member.items() if k != "ingredients"}
        entry["checkpoint"] = final
        oof_tables[member["name"]] = pd.read_parquet(Path(final).parent / "oof.parquet")
        full_members.append(entry)
    return full_members, oof_tables


def _soup_members(
    members: Sequence[Mapping[str, Any]],
    groups: Sequence[Mapping[str, Any]],
    caches: Sequence[np.ndarray],
    indexes: Sequence[pd.DataFrame],
    folds: pd.DataFrame,
    classes: Sequence[str],
    tsettings: Any,
    soup_dir: str,
    out_soups: str,
) -> tuple[list[dict[str, Any]], dict[str, pd.DataFrame], dict[str, Any]]:
    """With soup: each member becomes the greedy soup of its ingredients, scored on its fold's
    recordings in its own group's cache; returns the members, their OOF tables and the soups."""
    full_members, oof_tables, soups = [], {}, {}
    for member in members:
        ingredients = list(member["ingredients"])
        entry = {k: v for k, v in member.items() if k != "ingredients"}
        group = int(member["mel_group"])
        mel = groups[group]
        validation = fold_validation(caches[group], indexes[group], folds, int(member["fold"]), classes,
                                     tsettings, window_frames(mel), frames_per_second(mel),
                                     checkpoint_context(ingredients[0]))
        name = f"{member['backbone']}-fold{member['fold']}.pt"
        subset = member.get("specialist_classes")
        columns = None if subset is None else np.array([list(classes).index(label) for label in subset])
        result = greedy_soup(ingredients, validation, tsettings, str(Path(soup_dir) / name), columns)
        checkpoint = result["checkpoint"]
        if Path(checkpoint).parent == Path(soup_dir):
            checkpoint = str(Path(out_soups) / name)
        entry.update(checkpoint=checkpoint, soup=result["ingredients"])
        soups[member["name"]] = {k: v for k, v in result.items() if k != "oof"}
        oof = pd.DataFrame({"filename": validation.table["filename"].astype(str).to_numpy(),
                            "fold": validation.table["fold"].to_numpy(np.int64)})
        oof_tables[member["name"]] = pd.concat([oof, pd.DataFrame(result["oof"], columns=classes)], axis=1)
        full_members.append(entry)
    return full_members, oof_tables, soups


def _soundscape_auc(
    members: Sequence[Mapping[str, Any]],
    definition: Mapping[str, Any],
    classes: Sequence[str],
    labelled_path: str | None,
) -> tuple[float | None, int | None]:
    """The ensemble's held-out labelled-soundscape AUC and the windows scored (None without labels),
    from each member's final-round ``soundscape_preds.parquet``."""
    if not labelled_path:
        return None, None
    tables = [pd.read_parquet(Path(m["ingredients"][-1]).parent / "soundscape_preds.parquet")
              for m in members]
    predictions = soundscape_predictions(
        tables, [m["weight"] for m in definition["members"]], definition["combine"], classes,
        definition["postprocess"], [m.get("specialist_classes") for m in definition["members"]])
    soundscape_auc, scored = soundscape_score(predictions, pd.read_parquet(labelled_path), classes)
    log.info("ensemble: OOF AUC %s, labelled-soundscape AUC %s (%d held-out windows)",
             definition["oof_auc"], soundscape_auc, scored)
    return soundscape_auc, scored

"""Greedy model soup: weight averaging of same-architecture checkpoints of one fold.

Ingredients are the best checkpoints of one (backbone, fold) from every
pseudo-label round. All of them start from the same initial weights (training
seeds the model by ``train.seed + fold``, whatever the round) and are scored on
the same held-out recordings (the fold's validation set), so their average is
meaningful and its score is honest. Greedy soup (Wortsman et al., 2022): sort
the ingredients by their out-of-fold macro ROC-AUC, start from the best, and
add each next one to the uniform average only when the soup's OOF macro
ROC-AUC does not drop. BatchNorm running statistics are averaged like the
weights; integer buffers (batch counters) are taken from the first ingredient.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from birdclef.train.data import split_fold
from birdclef.train.model import build_model, save_checkpoint
from birdclef.train.settings import TrainSettings
from birdclef.train.validation import ValidationSet, validate, validation_set

log = logging.getLogger(__name__)


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of floating-point tensors; other tensors come from the first state."""
    if not states:
        raise ValueError("average_state_dicts needs at least one state dict")
    keys = list(states[0])
    for k, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"ingredient {k} has different parameters than ingredient 0: "
                             "a soup needs checkpoints of one architecture")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        first = states[0][key]
        if torch.is_floating_point(first):
            out[key] = torch.stack([s[key].float() for s in states]).mean(dim=0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def fold_validation(
    mels: np.ndarray,
    mel_index: pd.DataFrame,
    folds: pd.DataFrame,
    fold: int,
    classes: Sequence[str],
    settings: TrainSettings,
    window_frames: int,
    frames_per_second: float,
    context_windows: int = 1,
) -> ValidationSet:
    """The fold's validation windows and targets, exactly as `train.train_fold` scores them
    (for a model that joins `context_windows` windows)."""
    _, val = split_fold(mel_index, folds, fold)
    if val.empty:
        raise ValueError(f"fold {fold} has no validation recordings: a soup cannot be scored")
    return validation_set(mels, val, classes, settings, window_frames, frames_per_second, context_windows)


def score_state(
    spec: Mapping[str, Any], state: Mapping[str, torch.Tensor], validation: ValidationSet,
    settings: TrainSettings,
    columns: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """(OOF macro ROC-AUC, recording probabilities) of the weights `state` on the fold; a taxon
    specialist (`columns`: its classes' indices) is scored on its classes."""
    model = build_model({**spec, "pretrained": False, "checkpoint": None})
    model.load_state_dict(state)
    model.eval()
    probs, _, auc = validate(model, validation.windows, len(validation.table), validation.soft,
                             validation.binary, settings, torch.device("cpu"), None, False, columns)
    return (float("nan") if auc is None else float(auc)), probs


def greedy_soup(
    ingredient_paths: Sequence[str],
    validation: ValidationSet,
    settings: TrainSettings,
    out_checkpoint: str,
    columns: np.ndarray | None = None,
) -> dict[str, Any]:
    """Greedy soup of `ingredient_paths`; writes the soup to `out_checkpoint` when it has > 1 ingredient.

    Returns a dict: checkpoint (the soup's path, or the single best ingredient's),
    ingredients (kept, in order), scores (each ingredient alone), tried (each
    candidate soup: the ingredient added, its OOF macro ROC-AUC, kept or not),
    oof_auc (the result's), oof (recording probabilities, (n_val, K)). `columns` (a taxon
    specialist's class indices) restricts every score to those classes.
    """
    if not ingredient_paths:
        raise ValueError("a soup needs at least one ingredient")
    payloads = [torch.load(p, map_location="cpu", weights_only=False) for p in ingredient_paths]
    spec = dict(payloads[0]["spec"])
    for path, payload in zip(ingredient_paths, payloads, strict=True):
        if payload["spec"]["backbone"] != spec["backbone"]:
            raise ValueError(f"soup ingredient {path} is a {payload['spec']['backbone']}, "
                             f"the first is a {spec['backbone']}: one architecture per soup")
    scored = []
    for path, payload in zip(ingredient_paths, payloads, strict=True):
        auc, probs = score_state(spec, payload["state_dict"], validation, settings, columns)
        scored.append((auc, path, payload, probs))
        log.info("soup ingredient %s: OOF AUC %.4f", path, auc)
    scored.sort(key=lambda item: -np.nan_to_num(item[0], nan=-1.0))
    best_auc, best_path, best_payload, best_probs = scored[0]
    kept = [(best_path, best_payload)]
    tried = []
    for _, path, payload, _ in scored[1:]:
        state = average_state_dicts([p["state_dict"] for _, p in kept] + [payload["state_dict"]])
        soup_auc, soup_probs = score_state(spec, state, validation, settings, columns)
        accepted = soup_auc >= best_auc
        log.info("soup + %s: OOF AUC %.4f (%s)", path, soup_auc, "kept" if accepted else "dropped")
        tried.append({"added": path, "oof_auc": _finite(soup_auc), "kept": bool(accepted)})
        if accepted:
            kept.append((path, payload))
            best_auc, best_probs = soup_auc, soup_probs
    result = {
        "ingredients": [p for p, _ in kept],
        "scores": {path: _finite(auc) for auc, path, _, _ in scored},
        "tried": tried,
        "oof_auc": _finite(best_auc),
        "oof": best_probs,
    }
    if len(kept) == 1:
        result["checkpoint"] = kept[0][0]
        return result
    state = average_state_dicts([p["state_dict"] for _, p in kept])
    model = build_model({**spec, "pretrained": False, "checkpoint": None})
    model.load_state_dict(state)
    extra = {k: v for k, v in best_payload.items() if k not in ("spec", "state_dict")}
    save_checkpoint(out_checkpoint, model, spec, **extra, soup=result["ingredients"])
    result["checkpoint"] = str(out_checkpoint)
    return result


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)

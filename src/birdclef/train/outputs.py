"""A fold's outputs from its best model: ``oof.parquet``, ``soundscape_preds.parquet`` and the metrics.

- ``oof.parquet``: ``filename``, ``fold``, then one probability column per class.
- ``soundscape_preds.parquet`` (when soundscape windows are given): ``row_id``,
  ``soundscape``, ``end_s``, then one probability column per class, then
  ``seen_in_training``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

from birdclef.common.io import write_parquet
from birdclef.runtime.features import chunk_positions
from birdclef.soundscapes import soundscape_score
from birdclef.train.fold_data import Batches, FoldData
from birdclef.train.loop import finite
from birdclef.train.model import load_model
from birdclef.train.run import FoldRun
from birdclef.train.validation import predict_windows, sigmoid, validate


def load_best(run: FoldRun) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of ``best.pt`` on the run's device, and the checkpoint's payload."""
    best_model, best_payload = load_model(run.best_path, map_location="cpu")
    best_model = best_model.to(run.dev)
    if run.dev.type == "cuda":
        best_model = best_model.to(memory_format=torch.channels_last)
    return best_model, best_payload


def write_oof(run: FoldRun, model: torch.nn.Module,
              data: FoldData) -> tuple[float | None, float | None]:
    """Write ``oof.parquet`` (the validation recordings' probabilities): (OOF AUC, validation loss)."""
    val_table = data.val_table
    oof = pd.DataFrame({"filename": val_table["filename"].astype(str).to_numpy(),
                        "fold": val_table["fold"].to_numpy(np.int64)})
    final_auc = final_val_loss = None
    if data.has_val:
        validation = data.validation
        probs, final_val_loss, final_auc = validate(model, validation.windows, len(val_table),
                                                    validation.soft, validation.binary,
                                                    run.settings, run.dev, run.amp_dtype,
                                                    run.progress, run.columns)
    else:
        probs = np.zeros((0, len(run.classes)), dtype=np.float32)
    oof = pd.concat([oof, pd.DataFrame(probs, columns=run.classes)], axis=1)
    write_parquet(run.out_dir / "oof.parquet", oof)
    return final_auc, final_val_loss


def write_soundscape_preds(run: FoldRun, model: torch.nn.Module, data: FoldData,
                           soundscape_mels: np.ndarray | None,
                           soundscape_index: pd.DataFrame | None,
                           seen_soundscapes: Iterable[str] | None,
                           labelled_windows: pd.DataFrame | None) -> tuple[float | None, int]:
    """Write ``soundscape_preds.parquet``: (labelled-soundscape AUC, windows scored)."""
    if soundscape_mels is None:
        return None, 0
    classes = run.classes
    if soundscape_index is None or len(soundscape_index) != len(soundscape_mels):
        raise ValueError("soundscape_index must have one row per soundscape window")
    # each soundscape's windows in whole chunks of the model's context (one window: as they are)
    positions, keep = chunk_positions(soundscape_index["soundscape"].astype(str).to_numpy(),
                                      run.context_windows)
    logits = predict_windows(model, lambda idx: soundscape_mels[positions[idx]],
                             len(positions), run.settings.batch_size * 2, run.dev,
                             run.amp_dtype, run.progress, desc="soundscapes")[keep]
    probs = sigmoid(logits) if len(logits) else np.zeros((0, len(classes)), np.float32)
    preds = soundscape_index[["row_id", "soundscape", "end_s"]].reset_index(drop=True)
    preds = pd.concat([preds, pd.DataFrame(probs, columns=classes)], axis=1)
    seen = set(seen_soundscapes or ())
    if data.n_labelled:
        seen |= set(labelled_windows.loc[labelled_windows["split"] == "train", "soundscape"]
                    .astype(str))
    preds["seen_in_training"] = preds["soundscape"].astype(str).isin(seen)
    write_parquet(run.out_dir / "soundscape_preds.parquet", preds)
    scored = classes if run.columns is None else [classes[i] for i in run.columns]
    return soundscape_score(preds, labelled_windows, scored)


def fold_metrics(run: FoldRun, data: FoldData, batches: Batches, history: list[dict[str, Any]],
                 best_epoch: int, oof: tuple[float | None, float | None],
                 soundscape: tuple[float | None, int], resumed_from: int) -> dict[str, Any]:
    """The metrics of the run (``metrics.json``); `oof`: (AUC, loss), `soundscape`: (AUC, windows)."""
    final_auc, final_val_loss = oof
    soundscape_auc, soundscape_windows = soundscape
    return {
        "backbone": run.backbone,
        "fold": int(run.fold),
        "epochs": history,
        "best_epoch": best_epoch,
        "oof_auc": finite(final_auc),
        "soundscape_auc": soundscape_auc,
        "soundscape_windows_scored": soundscape_windows,
        "val_loss": finite(final_val_loss),
        "device": str(run.dev),
        "amp": run.amp_name,
        "threads": int(run.threads),
        "loader_workers": batches.workers,
        "n_train": len(data.train_table),
        "n_val": len(data.val_table),
        "n_pseudo": data.n_pseudo,
        "n_labelled": data.n_labelled,
        # share of examples (and of classes) with a teacher target; None without distillation
        "teacher_coverage": data.teacher.coverage if data.teacher is not None else None,
        # self-distillation on the recordings: recordings with OOF soft labels, pseudo mass; else None
        "self_distill": data.self_distill,
        "steps_per_epoch": batches.steps_per_epoch,
        "resumed_from_epoch": resumed_from,
        "model_spec": run.model_spec,
        "settings": dataclasses.asdict(run.settings),
    }

"""Training of one (backbone, fold, round): `train_fold`, in named steps.

No Snakemake here: `train_fold` takes the cache, the folds, the class list and the
settings as arguments and writes everything into `out_dir`:

- ``last.pt``: model, optimizer, scheduler, grad-scaler, RNG states, history and
  the best epoch's weights, rewritten after every epoch. A rerun of a killed job
  with a compatible configuration and the same inputs continues after the last
  finished epoch and ends with the same ``best.pt`` as an uninterrupted run.
- ``best.pt``: the best epoch (highest OOF macro ROC-AUC; lowest training loss when
  there is no validation fold), written with `birdclef.train.model.save_checkpoint`, so
  `birdclef.train.model.load_model` reads it.
- ``oof.parquet``: ``filename``, ``fold``, then one probability column per class.
- ``soundscape_preds.parquet`` (when soundscape windows are given): ``row_id``,
  ``soundscape``, ``end_s``, then one probability column per class.
- ``metrics.json`` (the report's training-curve figure is drawn from it by
  ``rules/report.smk``; training draws nothing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.io import write_json
from birdclef.train.checkpoint import resume, resume_signature, save_best, save_last, state_copy
from birdclef.train.distill import TeacherCache
from birdclef.train.fold_data import Batches, FoldData, build_batches, check_inputs, fold_data
from birdclef.train.loop import Optimization, build_optimization, epoch_score, log_epoch, run_epoch
from birdclef.train.outputs import (
    fold_metrics,
    load_best,
    write_oof,
    write_soundscape_preds,
)
from birdclef.train.run import FoldRun, seed_and_device
from birdclef.train.settings import TrainSettings
from birdclef.train.wave_augment import WaveSources

log = logging.getLogger(__name__)


def _train_epochs(run: FoldRun, opt: Optimization, data: FoldData, batches: Batches,
                  signature: Mapping[str, Any], history: list[dict[str, Any]],
                  best: dict[str, Any] | None, start_epoch: int,
                  epoch_callback: Callable[[dict[str, Any]], None] | None,
                  best_state: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Epochs `start_epoch`.. of the run, each followed by its checkpoints; the best epoch.
    `best_state` is the best epoch's weights so far (from ``last.pt`` when resumed)."""
    for epoch in range(start_epoch, run.settings.epochs + 1):
        entry, train_loss, val_loss = run_epoch(run, opt, batches.sampler, batches.loader,
                                                data.validation, epoch)
        history.append(entry)
        score = epoch_score(entry, data.has_val, train_loss)
        improved = best is None or tuple(score) > tuple(best["score"])
        if improved:
            best = {"epoch": epoch, "score": list(score)}
            best_state = state_copy(opt.model)
            save_best(run, opt.model, epoch, history)
        save_last(run, opt, signature, epoch, history, best, best_state)
        log_epoch(run, entry, train_loss, val_loss, improved)
        if epoch_callback is not None:
            epoch_callback(entry)
    return best


def _ensure_best(run: FoldRun, opt: Optimization, history: list[dict[str, Any]],
                 best: dict[str, Any] | None) -> dict[str, Any] | None:
    """Save the last epoch as ``best.pt`` when that file is missing; the best epoch."""
    if not run.best_path.exists():
        # Only when best.pt was deleted and no later epoch beat the remembered best.
        log.warning("%s is missing; saving the last epoch as the best model", run.best_path)
        save_best(run, opt.model, history[-1]["epoch"], history)
        best = {"epoch": history[-1]["epoch"], "score": []}
    return best


def train_fold(
    mels: np.ndarray,
    mel_index: pd.DataFrame,
    folds: pd.DataFrame,
    fold: int,
    classes: Sequence[str],
    model_spec: Mapping[str, Any],
    settings: TrainSettings,
    window_frames: int,
    frames_per_second: float,
    out_dir: str | os.PathLike,
    threads: int = 2,
    device: str = "auto",
    soundscape_mels: np.ndarray | None = None,
    soundscape_index: pd.DataFrame | None = None,
    pseudo_mels: np.ndarray | None = None,
    pseudo_labels: np.ndarray | None = None,
    progress: bool = True,
    seen_soundscapes: Iterable[str] | None = None,
    epoch_callback: Callable[[dict[str, Any]], None] | None = None,
    labelled_windows: pd.DataFrame | None = None,
    teacher: TeacherCache | None = None,
    init_from: str | os.PathLike | None = None,
    specialist: tuple[Sequence[int], float] | None = None,
    recording_pseudo: pd.DataFrame | None = None,
    label_mass_cap: bool = False,
    wave: WaveSources | None = None,
    inputs_fingerprint: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train one fold of the SED model and write checkpoints, OOF and metrics to `out_dir`.

    Trains on recordings whose fold != `fold` (fold -1 rows always train) and
    validates on fold == `fold`; `fold=-1` trains on everything without validation.
    Resumes from `out_dir/last.pt` when it was written with the same model spec,
    settings (the epoch count aside), fold, classes, data sizes and `inputs_fingerprint`
    (the stage's input files, `birdclef.common.manifest.describe_file`), and rewrites a
    missing ``best.pt`` from the best weights kept in ``last.pt``. `epoch_callback`
    (optional) is called with each epoch's history entry after its checkpoints are
    written. `seen_soundscapes` names the soundscapes whose pseudo-labels this
    model trains on; their rows of ``soundscape_preds.parquet`` get
    ``seen_in_training`` True (out-of-fold pseudo-labelling skips them).
    `labelled_windows` (the soundscape_labels stage's table: row_id, split,
    one 0/1 column per class) are windows of `soundscape_mels` (matched by
    `soundscape_index` row_id): ``train`` rows are drawn into batches
    (``settings.labelled_ratio``, weight ``settings.labelled_weight``),
    ``validation`` rows score the best model (``soundscape_auc``).
    `teacher` (the teacher stage's artifact) is used when `settings` distil
    (`birdclef.train.distill`). `init_from` (the pretrain stage's ``best.pt``)
    initialises the backbone; the head starts fresh.
    `specialist` (a taxon specialist: the indices of its classes in `classes` and its
    upsampling factor) restricts the loss, the validation score and the logit
    distillation to those columns and samples recordings that carry one of them
    (primary or secondary label) `upsample` times as often; the model keeps one output
    per class, and the ensemble reads only the specialist's columns from it.
    `recording_pseudo` (self-distillation: filename and one column per class, the previous
    round's power-scaled OOF soft labels) turns each training recording's target into
    `birdclef.pseudo.self_distill_targets` of its true labels, capped with `label_mass_cap`.
    `wave` (the recordings' audio, noise and speech) is used when
    ``settings.wave_augment.prob`` is above 0 (`birdclef.train.wave_augment`).
    Returns the metrics dict also written to `out_dir/metrics.json`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = [str(c) for c in classes]
    model_spec = dict(model_spec)
    pseudo_mels, pseudo_labels = check_inputs(mels, classes, model_spec, window_frames,
                                              soundscape_mels, pseudo_mels, pseudo_labels)

    # Seeds, threads, device, precision.
    base_seed, dev, amp_dtype = seed_and_device(settings, fold, threads, device)
    columns, upsample = specialist_columns(specialist, len(classes))
    run = FoldRun(fold, classes, model_spec, settings, window_frames, frames_per_second, out_dir,
                  base_seed, dev, amp_dtype, threads, progress, columns, upsample)

    # Split, sampling, model, optimizer, schedule.
    if settings.distills and teacher is None:
        raise ValueError("train.distill weights are above 0 but no teacher artifact was given: "
                         "expected teacher.enabled: true (the workflow passes its outputs)")
    if settings.wave_augment.prob > 0 and wave is None:
        raise ValueError("train.wave_augment.prob is above 0 but no audio sources were given: expected "
                         "the workflow's wave_catalog input (birdclef.train.wave_augment.load_wave_sources)")
    data = fold_data(run, mels, mel_index, folds, soundscape_mels, soundscape_index, pseudo_mels,
                     pseudo_labels, labelled_windows, teacher, recording_pseudo, label_mass_cap, wave)
    batches = build_batches(run, data)
    opt = build_optimization(model_spec, settings, dev, amp_dtype, batches.steps_per_epoch,
                             *((data.teacher.embedding_dim, distilled_classes(data.teacher.class_mask, columns))
                               if data.teacher else (None, None)),
                             init_from=None if init_from is None else str(init_from))

    # Resume, train.
    signature = resume_signature(model_spec, settings, fold, classes, window_frames,
                                 frames_per_second, len(data.train_table), len(data.val_table),
                                 data.n_pseudo, data.n_labelled, inputs=inputs_fingerprint)
    if columns is not None:  # a specialist resumes only a specialist run of the same classes
        signature["specialist"] = {"columns": columns.tolist(), "upsample": upsample}
    history, best, start_epoch, best_state = resume(run, opt, signature)
    resumed_from = start_epoch - 1
    log.info("training %s fold %d on %s (amp %s): %d train recordings, %d validation, "
             "%d pseudo windows, %d labelled soundscape windows, %d steps per epoch, "
             "%d loader workers", model_spec["backbone"], fold, dev, run.amp_name,
             len(data.train_table), len(data.val_table), data.n_pseudo, data.n_labelled,
             batches.steps_per_epoch, batches.workers)
    best = _train_epochs(run, opt, data, batches, signature, history, best, start_epoch,
                         epoch_callback, best_state)
    best = _ensure_best(run, opt, history, best)

    # Final outputs from the best model.
    best_model, best_payload = load_best(run)
    best_epoch = int(best_payload.get("epoch", best["epoch"]))
    final_auc, final_val_loss = write_oof(run, best_model, data)
    soundscape_auc, soundscape_windows = write_soundscape_preds(
        run, best_model, data, soundscape_mels, soundscape_index, seen_soundscapes,
        labelled_windows)
    metrics = fold_metrics(run, data, batches, history, best_epoch, (final_auc, final_val_loss),
                           (soundscape_auc, soundscape_windows), resumed_from)
    write_json(out_dir / "metrics.json", metrics)
    log.info("%s fold %d done: best epoch %d, OOF AUC %s, labelled-soundscape AUC %s (%d windows)",
             model_spec["backbone"], fold, best_epoch, "-" if final_auc is None else f"{final_auc:.4f}",
             "-" if soundscape_auc is None else f"{soundscape_auc:.4f}", soundscape_windows)
    return metrics


def specialist_columns(specialist: tuple[Sequence[int], float] | None,
                       n_classes: int) -> tuple[np.ndarray | None, float]:
    """(class columns, upsampling factor) of a taxon specialist; (None, 1.0) for a generalist."""
    if specialist is None:
        return None, 1.0
    indices, upsample = specialist
    columns = np.unique(np.asarray(list(indices), dtype=np.int64))
    if not len(columns) or columns.min() < 0 or columns.max() >= n_classes:
        raise ValueError(f"specialist columns {list(indices)} must be a non-empty subset of 0..{n_classes - 1}")
    if not float(upsample) >= 1.0:
        raise ValueError(f"specialist upsample {upsample} must be >= 1")
    return columns, float(upsample)


def distilled_classes(class_mask: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    """The classes the logit distillation covers: those the teacher knows, within a specialist's columns."""
    if columns is None:
        return class_mask
    mask = np.zeros(len(class_mask), dtype=bool)
    mask[columns] = True
    return np.asarray(class_mask, dtype=bool) & mask

"""The data of one fold's run: checked inputs, the split and its targets, and the batches drawn from them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from birdclef.common.labels import build_targets
from birdclef.pseudo import self_distill_targets
from birdclef.soundscapes import window_positions
from birdclef.train.data import (
    EpochBatchSampler,
    RowView,
    TrainWindows,
    collate,
    context_chunks,
    crop_frames,
    loader_workers,
    split_fold,
    usable_frames,
    worker_init,
)
from birdclef.train.distill import TeacherCache, TeacherTargets
from birdclef.train.run import FoldRun
from birdclef.train.validation import ValidationSet, validation_set
from birdclef.train.wave_augment import WaveAugmenter, WaveSources

log = logging.getLogger(__name__)


def check_inputs(mels: np.ndarray, classes: list[str], model_spec: Mapping[str, Any],
                 window_frames: int, soundscape_mels: np.ndarray | None,
                 pseudo_mels: np.ndarray | None, pseudo_labels: np.ndarray | None):
    """Check that the class list, pseudo labels and windows agree: (pseudo_mels, pseudo_labels).

    Empty pseudo windows come back as None.
    """
    if int(model_spec["n_classes"]) != len(classes):
        raise ValueError(f"model_spec n_classes={model_spec['n_classes']} but "
                         f"{len(classes)} classes were given")
    if pseudo_mels is not None and pseudo_labels is None:
        raise ValueError("pseudo_mels were given without pseudo_labels")
    if pseudo_mels is not None and len(pseudo_mels) == 0:
        pseudo_mels = pseudo_labels = None
    if pseudo_mels is not None and (
        len(pseudo_mels) != len(pseudo_labels) or pseudo_labels.shape[1] != len(classes)
    ):
        raise ValueError(f"pseudo_labels {pseudo_labels.shape} do not match pseudo_mels "
                         f"{pseudo_mels.shape} and {len(classes)} classes")
    n_mels = int(mels.shape[1])
    for name, windows in (("pseudo", pseudo_mels), ("soundscape", soundscape_mels)):
        if windows is not None and len(windows) and tuple(windows.shape[1:]) != (
            n_mels, int(window_frames)
        ):
            raise ValueError(f"{name} windows have shape {tuple(windows.shape[1:])}, "
                             f"expected (n_mels, window_frames) = ({n_mels}, {window_frames})")
    return pseudo_mels, pseudo_labels


@dataclass
class FoldData:
    """What one fold trains on (recordings, pseudo-labelled and labelled windows) and scores on."""

    mels: np.ndarray
    train_table: pd.DataFrame
    train_soft: np.ndarray
    train_usable: np.ndarray
    validation: ValidationSet
    pseudo_mels: np.ndarray | None
    pseudo_labels: np.ndarray | None
    labelled_mels: RowView | None
    labelled_targets: np.ndarray | None
    teacher: TeacherTargets | None = None
    self_distill: dict[str, Any] | None = None
    wave: WaveAugmenter | None = None
    pseudo_chunks: np.ndarray | None = None  # context_windows > 1: each window's chunk (context_chunks)
    labelled_chunks: np.ndarray | None = None

    @property
    def val_table(self) -> pd.DataFrame:
        return self.validation.table

    @property
    def has_val(self) -> bool:
        return not self.validation.table.empty

    @property
    def n_pseudo(self) -> int:
        return 0 if self.pseudo_mels is None else len(self.pseudo_mels)

    @property
    def n_labelled(self) -> int:
        return 0 if self.labelled_targets is None else len(self.labelled_targets)


def _labelled_train_windows(run: FoldRun, labelled_windows: pd.DataFrame | None,
                            soundscape_mels: np.ndarray | None,
                            soundscape_index: pd.DataFrame | None):
    """(windows, targets) of the ``train`` rows of `labelled_windows`, or (None, None)."""
    if labelled_windows is not None and run.settings.labelled_ratio > 0:
        train_rows = labelled_windows[labelled_windows["split"] == "train"]
        if len(train_rows):
            if soundscape_index is None:
                raise ValueError("labelled soundscape windows need the soundscape cache index")
            rows = window_positions(soundscape_index, train_rows["row_id"], "the soundscape cache")
            return RowView(soundscape_mels, rows), train_rows[run.classes].to_numpy(np.float32)
    return None, None


def fold_data(run: FoldRun, mels: np.ndarray, mel_index: pd.DataFrame, folds: pd.DataFrame,
              soundscape_mels: np.ndarray | None, soundscape_index: pd.DataFrame | None,
              pseudo_mels: np.ndarray | None, pseudo_labels: np.ndarray | None,
              labelled_windows: pd.DataFrame | None, teacher: TeacherCache | None = None,
              recording_pseudo: pd.DataFrame | None = None, label_mass_cap: bool = False,
              wave: WaveSources | None = None) -> FoldData:
    """Split the recordings of `run.fold`, build their targets (with `recording_pseudo`, the
    self-distillation targets: `recording_targets`), gather the soundscape windows and,
    when the run distils (`teacher`), each example's teacher window; with waveform augmentation
    (`wave`), the augmenter of the training recordings."""
    fold, settings = run.fold, run.settings
    train_table, val_table = split_fold(mel_index, folds, fold)
    if fold != -1 and val_table.empty:
        log.warning("fold %d has no recordings: training without validation", fold)
    has_val = not val_table.empty
    train_soft, _ = build_targets(train_table, run.classes, settings.secondary_weight)
    self_distill = None
    if recording_pseudo is not None:
        train_soft, self_distill = recording_targets(train_table, train_soft, recording_pseudo,
                                                     run.classes, label_mass_cap)
    lengths = train_table["frames"].to_numpy(np.int64)
    if (lengths <= 0).any() or (has_val and (val_table["frames"] <= 0).any()):
        raise ValueError("the mel index has recordings with no frames")
    crop_frames_max = crop_frames(settings, run.window_frames, run.frames_per_second)
    train_usable = usable_frames(train_table, crop_frames_max)
    validation = validation_set(mels, val_table, run.classes, settings, run.window_frames,
                                run.frames_per_second, run.context_windows)
    labelled_mels, labelled_targets = _labelled_train_windows(run, labelled_windows,
                                                              soundscape_mels, soundscape_index)
    targets = None
    if teacher is not None and settings.distills:
        targets = teacher.targets(train_table["filename"].astype(str).tolist(),
                                  _window_ids(pseudo_mels, soundscape_index),
                                  _window_ids(labelled_mels, soundscape_index), run.frames_per_second)
        log.info("distillation: teacher windows for %s", {k: round(v, 3) for k, v in targets.coverage.items()})
    augmenter = wave.augmenter(train_table) if wave is not None and settings.wave_augment.prob > 0 else None
    chunks = [_chunks(windows, soundscape_index, run.context_windows, name)
              for windows, name in ((pseudo_mels, "pseudo"), (labelled_mels, "labelled"))]
    return FoldData(mels, train_table, train_soft, train_usable, validation, pseudo_mels,
                    pseudo_labels, labelled_mels, labelled_targets, targets, self_distill, augmenter,
                    *chunks)


def _chunks(windows, soundscape_index: pd.DataFrame | None, context_windows: int,
            name: str) -> np.ndarray | None:
    """`context_chunks` of soundscape windows given as a `RowView` of the soundscape cache
    (None when a model sees one window, or there are no such windows)."""
    if context_windows == 1 or windows is None or len(windows) == 0:
        return None
    if not isinstance(windows, RowView) or soundscape_index is None:
        raise ValueError(f"a model with context_windows {context_windows} needs its {name} windows as rows "
                         "of the soundscape cache (a RowView and the cache index) to find their neighbours")
    names = soundscape_index["soundscape"].astype(str)
    positions = names.groupby(names, sort=False).cumcount().to_numpy(np.int64)
    return context_chunks(names.to_numpy()[windows.rows], positions[windows.rows], context_windows)


def recording_targets(train_table: pd.DataFrame, true: np.ndarray, recording_pseudo: pd.DataFrame,
                      classes: list[str], mass_cap: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """The self-distillation targets of the training recordings (`birdclef.pseudo.self_distill_targets`).

    `recording_pseudo` rows are matched to `train_table` by filename; a recording it lacks
    (no model held it out, e.g. fold -1 or an untrained fold) keeps its true labels `true`.
    """
    missing = [c for c in classes if c not in recording_pseudo.columns]
    if missing:
        raise ValueError(f"the recordings' soft labels lack classes {missing[:5]}: expected one column "
                         "per taxonomy class (the previous round's oof.parquet)")
    scaled = (recording_pseudo.set_index("filename")[classes]
              .reindex(train_table["filename"].astype(str)).to_numpy(np.float64))
    targets, stats = self_distill_targets(true, scaled, mass_cap)
    stats["label_mass_cap"] = bool(mass_cap)
    log.info("self-distillation on the recordings: %s", stats)
    return targets, stats


def _window_ids(windows, soundscape_index: pd.DataFrame | None) -> list[str]:
    """The row_ids of soundscape windows given as a `RowView` of the soundscape cache ([] otherwise)."""
    if not isinstance(windows, RowView) or soundscape_index is None:
        return []
    return soundscape_index["row_id"].astype(str).to_numpy()[windows.rows].tolist()


@dataclass
class Batches:
    """An epoch's batches: the sampler that draws them and the loader that builds them."""

    sampler: EpochBatchSampler
    loader: DataLoader
    workers: int

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)


def build_batches(run: FoldRun, data: FoldData) -> Batches:
    """The class-balanced sampler of `data` and its loader (workers for `run.threads`)."""
    settings, train_table = run.settings, data.train_table
    counts = train_table["primary_label"].astype(str).map(
        train_table["primary_label"].astype(str).value_counts()
    ).to_numpy(np.float64)
    sample_weights = counts ** settings.class_balance_power if len(counts) else counts
    if run.columns is not None and len(counts):  # a specialist: its classes' recordings more often
        _, true_labels = build_targets(train_table, run.classes, settings.secondary_weight)  # not self-distilled
        carries = true_labels[:, run.columns].astype(bool).any(axis=1)
        sample_weights = sample_weights * np.where(carries, run.upsample, 1.0)
    samples_per_epoch = settings.samples_per_epoch or max(len(train_table) or data.n_pseudo,
                                                          settings.batch_size)
    sampler = EpochBatchSampler(sample_weights, data.n_pseudo, settings.batch_size,
                                samples_per_epoch, settings.pseudo_ratio, run.base_seed,
                                n_labelled=data.n_labelled, labelled_ratio=settings.labelled_ratio)
    dataset = TrainWindows(data.mels, train_table["offset"].to_numpy(np.int64), data.train_usable,
                           data.train_soft, run.window_frames, int(data.train_usable.max(initial=0)),
                           settings, data.pseudo_mels, data.pseudo_labels, data.labelled_mels,
                           data.labelled_targets, data.teacher, data.wave, run.context_windows,
                           data.pseudo_chunks, data.labelled_chunks)
    workers = loader_workers(run.threads, run.dev)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=run.dev.type == "cuda",
        worker_init_fn=worker_init if workers else None,
        generator=torch.Generator().manual_seed(run.base_seed),
    )
    return Batches(sampler, loader, workers)

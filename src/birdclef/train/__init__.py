"""Training of one (backbone, fold, round) of the SED model on the log-mel cache.

No Snakemake here: `train_fold` takes the cache, the folds, the class list and the
settings as arguments and writes everything into `out_dir`:

- ``last.pt``: model, optimizer, scheduler, grad-scaler, RNG states and history,
  rewritten after every epoch. A rerun of a killed job with a compatible
  configuration continues after the last finished epoch.
- ``best.pt``: the best epoch (highest OOF macro ROC-AUC; lowest training loss when
  there is no validation fold), written with `birdclef.train.model.save_checkpoint`, so
  `birdclef.train.model.load_model` reads it.
- ``oof.parquet``: ``filename``, ``fold``, then one probability column per class.
- ``soundscape_preds.parquet`` (when soundscape windows are given): ``row_id``,
  ``soundscape``, ``end_s``, then one probability column per class.
- ``metrics.json`` (the report's training-curve figure is drawn from it by
  ``rules/report.smk``; training draws nothing).

Choices worth knowing:

- Training examples are random crops of ``window_frames`` frames from the first
  ``crop_seconds_max`` seconds of a recording (all of its cached seconds when the
  mel index marks it ``rare``: see `usable_frames`); a recording shorter than a
  window is tiled (repeated) to the window length.
- Every random choice of an epoch (which recordings, which crops, which masks,
  mixup) is derived from ``(seed + fold, epoch)``, so a resumed run draws the same
  batches as an uninterrupted one, whatever the number of loader workers.
- Validation predicts every non-overlapping window of a recording's first
  ``crop_seconds_max`` seconds (the last window is completed by tiling, as in
  training) and takes the **mean** of the window probabilities as the recording
  prediction: BirdCLEF training recordings usually carry the primary species
  throughout, and the mean is steadier than the max on short validation folds.
- The loss is computed on the clip-wise (attention-pooled) logits. Each example
  carries a weight (1 for recordings, ``pseudo_weight`` for pseudo-labelled
  windows); the batch loss is the mean of weight x per-example loss.
- Label smoothing (``y * (1 - eps) + eps / 2``) applies to recording targets only;
  pseudo labels are already soft.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset, Sampler

from birdclef.common.io import write_json, write_parquet
from birdclef.common.labels import build_targets
from birdclef.common.metrics import macro_roc_auc
from birdclef.common.progress import progress_bar
from birdclef.soundscapes import soundscape_score, window_positions
from birdclef.train.model import MODEL_DEFAULTS, build_model, load_model, save_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
LOSSES = ("bce", "focal", "bce+focal")
OPTIMIZERS = ("adamw", "radam")


@dataclass
class TrainSettings:
    """Hyper-parameters of one training run (one backbone, one fold, one round).

    The defaults are the config schema's (schemas/config.schema.yaml: `train`,
    `pseudo.rounds[]` for the pseudo keys, `soundscape_labels.train_ratio` /
    `train_weight` for the labelled ones); tests/test_train.py checks that they agree.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0  # linear warmup then cosine decay (per step)
    optimizer: str = "adamw"  # "adamw" | "radam"
    loss: str = "bce"  # "bce" | "focal" | "bce+focal"
    focal_gamma: float = 2.0
    focal_weight: float = 0.5  # bce+focal = (1 - w) * bce + w * focal
    secondary_weight: float = 0.5
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.5
    mixup_prob: float = 0.5
    spec_augment: bool = True  # time and frequency masks
    crop_seconds_max: float = 30.0  # random crops come from the first N seconds
    samples_per_epoch: int | None = None  # default: number of training recordings
    class_balance_power: float = -0.5  # sampling weight ~ class frequency ** power
    seed: int = 0
    pseudo_weight: float = 1.0
    pseudo_ratio: float = 0.3
    mix_pseudo: bool = True  # mixup may pair a recording with a pseudo-labelled window
    labelled_ratio: float = 0.25  # share of a batch from labelled soundscape windows
    labelled_weight: float = 1.0  # loss weight of a labelled soundscape window

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"train loss {self.loss!r} is not one of {LOSSES}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("train epochs and batch_size must be >= 1")
        if not 0.0 <= self.pseudo_ratio <= 1.0:
            raise ValueError(f"pseudo_ratio {self.pseudo_ratio} must lie in [0, 1]")
        if not 0.0 <= self.labelled_ratio <= 1.0:
            raise ValueError(f"labelled_ratio {self.labelled_ratio} (soundscape_labels.train_ratio) "
                             "must lie in [0, 1]")
        if self.pseudo_ratio + self.labelled_ratio > 1.0:
            raise ValueError(f"pseudo_ratio {self.pseudo_ratio} + soundscape_labels.train_ratio "
                             f"{self.labelled_ratio} exceed 1: expected shares of one batch")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing {self.label_smoothing} must lie in [0, 1)")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TrainSettings:
        """Build settings from a (config) mapping; unknown keys raise a ValueError."""
        values = dict(values or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown train settings {unknown}; known: {sorted(known)}")
        return cls(**values)


# --------------------------------------------------------------------------- labels


# --------------------------------------------------------------------------- data


def _tiled_window(frames: np.ndarray, start: int, size: int) -> np.ndarray:
    """`size` consecutive rows of `frames` from `start`, wrapping around (tiling)."""
    n = frames.shape[0]
    if n == 0:
        raise ValueError("empty recording")
    if start + size <= n:
        return frames[start : start + size]
    rows = (start + np.arange(size)) % n
    return frames[rows]


class _MelSource:
    """Picklable holder of the mel cache; an np.memmap is reopened, not copied, in workers."""

    def __init__(self, mels: np.ndarray) -> None:
        self.mels = mels

    def __getstate__(self) -> dict[str, Any]:
        mels = self.mels
        if isinstance(mels, np.memmap) and mels.filename is not None:
            return {"memmap": (mels.filename, mels.dtype.str, mels.shape, mels.offset,
                               "F" if mels.flags.f_contiguous and not mels.flags.c_contiguous
                               else "C")}
        return {"array": mels}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "memmap" in state:
            filename, dtype, shape, offset, order = state["memmap"]
            self.mels = np.memmap(filename, dtype=dtype, mode="r", shape=shape, offset=offset,
                                  order=order)
        else:
            self.mels = state["array"]


class TrainWindows(Dataset):
    """Training examples, addressed by keys ``(source, index, seed)`` from `EpochBatchSampler`.

    source 0: a random crop of recording `index` (row of the training index);
    source 1: pseudo-labelled window `index`; source 2: labelled soundscape window
    `index` (train_soundscapes_labels.csv). `seed` drives the crop and the masks.
    Returns (mel (1, n_mels, window_frames) float32, target (K,) float32, weight).
    """

    def __init__(
        self,
        mels: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        targets: np.ndarray,
        window_frames: int,
        crop_frames_max: int,
        settings: TrainSettings,
        pseudo_mels: np.ndarray | None = None,
        pseudo_labels: np.ndarray | None = None,
        labelled_mels: np.ndarray | None = None,
        labelled_targets: np.ndarray | None = None,
    ) -> None:
        self.source = _MelSource(mels)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        eps = settings.label_smoothing
        self.targets = (targets * (1.0 - eps) + eps / 2.0).astype(np.float32)
        self.window_frames = int(window_frames)
        self.crop_frames_max = max(int(crop_frames_max), self.window_frames)
        self.spec_augment = settings.spec_augment
        self.pseudo_weight = float(settings.pseudo_weight)
        self.pseudo_mels = pseudo_mels
        # A copy: pandas (copy-on-write) hands out read-only arrays, which torch warns about.
        self.pseudo_labels = None if pseudo_labels is None else np.array(pseudo_labels,
                                                                         dtype=np.float32)
        self.labelled_weight = float(settings.labelled_weight)
        self.labelled_mels = labelled_mels
        self.labelled_targets = None if labelled_targets is None else np.array(
            labelled_targets, dtype=np.float32)

    def __len__(self) -> int:
        return (len(self.offsets) + (0 if self.pseudo_mels is None else len(self.pseudo_mels))
                + (0 if self.labelled_mels is None else len(self.labelled_mels)))

    def crop(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """A random (n_mels, window_frames) crop from the recording's first crop_frames_max."""
        usable = int(min(self.lengths[index], self.crop_frames_max))
        offset = int(self.offsets[index])
        frames = self.source.mels[offset : offset + usable]
        start = int(rng.integers(0, usable - self.window_frames + 1)) if (
            usable > self.window_frames) else 0
        return np.asarray(_tiled_window(frames, start, self.window_frames), dtype=np.float32).T

    def augment(self, mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Spec-augment: two time masks and two frequency masks, filled with the mean."""
        mel = mel.copy()
        n_mels, n_frames = mel.shape
        fill = float(mel.mean())
        for _ in range(2):
            width = int(rng.integers(0, max(1, n_frames // 8) + 1))
            start = int(rng.integers(0, n_frames - width + 1))
            mel[:, start : start + width] = fill
        for _ in range(2):
            width = int(rng.integers(0, max(1, n_mels // 8) + 1))
            start = int(rng.integers(0, n_mels - width + 1))
            mel[start : start + width, :] = fill
        return mel

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, float]:
        source, index, seed = key
        rng = np.random.default_rng(seed)
        if source == 0:
            mel = self.crop(index, rng)
            target = self.targets[index]
            weight = 1.0
        elif source == 1:
            mel = np.asarray(self.pseudo_mels[index], dtype=np.float32)
            target = self.pseudo_labels[index]
            weight = self.pseudo_weight
        else:
            mel = np.asarray(self.labelled_mels[index], dtype=np.float32)
            target = self.labelled_targets[index]
            weight = self.labelled_weight
        if self.spec_augment:
            mel = self.augment(mel, rng)
        return torch.from_numpy(np.ascontiguousarray(mel))[None], torch.from_numpy(target), weight


class EpochBatchSampler(Sampler):
    """Batches of keys ``(source, index, seed)``; the draw depends only on (seed, epoch).

    Each batch holds ``round(batch_size * labelled_ratio)`` labelled soundscape
    windows and ``round(batch_size * pseudo_ratio)`` pseudo-labelled windows
    (each drawn uniformly), and recordings, drawn with probability ~ class
    frequency ** `class_balance_power`, fill the rest (without recordings the
    windows fill the batch). Keys come in that order: recordings, pseudo,
    labelled. The number of batches is ceil(samples_per_epoch / batch_size);
    every batch is full (draws are with replacement).
    """

    def __init__(
        self,
        sample_weights: np.ndarray,
        n_pseudo: int,
        batch_size: int,
        samples_per_epoch: int,
        pseudo_ratio: float,
        seed: int,
        n_labelled: int = 0,
        labelled_ratio: float = 0.0,
    ) -> None:
        self.n_train = len(sample_weights)
        self.p = None
        if self.n_train:
            self.p = np.asarray(sample_weights, dtype=np.float64)
            self.p = self.p / self.p.sum()
        self.n_pseudo = int(n_pseudo)
        self.n_labelled = int(n_labelled)
        self.batch_size = int(batch_size)
        self.n_batches = max(1, math.ceil(samples_per_epoch / batch_size))
        self.labelled_per_batch = (
            min(self.batch_size, int(round(self.batch_size * labelled_ratio))) if self.n_labelled else 0)
        self.pseudo_per_batch = (
            min(self.batch_size - self.labelled_per_batch, int(round(self.batch_size * pseudo_ratio)))
            if self.n_pseudo else 0)
        if self.n_train == 0:
            if self.n_pseudo:
                self.pseudo_per_batch = self.batch_size - self.labelled_per_batch
            elif self.n_labelled:
                self.labelled_per_batch = self.batch_size
        if self.n_train == 0 and self.n_pseudo == 0 and self.n_labelled == 0:
            raise ValueError("nothing to train on: no training recordings, no pseudo windows and no "
                             "labelled soundscape windows")
        self.seed = int(seed)
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw `__iter__` yields."""
        self.epoch = int(epoch)

    @property
    def windows_per_batch(self) -> int:
        """Soundscape windows (pseudo-labelled and labelled) at the end of each batch."""
        return self.pseudo_per_batch + self.labelled_per_batch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_pseudo = self.pseudo_per_batch
        n_labelled = self.labelled_per_batch
        n_real = self.batch_size - n_pseudo - n_labelled
        for _ in range(self.n_batches):
            keys: list[tuple[int, int, int]] = []
            if n_real:
                rows = rng.choice(self.n_train, size=n_real, p=self.p)
                keys += [(0, int(r), int(s)) for r, s in
                         zip(rows, rng.integers(0, 2**63 - 1, size=n_real), strict=True)]
            if n_pseudo:
                rows = rng.integers(0, self.n_pseudo, size=n_pseudo)
                keys += [(1, int(r), int(s)) for r, s in
                         zip(rows, rng.integers(0, 2**63 - 1, size=n_pseudo), strict=True)]
            if n_labelled:
                rows = rng.integers(0, self.n_labelled, size=n_labelled)
                keys += [(2, int(r), int(s)) for r, s in
                         zip(rows, rng.integers(0, 2**63 - 1, size=n_labelled), strict=True)]
            yield keys


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor, float]]):
    mels, targets, weights = zip(*batch, strict=True)
    return torch.stack(mels), torch.stack(targets), torch.tensor(weights, dtype=torch.float32)


def loader_workers(threads: int, device: torch.device) -> int:
    """DataLoader workers for `threads` cores.

    Crops are cheap memmap slices, so loading runs in the main process (0 workers)
    on CPU with <= 2 threads, where every core is better spent on the model; with
    more cores one core stays with the model and up to 4 load batches.
    """
    if threads <= 2:
        return 0
    return min(4, threads - 1) if device.type == "cuda" else min(2, threads // 4)


# --------------------------------------------------------------------------- loss


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, lam: float, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup of log-mel dB batches as two sources sounding together.

    The spectrograms are mixed in the power domain (10 log10 of the weighted
    power sum), so both calls stay audible as in an overlapping soundscape,
    and the targets are their union (element-wise max): both species are
    present. Example weights mix linearly.
    """
    power = lam * torch.pow(10.0, x / 10.0) + (1.0 - lam) * torch.pow(10.0, x[perm] / 10.0)
    mixed = 10.0 * torch.log10(torch.clamp(power, min=1e-10))
    return mixed, torch.maximum(y, y[perm]), lam * w + (1.0 - lam) * w[perm]


def mixup_permutation(rng: np.random.Generator, size: int, n_real: int, mix_pseudo: bool) -> np.ndarray:
    """The mixup partner of each batch position.

    A batch holds `n_real` recordings first, then soundscape windows (pseudo-labelled,
    then labelled). With `mix_pseudo` any two examples may be mixed; without it
    recordings are only mixed with recordings and windows with windows.
    """
    if mix_pseudo or n_real <= 0 or n_real >= size:
        return rng.permutation(size)
    return np.concatenate([rng.permutation(n_real), n_real + rng.permutation(size - n_real)])


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss per element (no alpha term): BCE * (1 - p_t) ** gamma."""
    bce = functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    prob = torch.sigmoid(logits)
    p_t = prob * targets + (1.0 - prob) * (1.0 - targets)
    return bce * (1.0 - p_t).pow(gamma)


def example_loss(
    logits: torch.Tensor, targets: torch.Tensor, settings: TrainSettings
) -> torch.Tensor:
    """Per-example loss (mean over classes) of `settings.loss`, in float32."""
    logits = logits.float()
    targets = targets.float()
    if settings.loss == "bce":
        loss = functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif settings.loss == "focal":
        loss = focal_loss(logits, targets, settings.focal_gamma)
    else:
        w = settings.focal_weight
        loss = (1.0 - w) * functional.binary_cross_entropy_with_logits(
            logits, targets, reduction="none"
        ) + w * focal_loss(logits, targets, settings.focal_gamma)
    return loss.mean(dim=1)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- prediction


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _to_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


@torch.no_grad()
def predict_windows(
    model: torch.nn.Module,
    windows: Callable[[np.ndarray], np.ndarray],
    n_windows: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """Clip logits (n_windows, K) float32 for windows fetched by `windows(indices)`.

    `windows` returns float arrays (len(indices), n_mels, window_frames).
    """
    model.eval()
    outputs = []
    starts = range(0, n_windows, batch_size)
    for start in progress_bar(starts, desc=desc, disable=not progress, leave=False):
        indices = np.arange(start, min(n_windows, start + batch_size))
        batch = torch.from_numpy(np.asarray(windows(indices), dtype=np.float32))[:, None]
        with _autocast(device, amp_dtype):
            logits, _ = model(_to_input(batch, device))
        outputs.append(logits.float().cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs)


def usable_frames(table: pd.DataFrame, crop_frames_max: int) -> np.ndarray:
    """Frames of each recording that crops and validation windows come from.

    The first `crop_frames_max` frames, except for recordings the mel cache marked
    ``rare`` (classes under ``mels.rare_threshold`` recordings, cached for
    ``mels.rare_max_seconds``): all of their cached frames.
    """
    frames = table["frames"].to_numpy(np.int64)
    usable = np.minimum(frames, int(crop_frames_max))
    if "rare" in table.columns:
        rare = table["rare"].fillna(False).to_numpy(bool)
        usable = np.where(rare, frames, usable)
    return usable


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


class _ValidationWindows:
    """Every non-overlapping window of each validation recording's first crop_frames_max."""

    def __init__(self, mels: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 window_frames: int, crop_frames_max: int) -> None:
        self.mels = mels
        self.window_frames = int(window_frames)
        usable = np.minimum(np.asarray(lengths, dtype=np.int64),
                            max(int(crop_frames_max), self.window_frames))
        counts = np.maximum(1, -(-usable // self.window_frames))
        self.recording = np.repeat(np.arange(len(usable)), counts)
        first = np.cumsum(counts) - counts
        self.start = (np.arange(len(self.recording)) - np.repeat(first, counts)) * window_frames
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.usable = usable

    def __len__(self) -> int:
        return len(self.recording)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        out = []
        for i in indices:
            r = self.recording[i]
            frames = self.mels[self.offsets[r] : self.offsets[r] + self.usable[r]]
            out.append(np.asarray(_tiled_window(frames, int(self.start[i]), self.window_frames),
                                  dtype=np.float32).T)
        return np.stack(out)


def split_fold(mel_index: pd.DataFrame, folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, validation) recordings of `fold`: the mel index joined with the fold table.

    Validation is fold == `fold`; training is the rest (fold -1 rows always
    train). `fold=-1` trains on everything without validation.
    """
    table = mel_index.drop(columns=["fold"], errors="ignore").reset_index(drop=True).merge(
        folds[["filename", "fold"]], on="filename", how="left", validate="one_to_one"
    )
    if table["fold"].isna().any():
        missing = table.loc[table["fold"].isna(), "filename"].head(5).tolist()
        raise ValueError(f"{int(table['fold'].isna().sum())} recordings of the mel index have "
                         f"no fold, e.g. {missing}")
    table["fold"] = table["fold"].astype(int)
    if fold == -1:
        return table, table.iloc[0:0]
    return (table[table["fold"] != fold].reset_index(drop=True),
            table[table["fold"] == fold].reset_index(drop=True))


def crop_frames(settings: TrainSettings, window_frames: int, frames_per_second: float) -> int:
    """Frames of a recording that crops and validation windows come from (at least one window)."""
    return max(int(round(settings.crop_seconds_max * frames_per_second)), int(window_frames))


@dataclass
class ValidationSet:
    """The validation recordings of one fold, as training scores them."""

    table: pd.DataFrame
    windows: _ValidationWindows
    soft: np.ndarray
    binary: np.ndarray


def validation_set(mels: np.ndarray, val_table: pd.DataFrame, classes: Sequence[str],
                   settings: TrainSettings, window_frames: int,
                   frames_per_second: float) -> ValidationSet:
    """Windows and targets of the validation recordings `val_table` (see `split_fold`)."""
    soft, binary = build_targets(val_table, classes, settings.secondary_weight)
    usable = usable_frames(val_table, crop_frames(settings, window_frames, frames_per_second))
    windows = _ValidationWindows(mels, val_table["offset"].to_numpy(np.int64), usable,
                                 window_frames, int(usable.max(initial=0)))
    return ValidationSet(val_table, windows, soft, binary)


def _validate(model, windows: _ValidationWindows, n_recordings: int, soft: np.ndarray,
              binary: np.ndarray, settings: TrainSettings, device, amp_dtype, progress):
    """(recording probabilities (n, K), validation loss, OOF macro AUC)."""
    logits = predict_windows(model, windows, len(windows), settings.batch_size * 2, device,
                             amp_dtype, progress, desc="validate")
    window_targets = torch.from_numpy(soft[windows.recording])
    loss = float(example_loss(torch.from_numpy(logits), window_targets, settings).mean())
    probs = _sigmoid(logits)
    sums = np.zeros((n_recordings, probs.shape[1]), dtype=np.float64)
    np.add.at(sums, windows.recording, probs)
    counts = np.bincount(windows.recording, minlength=n_recordings)[:, None]
    recording_probs = (sums / counts).astype(np.float32)
    auc = macro_roc_auc(binary, recording_probs)
    return recording_probs, loss, auc


# --------------------------------------------------------------------------- checkpoints


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "random": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["random"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _resume_signature(model_spec, settings, fold, classes, window_frames, frames_per_second,
                      n_train, n_val, n_pseudo, n_labelled=0) -> dict[str, Any]:
    """What must match for `last.pt` to be continued (everything but the epoch count)."""
    values = dataclasses.asdict(settings)
    values.pop("epochs")
    return {
        "format": CHECKPOINT_FORMAT,
        "model_spec": {k: model_spec[k] for k in sorted(model_spec)},
        "settings": values,
        "fold": int(fold),
        "classes": list(classes),
        "window_frames": int(window_frames),
        "frames_per_second": float(frames_per_second),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_pseudo": int(n_pseudo),
        "n_labelled": int(n_labelled),
    }


def _load_resume(path: Path, signature: Mapping[str, Any], epochs: int) -> dict[str, Any] | None:
    """The `last.pt` payload when it can be continued, else None (with the reason logged)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated file cannot happen (atomic writes), but be safe
        log.warning("cannot read %s (%s); training from scratch", path, error)
        return None
    if payload.get("signature") != signature:
        log.warning("%s was written with another configuration; training from scratch", path)
        return None
    if int(payload["epoch"]) > epochs:
        log.warning("%s has %d epochs, more than the %d asked for; training from scratch",
                    path, payload["epoch"], epochs)
        return None
    return payload


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- main entry


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
) -> dict[str, Any]:
    """Train one fold of the SED model and write checkpoints, OOF and metrics to `out_dir`.

    Trains on recordings whose fold != `fold` (fold -1 rows always train) and
    validates on fold == `fold`; `fold=-1` trains on everything without validation.
    Resumes from `out_dir/last.pt` when it was written with the same model spec,
    settings (the epoch count aside), fold, classes and data sizes. `epoch_callback`
    (optional) is called with each epoch's history entry after its checkpoints are
    written. `seen_soundscapes` names the soundscapes whose pseudo-labels this
    model trains on; their rows of ``soundscape_preds.parquet`` get
    ``seen_in_training`` True (out-of-fold pseudo-labelling skips them).
    `labelled_windows` (the soundscape_labels stage's table: row_id, split,
    one 0/1 column per class) are windows of `soundscape_mels` (matched by
    `soundscape_index` row_id): ``train`` rows are drawn into batches
    (``settings.labelled_ratio``, weight ``settings.labelled_weight``),
    ``validation`` rows score the best model (``soundscape_auc``).
    Returns the metrics dict also written to `out_dir/metrics.json`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = [str(c) for c in classes]
    model_spec = dict(model_spec)
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

    # Seeds, threads, device, precision.
    base_seed = (int(settings.seed) + int(fold)) % 2**32
    random.seed(base_seed)
    np.random.seed(base_seed)
    torch.manual_seed(base_seed)
    torch.set_num_threads(int(threads))
    dev = _resolve_device(device)
    amp_dtype: torch.dtype | None = None
    if dev.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    amp_name = {None: None, torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]

    # Split.
    train_table, val_table = split_fold(mel_index, folds, fold)
    if fold != -1 and val_table.empty:
        log.warning("fold %d has no recordings: training without validation", fold)
    has_val = not val_table.empty
    train_soft, _ = build_targets(train_table, classes, settings.secondary_weight)
    lengths = train_table["frames"].to_numpy(np.int64)
    if (lengths <= 0).any() or (has_val and (val_table["frames"] <= 0).any()):
        raise ValueError("the mel index has recordings with no frames")
    crop_frames_max = crop_frames(settings, window_frames, frames_per_second)
    train_usable = usable_frames(train_table, crop_frames_max)
    validation = validation_set(mels, val_table, classes, settings, window_frames, frames_per_second)
    val_windows, val_soft, val_binary = validation.windows, validation.soft, validation.binary
    n_pseudo = 0 if pseudo_mels is None else len(pseudo_mels)
    labelled_mels = labelled_targets = None
    n_labelled = 0
    if labelled_windows is not None and settings.labelled_ratio > 0:
        train_rows = labelled_windows[labelled_windows["split"] == "train"]
        if len(train_rows):
            if soundscape_index is None:
                raise ValueError("labelled soundscape windows need the soundscape cache index")
            rows = window_positions(soundscape_index, train_rows["row_id"], "the soundscape cache")
            labelled_mels = _RowView(soundscape_mels, rows)
            labelled_targets = train_rows[classes].to_numpy(np.float32)
            n_labelled = len(train_rows)

    # Sampling.
    counts = train_table["primary_label"].astype(str).map(
        train_table["primary_label"].astype(str).value_counts()
    ).to_numpy(np.float64)
    sample_weights = counts ** settings.class_balance_power if len(counts) else counts
    samples_per_epoch = settings.samples_per_epoch or max(len(train_table) or n_pseudo,
                                                          settings.batch_size)
    sampler = EpochBatchSampler(sample_weights, n_pseudo, settings.batch_size,
                                samples_per_epoch, settings.pseudo_ratio, base_seed,
                                n_labelled=n_labelled, labelled_ratio=settings.labelled_ratio)
    dataset = TrainWindows(mels, train_table["offset"].to_numpy(np.int64), train_usable,
                           train_soft, window_frames, int(train_usable.max(initial=0)), settings,
                           pseudo_mels, pseudo_labels, labelled_mels, labelled_targets)
    workers = loader_workers(threads, dev)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        generator=torch.Generator().manual_seed(base_seed),
    )

    # Model, optimizer, schedule.
    model = build_model(model_spec).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if settings.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr,
                                      weight_decay=settings.weight_decay)
    else:
        optimizer = torch.optim.RAdam(model.parameters(), lr=settings.lr,
                                      weight_decay=settings.weight_decay,
                                      decoupled_weight_decay=True)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = int(round(settings.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    # Resume.
    signature = _resume_signature(model_spec, settings, fold, classes, window_frames,
                                  frames_per_second, len(train_table), len(val_table), n_pseudo,
                                  n_labelled)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 1
    payload = _load_resume(last_path, signature, settings.epochs)
    if payload is not None:
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        _set_rng_states(payload["rng"])
        history = list(payload["history"])
        best = payload.get("best")
        start_epoch = int(payload["epoch"]) + 1
        if best is not None and not best_path.exists():
            log.warning("%s is missing: the best epoch is chosen again from the epochs to come",
                        best_path)
            best = None
        log.info("resuming %s fold %d from epoch %d of %d", model_spec["backbone"], fold,
                 start_epoch, settings.epochs)
    del payload
    resumed_from = start_epoch - 1

    log.info("training %s fold %d on %s (amp %s): %d train recordings, %d validation, "
             "%d pseudo windows, %d labelled soundscape windows, %d steps per epoch, "
             "%d loader workers", model_spec["backbone"], fold, dev, amp_name, len(train_table),
             len(val_table), n_pseudo, n_labelled, steps_per_epoch, workers)

    for epoch in range(start_epoch, settings.epochs + 1):
        model.train()
        sampler.set_epoch(epoch)
        mix_rng = np.random.default_rng([base_seed, epoch, 1])
        started = time.perf_counter()
        loss_sum, seen = 0.0, 0
        step_lr = float(optimizer.param_groups[0]["lr"])
        bar = progress_bar(loader, desc=f"{model_spec['backbone']} fold {fold} epoch {epoch}",
                           disable=not progress, leave=False)
        for x, y, w in bar:
            if settings.mixup_alpha > 0 and mix_rng.random() < settings.mixup_prob:
                lam = float(mix_rng.beta(settings.mixup_alpha, settings.mixup_alpha))
                perm = torch.from_numpy(mixup_permutation(
                    mix_rng, len(x), len(x) - sampler.windows_per_batch, settings.mix_pseudo))
                x, y, w = mix_batch(x, y, w, lam, perm)
            x = _to_input(x, dev)
            y = y.to(dev, non_blocking=True)
            w = w.to(dev, non_blocking=True)
            with _autocast(dev, amp_dtype):
                logits, _ = model(x)
            loss = (example_loss(logits, y, settings) * w).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step_lr = float(optimizer.param_groups[0]["lr"])
            scheduler.step()
            loss_sum += float(loss.detach()) * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        train_seconds = time.perf_counter() - started
        train_loss = loss_sum / max(seen, 1)
        val_loss = auc = None
        if has_val:
            _, val_loss, auc = _validate(model, val_windows, len(val_table), val_soft,
                                         val_binary, settings, dev, amp_dtype, progress)
        seconds = time.perf_counter() - started
        entry = {
            "epoch": epoch,
            "train_loss": float(train_loss),
            "val_loss": _finite(val_loss),
            "oof_auc": _finite(auc),
            "lr": step_lr,  # the learning rate of the epoch's last step
            "seconds": float(seconds),
            "samples_per_s": float(seen / train_seconds) if train_seconds > 0 else None,
        }
        history.append(entry)
        if has_val:
            score = (-math.inf if entry["oof_auc"] is None else entry["oof_auc"],
                     -(entry["val_loss"] if entry["val_loss"] is not None else math.inf))
        else:
            score = (-train_loss,)
        improved = best is None or tuple(score) > tuple(best["score"])
        if improved:
            best = {"epoch": epoch, "score": list(score)}
            save_checkpoint(best_path, model, model_spec, epoch=epoch, classes=classes,
                            fold=int(fold), window_frames=int(window_frames),
                            frames_per_second=float(frames_per_second), history=history)
        save_checkpoint(
            last_path, model, model_spec,
            format=CHECKPOINT_FORMAT, signature=signature, epoch=epoch,
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict(), rng=_rng_states(), history=history, best=best,
            classes=classes,
        )
        log.info("%s fold %d epoch %d/%d: train loss %.4f, val loss %s, OOF AUC %s, lr %.2e, "
                 "%.1fs, %.1f samples/s%s", model_spec["backbone"], fold, epoch, settings.epochs,
                 train_loss, "-" if val_loss is None else f"{val_loss:.4f}",
                 "-" if entry["oof_auc"] is None else f"{entry['oof_auc']:.4f}", entry["lr"],
                 seconds, entry["samples_per_s"] or 0.0, " (best)" if improved else "")
        if epoch_callback is not None:
            epoch_callback(entry)

    if not best_path.exists():
        # Only when best.pt was deleted and no later epoch beat the remembered best.
        log.warning("%s is missing; saving the last epoch as the best model", best_path)
        save_checkpoint(best_path, model, model_spec, epoch=history[-1]["epoch"],
                        classes=classes, fold=int(fold), window_frames=int(window_frames),
                        frames_per_second=float(frames_per_second), history=history)
        best = {"epoch": history[-1]["epoch"], "score": []}

    # Final outputs from the best model.
    best_model, best_payload = load_model(best_path, map_location="cpu")
    best_model = best_model.to(dev)
    if dev.type == "cuda":
        best_model = best_model.to(memory_format=torch.channels_last)
    best_epoch = int(best_payload.get("epoch", best["epoch"]))

    oof = pd.DataFrame({"filename": val_table["filename"].astype(str).to_numpy(),
                        "fold": val_table["fold"].to_numpy(np.int64)})
    final_auc = final_val_loss = None
    if has_val:
        probs, final_val_loss, final_auc = _validate(best_model, val_windows, len(val_table),
                                                     val_soft, val_binary, settings, dev,
                                                     amp_dtype, progress)
    else:
        probs = np.zeros((0, len(classes)), dtype=np.float32)
    oof = pd.concat([oof, pd.DataFrame(probs, columns=classes)], axis=1)
    write_parquet(out_dir / "oof.parquet", oof)

    if soundscape_mels is not None:
        if soundscape_index is None or len(soundscape_index) != len(soundscape_mels):
            raise ValueError("soundscape_index must have one row per soundscape window")
        logits = predict_windows(best_model, lambda idx: soundscape_mels[idx],
                                 len(soundscape_mels), settings.batch_size * 2, dev, amp_dtype,
                                 progress, desc="soundscapes")
        probs = _sigmoid(logits) if len(logits) else np.zeros((0, len(classes)), np.float32)
        preds = soundscape_index[["row_id", "soundscape", "end_s"]].reset_index(drop=True)
        preds = pd.concat([preds, pd.DataFrame(probs, columns=classes)], axis=1)
        seen = set(seen_soundscapes or ())
        if n_labelled:
            seen |= set(labelled_windows.loc[labelled_windows["split"] == "train", "soundscape"]
                        .astype(str))
        preds["seen_in_training"] = preds["soundscape"].astype(str).isin(seen)
        write_parquet(out_dir / "soundscape_preds.parquet", preds)
        soundscape_auc, soundscape_windows = soundscape_score(preds, labelled_windows, classes)
    else:
        soundscape_auc, soundscape_windows = None, 0

    metrics = {
        "backbone": model_spec["backbone"],
        "fold": int(fold),
        "epochs": history,
        "best_epoch": best_epoch,
        "oof_auc": _finite(final_auc),
        "soundscape_auc": soundscape_auc,
        "soundscape_windows_scored": soundscape_windows,
        "val_loss": _finite(final_val_loss),
        "device": str(dev),
        "amp": amp_name,
        "threads": int(threads),
        "loader_workers": workers,
        "n_train": len(train_table),
        "n_val": len(val_table),
        "n_pseudo": n_pseudo,
        "n_labelled": n_labelled,
        "steps_per_epoch": steps_per_epoch,
        "resumed_from_epoch": resumed_from,
        "model_spec": model_spec,
        "settings": dataclasses.asdict(settings),
    }
    write_json(out_dir / "metrics.json", metrics)
    log.info("%s fold %d done: best epoch %d, OOF AUC %s, labelled-soundscape AUC %s (%d windows)",
             model_spec["backbone"], fold, best_epoch, "-" if final_auc is None else f"{final_auc:.4f}",
             "-" if soundscape_auc is None else f"{soundscape_auc:.4f}", soundscape_windows)
    return metrics


def _worker_init(worker_id: int) -> None:
    """Loader workers use one thread each (the model owns the other cores)."""
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- workflow stage


class _RowView:
    """Rows `rows` of a (memmapped) array, read lazily: pseudo windows without a copy."""

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *array.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return self.array[self.rows[index]]


def settings_from_config(values: Mapping[str, Any]) -> TrainSettings:
    """`TrainSettings` from the workflow's train settings (config train + round keys).

    Keys that are not training hyper-parameters (``round``) are dropped, and None
    (e.g. round 0's pseudo_weight) means the default.
    """
    known = {field.name for field in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in values.items() if k in known and v is not None})


def train_stage(
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    fold: int,
    tag: str,
    settings: Mapping[str, Any],
    backbone: Mapping[str, Any],
    upstream: Mapping[str, Any],
    mel: Mapping[str, Any],
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """The train stage: read the caches, run `train_fold`, write the manifest.

    `inputs`: mels, index, folds, soundscape_mels, soundscape_index, taxonomy and,
    from round 1, pseudo_labels (row_id, soundscape, end_s, one column per class).
    `outputs`: checkpoint (``<dir>/best.pt``), oof, soundscape_preds, metrics,
    curve, manifest; every output but the manifest must lie in one folder with
    the names `train_fold` writes. ``last.pt`` (for resuming) is written there too
    and is deliberately not a declared output, so that Snakemake keeps it when a
    job fails.
    """
    from birdclef.catalog import read_taxonomy
    from birdclef.common.manifest import StageManifest
    from birdclef.runtime.features import frames_per_second
    from birdclef.runtime.features import window_frames as mel_window_frames

    out_dir = Path(outputs["checkpoint"]).parent
    expected = {"checkpoint": "best.pt", "oof": "oof.parquet",
                "soundscape_preds": "soundscape_preds.parquet", "metrics": "metrics.json"}
    for key, name in expected.items():
        if key in outputs and Path(outputs[key]) != out_dir / name:
            raise ValueError(f"train output {key} must be {out_dir / name}, got {outputs[key]}")
    manifest = StageManifest("train", tag, {**settings, "backbone": dict(backbone), "fold": fold},
                             upstream, list(inputs.values()))
    classes = read_taxonomy(inputs["taxonomy"])
    model_spec = {
        "backbone": backbone["name"],
        "n_classes": len(classes),
        "in_chans": int(backbone.get("in_chans", MODEL_DEFAULTS["in_chans"])),
        "pretrained": bool(backbone.get("pretrained", MODEL_DEFAULTS["pretrained"])),
        "checkpoint": backbone.get("checkpoint"),
        "drop_rate": float(backbone.get("drop_rate", MODEL_DEFAULTS["drop_rate"])),
        "drop_path_rate": float(backbone.get("drop_path_rate", MODEL_DEFAULTS["drop_path_rate"])),
        # checked by build_model
        "normalization": mel.get("normalization") or MODEL_DEFAULTS["normalization"],
    }
    train_settings = settings_from_config(settings)
    mels = np.load(inputs["mels"], mmap_mode="r")
    mel_index = pd.read_parquet(inputs["index"])
    folds = pd.read_parquet(inputs["folds"])
    soundscape_mels = np.load(inputs["soundscape_mels"], mmap_mode="r")
    soundscape_index = pd.read_parquet(inputs["soundscape_index"])
    pseudo_mels = pseudo_labels = None
    seen_soundscapes: list[str] = []
    labelled = None
    if inputs.get("soundscape_labels"):
        labelled = pd.read_parquet(inputs["soundscape_labels"])
        labelled["row_id"] = labelled["row_id"].astype(str)
    if inputs.get("pseudo_labels"):
        labels = pd.read_parquet(inputs["pseudo_labels"])
        if settings.get("oof_by_soundscape"):
            # Out of fold by soundscape: this fold's soundscapes are left for this
            # model to label in the next round, so it trains on the others only.
            from birdclef.pseudo import soundscape_folds

            assignment = soundscape_folds(soundscape_index["soundscape"].astype(str),
                                          settings["soundscape_folds"],
                                          settings["soundscape_fold_seed"])
            held_out = labels["soundscape"].astype(str).map(assignment) == int(fold)
            labels = labels[~held_out].reset_index(drop=True)
            manifest.headline["pseudo_soundscapes_held_out"] = sorted(
                s for s, f in assignment.items() if f == int(fold))
        seen_soundscapes = sorted(labels["soundscape"].astype(str).unique())
        rows = window_positions(soundscape_index, labels["row_id"], inputs["soundscape_index"])
        pseudo_mels = _RowView(soundscape_mels, rows)
        pseudo_labels = labels[classes].to_numpy(dtype=np.float32)
    metrics = train_fold(
        mels, mel_index, folds, int(fold), classes, model_spec, train_settings,
        window_frames=mel_window_frames(mel),
        frames_per_second=frames_per_second(mel),
        out_dir=out_dir, threads=int(threads), device=device,
        soundscape_mels=soundscape_mels, soundscape_index=soundscape_index,
        pseudo_mels=pseudo_mels, pseudo_labels=pseudo_labels, progress=progress,
        seen_soundscapes=seen_soundscapes, labelled_windows=labelled,
    )
    manifest.headline.update({
        key: metrics[key] for key in ("oof_auc", "soundscape_auc", "soundscape_windows_scored",
                                      "best_epoch", "device", "amp", "n_train", "n_val",
                                      "n_pseudo", "n_labelled", "resumed_from_epoch")
    })
    manifest.headline["epochs_run"] = len(metrics["epochs"])
    manifest.headline["samples_per_s"] = (
        float(np.mean([h["samples_per_s"] for h in metrics["epochs"] if h["samples_per_s"]]))
        if metrics["epochs"] else None
    )
    manifest.write(outputs["manifest"])
    return metrics

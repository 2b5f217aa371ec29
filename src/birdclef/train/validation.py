"""Validation: predicting windows, and scoring a model on the validation recordings of a fold.

Validation predicts every non-overlapping window of a recording's first
``crop_seconds_max`` seconds (the last window is completed by tiling, as in
training) and takes the **mean** of the window probabilities as the recording
prediction: BirdCLEF training recordings usually carry the primary species
throughout, and the mean is steadier than the max on short validation folds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from birdclef.common.labels import build_targets
from birdclef.common.metrics import macro_roc_auc
from birdclef.common.progress import progress_bar
from birdclef.train.data import crop_frames, tiled_window, usable_frames
from birdclef.train.loss import example_loss_in_batches
from birdclef.train.run import autocast, to_input
from birdclef.train.settings import TrainSettings


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
    """Row logits (n_windows, K) float32 (`SEDModel.forward_rows`) for windows fetched by
    `windows(indices)`.

    `windows` returns float arrays (len(indices), n_mels, window_frames). With a model of
    ``context_windows`` m > 1, n_windows is a multiple of m and the windows come in runs of m
    consecutive windows of one recording (`birdclef.runtime.features.chunk_positions`); batches
    hold whole runs.
    """
    model.eval()
    outputs = []
    m = int(getattr(model, "context_windows", 1))
    if n_windows % m:
        raise ValueError(f"{n_windows} windows for a model that joins {m} consecutive windows: "
                         "expected a multiple (chunk_positions pads each recording)")
    batch_size = max(m, batch_size - batch_size % m)
    starts = range(0, n_windows, batch_size)
    for start in progress_bar(starts, desc=desc, disable=not progress, leave=False):
        indices = np.arange(start, min(n_windows, start + batch_size))
        batch = torch.from_numpy(np.asarray(windows(indices), dtype=np.float32))[:, None]
        with autocast(device, amp_dtype):
            logits = model.forward_rows(to_input(batch, device))
        outputs.append(logits.float().cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Probabilities (float32) of logits `x`, computed in float64."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


class ValidationWindows:
    """Every non-overlapping window of each validation recording's first crop_frames_max.

    With `context_windows` m > 1 each recording's count is rounded up to a multiple of m (the
    extra windows tile the recording, as training does), so a model joining m windows sees
    whole chunks of one recording; every window counts in the recording's mean.
    """

    def __init__(self, mels: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 window_frames: int, crop_frames_max: int, context_windows: int = 1) -> None:
        self.mels = mels
        self.window_frames = int(window_frames)
        usable = np.minimum(np.asarray(lengths, dtype=np.int64),
                            max(int(crop_frames_max), self.window_frames))
        counts = np.maximum(1, -(-usable // self.window_frames))
        m = int(context_windows)
        counts = -(-counts // m) * m
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
            out.append(np.asarray(tiled_window(frames, int(self.start[i]), self.window_frames),
                                  dtype=np.float32).T)
        return np.stack(out)


@dataclass
class ValidationSet:
    """The validation recordings of one fold, as training scores them."""

    table: pd.DataFrame
    windows: ValidationWindows
    soft: np.ndarray
    binary: np.ndarray


def validation_set(mels: np.ndarray, val_table: pd.DataFrame, classes: Sequence[str],
                   settings: TrainSettings, window_frames: int,
                   frames_per_second: float, context_windows: int = 1) -> ValidationSet:
    """Windows and targets of the validation recordings `val_table` (see `split_fold`)."""
    soft, binary = build_targets(val_table, classes, settings.secondary_weight)
    usable = usable_frames(val_table, crop_frames(settings, window_frames, frames_per_second))
    windows = ValidationWindows(mels, val_table["offset"].to_numpy(np.int64), usable,
                                window_frames, int(usable.max(initial=0)), context_windows)
    return ValidationSet(val_table, windows, soft, binary)


def validate(model, windows: ValidationWindows, n_recordings: int, soft: np.ndarray,
             binary: np.ndarray, settings: TrainSettings, device, amp_dtype, progress,
             columns: np.ndarray | None = None):
    """(recording probabilities (n, K), validation loss, OOF macro AUC).

    With `columns` (a specialist's classes) the loss and the AUC cover those columns only;
    the probabilities keep every column.
    """
    logits = predict_windows(model, windows, len(windows), settings.batch_size * 2, device,
                             amp_dtype, progress, desc="validate")
    window_targets = torch.from_numpy(soft[windows.recording])
    scored = torch.from_numpy(logits)
    if columns is not None:
        scored, window_targets = scored[:, columns], window_targets[:, columns]
        binary = binary[:, columns]
    loss = float(example_loss_in_batches(scored, window_targets, settings,
                                         settings.batch_size).mean())
    probs = sigmoid(logits)
    sums = np.zeros((n_recordings, probs.shape[1]), dtype=np.float64)
    np.add.at(sums, windows.recording, probs)
    counts = np.bincount(windows.recording, minlength=n_recordings)[:, None]
    recording_probs = (sums / counts).astype(np.float32)
    auc = macro_roc_auc(binary, recording_probs if columns is None else recording_probs[:, columns])
    return recording_probs, loss, auc

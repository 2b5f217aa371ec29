"""Training data: the fold split, random crops of the mel cache, and the batches they form.

- Training examples are random crops of ``window_frames`` frames from the first
  ``crop_seconds_max`` seconds of a recording (all of its cached seconds when the
  mel index marks it ``rare``: see `usable_frames`); a recording shorter than a
  window is tiled (repeated) to the window length.
- Every random choice of an epoch (which recordings, which crops, which masks,
  mixup) is derived from ``(seed + fold, epoch)``, so a resumed run draws the same
  batches as an uninterrupted one, whatever the number of loader workers.
- Label smoothing (``y * (1 - eps) + eps / 2``) applies to recording targets only;
  pseudo labels are already soft.
- FilterAugment (setting ``filter_augment``, function `filter_augment`) draws from its own stream of
  the example's seed, so crops and masks are those of the same run without it.
- With ``context_windows`` m > 1 (``train.backbones[].context_seconds``, 10 or 20 s with
  5 s rows) an example is m rows long: a recording crop of m x ``window_frames`` frames, and a
  soundscape window joined with its neighbours into the chunk of m consecutive windows that
  holds it on the grid inference uses (chunk j = windows jm .. jm + m - 1 of its file;
  `context_chunks`), whose target is the element-wise maximum of the m windows' labels (the
  labels' union, as for a recording's clip).
- Waveform augmentation (setting ``wave_augment``, `birdclef.train.wave_augment`) replaces a
  recording crop's cached log-mel by one computed from its augmented audio, drawn from a third
  stream of the example's seed; it comes before FilterAugment and the masks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from birdclef.common.labels import PRETRAIN_ONLY_FOLD
from birdclef.runtime.audio import BadAudioError
from birdclef.train.distill import TeacherTargets
from birdclef.train.settings import TrainSettings
from birdclef.train.wave_augment import WAVE_STREAM, WaveAugmenter

log = logging.getLogger(__name__)


def tiled_window(frames: np.ndarray, start: int, size: int) -> np.ndarray:
    """`size` consecutive rows of `frames` from `start`, wrapping around (tiling)."""
    n = frames.shape[0]
    if n == 0:
        raise ValueError("empty recording")
    if start + size <= n:
        return frames[start : start + size]
    rows = (start + np.arange(size)) % n
    return frames[rows]


# The FilterAugment stream of an example: np.random.default_rng([seed, FILTER_STREAM]).
FILTER_STREAM = 1


def filter_augment(mel: np.ndarray, rng: np.random.Generator, max_db: float,
                   bands: tuple[int, int] | list[int]) -> np.ndarray:
    """Random band gains on a (n_mels, frames) log-mel in dB: FilterAugment's "linear" mode
    (Nam et al., "FilterAugment: An Acoustic Environmental Data Augmentation Method",
    ICASSP 2022).

    n ~ U{min, max} bands (at most n_mels - 1): n - 1 distinct boundaries drawn among the
    mel bins 1 .. n_mels - 2, plus bins 0 and n_mels - 1; each of the n + 1 boundaries gets
    a gain ~ U[-max_db, +max_db] dB, and the gain of every bin is the linear interpolation
    between its two boundaries, added to every frame.
    """
    n_mels = mel.shape[0]
    n_bands = min(int(rng.integers(bands[0], bands[1] + 1)), max(1, n_mels - 1))
    inner = np.sort(rng.choice(np.arange(1, n_mels - 1), size=n_bands - 1, replace=False))
    boundaries = np.concatenate([[0], inner, [n_mels - 1]])
    gains = rng.uniform(-max_db, max_db, size=n_bands + 1)
    curve = np.interp(np.arange(n_mels), boundaries, gains).astype(mel.dtype)
    return mel + curve[:, None]


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


class RowView:
    """Rows `rows` of a (memmapped) array, read lazily: pseudo windows without a copy."""

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *array.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return self.array[self.rows[index]]


def context_chunks(soundscapes: np.ndarray, positions: np.ndarray, context_windows: int) -> np.ndarray:
    """(n, m) rows of the chunk of m = `context_windows` consecutive windows holding each window.

    Window i is window ``positions[i]`` (0, 1, ...) of soundscape ``soundscapes[i]``; its chunk is
    windows m * (positions[i] // m) .. + m - 1 of that soundscape (the grid inference cuts), each
    given as its row in these arrays, or row i itself where the set lacks that window (e.g. the
    end of a file whose length is not a multiple of m).
    """
    names = np.asarray(soundscapes).astype(str)
    positions = np.asarray(positions, dtype=np.int64)
    m = int(context_windows)
    where = {(name, int(k)): i for i, (name, k) in enumerate(zip(names, positions, strict=True))}
    chunks = np.empty((len(names), m), dtype=np.int64)
    for i, (name, k) in enumerate(zip(names, positions, strict=True)):
        first = int(k) - int(k) % m
        chunks[i] = [where.get((name, first + j), i) for j in range(m)]
    return chunks


class TrainWindows(Dataset):
    """Training examples, addressed by keys ``(source, index, seed)`` from `EpochBatchSampler`.

    source 0: a random crop of recording `index` (row of the training index);
    source 1: pseudo-labelled window `index`; source 2: labelled soundscape window
    `index` (train_soundscapes_labels.csv). `seed` drives the crop and the masks.
    Returns (mel (1, n_mels, window_frames) float32, target (K,) float32, weight); with
    `teacher` (distillation) also the teacher's embedding (D,), mapped logits (K,) and a
    0/1 flag saying whether the example has a teacher window.
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
        teacher: TeacherTargets | None = None,
        wave: WaveAugmenter | None = None,
        context_windows: int = 1,
        pseudo_chunks: np.ndarray | None = None,
        labelled_chunks: np.ndarray | None = None,
    ) -> None:
        self.source = _MelSource(mels)
        self.context_windows = int(context_windows)
        if self.context_windows > 1 and ((pseudo_mels is not None and pseudo_chunks is None) or (
                labelled_mels is not None and labelled_chunks is None)):
            raise ValueError("context_windows > 1 needs the chunks of the soundscape windows (context_chunks)")
        self.pseudo_chunks = pseudo_chunks
        self.labelled_chunks = labelled_chunks
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        eps = settings.label_smoothing
        self.targets = (targets * (1.0 - eps) + eps / 2.0).astype(np.float32)
        self.window_frames = int(window_frames) * self.context_windows  # one example's frames
        self.crop_frames_max = max(int(crop_frames_max), self.window_frames)
        self.spec_augment = settings.spec_augment
        self.filter_prob = float(settings.filter_augment)
        self.filter_db = float(settings.filter_augment_db)
        self.filter_bands = tuple(settings.filter_augment_bands)
        self.pseudo_weight = float(settings.pseudo_weight)
        self.pseudo_mels = pseudo_mels
        # A copy: pandas (copy-on-write) hands out read-only arrays, which torch warns about.
        self.pseudo_labels = None if pseudo_labels is None else np.array(pseudo_labels,
                                                                         dtype=np.float32)
        self.labelled_weight = float(settings.labelled_weight)
        self.labelled_mels = labelled_mels
        self.labelled_targets = None if labelled_targets is None else np.array(
            labelled_targets, dtype=np.float32)
        self.teacher = teacher
        self.wave = wave  # waveform augmentation of recording crops (None: off)
        self.wave_prob = float(settings.wave_augment.prob) if wave is not None else 0.0
        self.wave_failed = 0  # crops whose audio could not be read (the cached crop is used)

    def __len__(self) -> int:
        return (len(self.offsets) + (0 if self.pseudo_mels is None else len(self.pseudo_mels))
                + (0 if self.labelled_mels is None else len(self.labelled_mels)))

    def crop(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """A random (n_mels, window_frames) crop from the recording's first crop_frames_max."""
        return self.crop_at(index, rng)[0]

    def crop_at(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """`crop` and the frame it starts at."""
        usable = int(min(self.lengths[index], self.crop_frames_max))
        offset = int(self.offsets[index])
        frames = self.source.mels[offset : offset + usable]
        start = int(rng.integers(0, usable - self.window_frames + 1)) if (
            usable > self.window_frames) else 0
        return np.asarray(tiled_window(frames, start, self.window_frames), dtype=np.float32).T, start

    def wave_crop(self, mel: np.ndarray, index: int, start: int, seed: int) -> np.ndarray:
        """The crop of recording `index` at frame `start` computed from its audio, augmented, with
        probability ``wave_augment.prob`` (else, or when its audio cannot be read, `mel`)."""
        wave_rng = np.random.default_rng([seed, WAVE_STREAM])
        if wave_rng.random() >= self.wave_prob:
            return mel
        usable = int(min(self.lengths[index], self.crop_frames_max))
        try:
            return self.wave.window(self.source.mels, index, start, usable, self.window_frames, wave_rng)
        except BadAudioError as error:
            self.wave_failed += 1
            log.warning("wave_augment: keeping the cached crop of an unreadable recording: %s", error)
            return mel

    def window_example(self, mels, targets: np.ndarray, chunks: np.ndarray | None,
                       index: int) -> tuple[np.ndarray, np.ndarray]:
        """Soundscape window `index` (its chunk of m windows, joined in time, when m > 1) and target."""
        if self.context_windows == 1:
            return np.asarray(mels[index], dtype=np.float32), targets[index]
        rows = chunks[index]
        windows = np.asarray(mels[rows], dtype=np.float32)  # (m, n_mels, frames)
        mel = windows.transpose(1, 0, 2).reshape(windows.shape[1], -1)
        return mel, targets[rows].max(axis=0)

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

    def __getitem__(self, key: tuple[int, int, int]) -> tuple:
        source, index, seed = key
        rng = np.random.default_rng(seed)
        start = 0
        if source == 0:
            mel, start = self.crop_at(index, rng)
            if self.wave_prob > 0:
                mel = self.wave_crop(mel, index, start, seed)
            target = self.targets[index]
            weight = 1.0
        elif source == 1:
            mel, target = self.window_example(self.pseudo_mels, self.pseudo_labels, self.pseudo_chunks, index)
            weight = self.pseudo_weight
        else:
            mel, target = self.window_example(self.labelled_mels, self.labelled_targets,
                                              self.labelled_chunks, index)
            weight = self.labelled_weight
        if self.filter_prob > 0:
            filter_rng = np.random.default_rng([seed, FILTER_STREAM])
            if filter_rng.random() < self.filter_prob:
                mel = filter_augment(mel, filter_rng, self.filter_db, self.filter_bands)
        if self.spec_augment:
            mel = self.augment(mel, rng)
        item = (torch.from_numpy(np.ascontiguousarray(mel))[None], torch.from_numpy(target), weight)
        if self.teacher is None:
            return item
        if source != 0 and self.context_windows > 1:  # the window holding the chunk's centre
            chunks = self.pseudo_chunks if source == 1 else self.labelled_chunks
            index = int(chunks[index][self.context_windows // 2])
        embedding, logits, has = self.teacher.get(self.teacher.row(source, index, start, self.window_frames))
        return (*item, torch.from_numpy(embedding), torch.from_numpy(logits), has)


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


def collate(batch: list[tuple]):
    """Stack `TrainWindows` items into (mels, targets, weights) tensors, followed by (teacher
    embeddings, teacher logits, teacher flags) when the items carry them."""
    columns = list(zip(*batch, strict=True))
    stacked = [torch.stack(columns[0]), torch.stack(columns[1]), torch.tensor(columns[2], dtype=torch.float32)]
    if len(columns) == 6:
        stacked += [torch.stack(columns[3]), torch.stack(columns[4]), torch.tensor(columns[5], dtype=torch.float32)]
    return tuple(stacked)


def loader_workers(threads: int, device: torch.device) -> int:
    """DataLoader workers for `threads` cores.

    Crops are cheap memmap slices, so loading runs in the main process (0 workers)
    on CPU with <= 2 threads, where every core is better spent on the model; with
    more cores one core stays with the model and up to 4 load batches.
    """
    if threads <= 2:
        return 0
    return min(4, threads - 1) if device.type == "cuda" else min(2, threads // 4)


def worker_init(worker_id: int) -> None:
    """Loader workers use one thread each (the model owns the other cores)."""
    torch.set_num_threads(1)


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


def split_fold(mel_index: pd.DataFrame, folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, validation) recordings of `fold`: the mel index joined with the fold table.

    Validation is fold == `fold`; training is the rest (fold -1 rows always
    train). `fold=-1` trains on everything without validation. Pretrain-only
    rows (fold -2, `birdclef.common.labels.PRETRAIN_ONLY_FOLD`) are in neither.
    """
    table = mel_index.drop(columns=["fold"], errors="ignore").reset_index(drop=True).merge(
        folds[["filename", "fold"]], on="filename", how="left", validate="one_to_one"
    )
    if table["fold"].isna().any():
        missing = table.loc[table["fold"].isna(), "filename"].head(5).tolist()
        raise ValueError(f"{int(table['fold'].isna().sum())} recordings of the mel index have "
                         f"no fold, e.g. {missing}")
    table["fold"] = table["fold"].astype(int)
    table = table[table["fold"] != PRETRAIN_ONLY_FOLD].reset_index(drop=True)
    if fold == -1:
        return table, table.iloc[0:0]
    return (table[table["fold"] != fold].reset_index(drop=True),
            table[table["fold"] == fold].reset_index(drop=True))


def crop_frames(settings: TrainSettings, window_frames: int, frames_per_second: float) -> int:
    """Frames of a recording that crops and validation windows come from (at least one window)."""
    return max(int(round(settings.crop_seconds_max * frames_per_second)), int(window_frames))

"""Distillation from the teacher (`birdclef.teacher`): its embedding and its mapped logits.

Each training example gets the teacher's outputs for its window: a recording
crop takes the teacher window that holds the crop's centre (the teacher cached
every `window_seconds` window of the recording's cached seconds); a
pseudo-labelled or labelled soundscape window takes the teacher window with the
same row_id. Two terms join the loss, each with its weight (0 turns it off):

- embedding distillation: a linear projection of the student's pooled features
  (`SEDModel.forward_with_features`) onto the teacher's embedding, trained with
  a cosine loss 1 - cos(projection, teacher). The projection lives beside the
  model, not in it: checkpoints, soups and the export never see it;
- logit distillation: on the classes the teacher knows (mapped by scientific
  name), BCE of the student's clip logits / T against sigmoid(teacher logit / T),
  times T^2 (temperature T), averaged over those classes.

Examples without a teacher window (a file the teacher could not decode) carry
a zero mask and add nothing. Mixup mixes the teacher's embeddings with the
mixup weight and takes the maximum of its logits, as the labels take their union.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional


@dataclass
class TeacherCache:
    """The teacher stage's artifact: embeddings (n, D), mapped logits (n, K), index (memory-mapped)."""

    embeddings: np.ndarray
    logits: np.ndarray
    index: pd.DataFrame

    @classmethod
    def load(cls, paths: Mapping[str, str | os.PathLike]) -> TeacherCache:
        """From the paths ``teacher_embeddings``, ``teacher_logits`` and ``teacher_index``."""
        cache = cls(np.load(paths["teacher_embeddings"], mmap_mode="r"),
                    np.load(paths["teacher_logits"], mmap_mode="r"),
                    pd.read_parquet(paths["teacher_index"]))
        if not len(cache.embeddings) == len(cache.logits) == len(cache.index):
            raise ValueError(f"{paths['teacher_index']}: {len(cache.index)} rows but "
                             f"{len(cache.embeddings)} embeddings and {len(cache.logits)} logits: "
                             "expected one of each per window (rerun the teacher stage)")
        return cache

    @property
    def window_seconds(self) -> float:
        """The length of the teacher's windows (5 s)."""
        first = self.index.iloc[0] if len(self.index) else None
        return 5.0 if first is None else float(first["end_s"] - first["start_s"])

    def targets(self, recordings: Sequence[str], pseudo_rows: Sequence[str], labelled_rows: Sequence[str],
                frames_per_second: float) -> TeacherTargets:
        """The lookup of these training examples' teacher windows."""
        return TeacherTargets(self.embeddings, self.logits, self.index, recordings, pseudo_rows,
                              labelled_rows, self.window_seconds, frames_per_second)


class TeacherTargets:
    """The teacher's embedding and mapped logits of every training example, by lookup.

    `embeddings` (n, D) and `logits` (n, K) are the teacher artifact's arrays and
    `index` its index (source, filename, row_id, window); `recordings` the
    filenames of the training table in row order, `pseudo_rows` and
    `labelled_rows` the row_ids of the pseudo-labelled and labelled windows.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        logits: np.ndarray,
        index: pd.DataFrame,
        recordings: Sequence[str],
        pseudo_rows: Sequence[str] = (),
        labelled_rows: Sequence[str] = (),
        window_seconds: float = 5.0,
        frames_per_second: float = 62.5,
    ) -> None:
        self.embeddings, self.logits = embeddings, logits
        self.window_frames_teacher = window_seconds * frames_per_second
        # classes the teacher knows: a NaN logit column is an unmapped class
        self.class_mask = ~np.isnan(np.asarray(logits[:1] if len(logits) else logits, np.float32)).all(axis=0)
        position = pd.Series(np.arange(len(index)), index=index["row_id"].astype(str).to_numpy())
        position = position[~position.index.duplicated()]
        recording = index[index["source"] == "recording"]
        first = recording.groupby("filename", sort=False)["window"].idxmin()
        count = recording.groupby("filename", sort=False).size()
        names = pd.Index(list(recordings))
        self.first_row = first.reindex(names).fillna(-1).to_numpy(np.int64)
        self.windows = count.reindex(names).fillna(0).to_numpy(np.int64)
        self.pseudo_row = position.reindex(list(pseudo_rows)).fillna(-1).to_numpy(np.int64)
        self.labelled_row = position.reindex(list(labelled_rows)).fillna(-1).to_numpy(np.int64)

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def coverage(self) -> dict[str, float]:
        """Share of recordings, pseudo and labelled windows that have a teacher window."""
        def share(rows: np.ndarray) -> float:
            return float((rows >= 0).mean()) if len(rows) else 1.0
        return {"recordings": share(self.first_row), "pseudo": share(self.pseudo_row),
                "labelled": share(self.labelled_row), "classes": float(self.class_mask.mean())}

    def row(self, source: int, index: int, crop_start: int = 0, crop_frames: int = 0) -> int:
        """The teacher row of an example (-1: none): source 0 a recording crop, 1 pseudo, 2 labelled."""
        if source == 1:
            return int(self.pseudo_row[index])
        if source == 2:
            return int(self.labelled_row[index])
        if self.first_row[index] < 0:
            return -1
        centre = crop_start + crop_frames / 2.0
        window = min(int(centre // self.window_frames_teacher), int(self.windows[index]) - 1)
        return int(self.first_row[index] + max(window, 0))

    def get(self, row: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(embedding (D,) float32, logits (K,) float32 with unmapped classes 0, has-teacher 0/1)."""
        if row < 0:
            return (np.zeros(self.embeddings.shape[1], np.float32),
                    np.zeros(self.logits.shape[1], np.float32), 0.0)
        logits = np.nan_to_num(np.asarray(self.logits[row], dtype=np.float32), nan=0.0)
        return np.asarray(self.embeddings[row], dtype=np.float32), logits, 1.0


class Projection(nn.Module):
    """The student's pooled features -> the teacher's embedding space (dropped at export)."""

    def __init__(self, in_features: int, teacher_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, teacher_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def embedding_loss(projected: torch.Tensor, teacher: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Per-example 1 - cos(projected, teacher), 0 where `has` is 0."""
    cosine = functional.cosine_similarity(projected.float(), teacher.float(), dim=1, eps=1e-6)
    return (1.0 - cosine) * has


def logit_loss(student: torch.Tensor, teacher: torch.Tensor, class_mask: torch.Tensor, has: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """Per-example soft-target BCE on the mapped classes at temperature T, times T^2."""
    if not bool(class_mask.any()):
        return torch.zeros(len(student), device=student.device)
    t = float(temperature)
    soft = torch.sigmoid(teacher.float()[:, class_mask] / t)
    loss = functional.binary_cross_entropy_with_logits(student.float()[:, class_mask] / t, soft,
                                                       reduction="none").mean(dim=1)
    return loss * (t * t) * has


def mix_teacher(embeddings: torch.Tensor, logits: torch.Tensor, has: torch.Tensor, lam: float,
                perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup of the teacher targets: embeddings mixed with `lam`, logits maxed (the union), and an
    example keeps a teacher target only when both of its parts have one."""
    mixed = lam * embeddings + (1.0 - lam) * embeddings[perm]
    return mixed, torch.maximum(logits, logits[perm]), has * has[perm]


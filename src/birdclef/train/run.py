"""The set-up of one fold's run: seeds, threads, device and mixed precision, and `FoldRun`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdclef.train.settings import TrainSettings


@dataclass
class FoldRun:
    """What every step of one `train_fold` call reads: the model, the data's shape, where it runs."""

    fold: int
    classes: list[str]
    model_spec: dict[str, Any]
    settings: TrainSettings
    window_frames: int
    frames_per_second: float
    out_dir: Path
    base_seed: int
    dev: torch.device
    amp_dtype: torch.dtype | None
    threads: int
    progress: bool
    columns: np.ndarray | None = None  # a specialist's class columns (indices into classes); None: all
    upsample: float = 1.0  # a specialist's sampling factor for recordings with one of its classes

    @property
    def backbone(self) -> str:
        return self.model_spec["backbone"]

    @property
    def context_windows(self) -> int:
        """Rows (windows) one example spans: the model spec's ``context_windows`` (1: one window)."""
        return int(self.model_spec.get("context_windows", 1))

    @property
    def amp_name(self) -> str | None:
        return {None: None, torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"


def resolve_device(device: str) -> torch.device:
    """The torch device of config ``train.device``: ``auto`` is CUDA when there is one."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_and_device(settings: TrainSettings, fold: int, threads: int,
                    device: str) -> tuple[int, torch.device, torch.dtype | None]:
    """Seed every generator with ``seed + fold``, set the threads: (seed, device, amp dtype)."""
    base_seed = (int(settings.seed) + int(fold)) % 2**32
    random.seed(base_seed)
    np.random.seed(base_seed)
    torch.manual_seed(base_seed)
    torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    amp_dtype: torch.dtype | None = None
    if dev.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return base_seed, dev, amp_dtype


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """Mixed precision with `amp_dtype` on `device`; None: full precision."""
    if amp_dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def to_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A mel batch on `device` (channels-last on CUDA), as the model takes it."""
    batch = batch.to(device, non_blocking=True)
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch

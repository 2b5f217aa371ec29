"""The training objective: power-domain mixup, BCE / focal losses and the learning-rate schedule.

The loss is computed on the clip-wise (attention-pooled) logits. Each example
carries a weight (1 for recordings, ``pseudo_weight`` for pseudo-labelled
windows); the batch loss is the mean of weight x per-example loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional

from birdclef.train.settings import TrainSettings


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

"""The training objective: power-domain mixup, the losses and the learning-rate schedule.

The loss is computed on the clip-wise (attention-pooled) logits. Each example
carries a weight (1 for recordings, ``pseudo_weight`` for pseudo-labelled
windows); the batch loss is the mean of weight x per-example loss. Losses
(``train.loss``): BCE, focal, ASL (element-wise, then the mean over classes),
soft-AUC (pairwise over the batch, spread onto its examples: `soft_auc_loss`),
and the blends bce+focal and bce+soft_auc.
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


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = 4.0,
                    gamma_pos: float = 0.0, clip: float = 0.05) -> torch.Tensor:
    """Asymmetric loss (ASL; Ridnik et al., "Asymmetric Loss For Multi-Label Classification",
    ICCV 2021) per element, with soft targets y:

        -[ y (1 - p)^gamma_pos log p  +  (1 - y) p_m^gamma_neg log(1 - p_m) ],
        p = sigmoid(logit),  p_m = max(p - clip, 0)  (the shifted probability of negatives).

    With both gammas 0 and clip 0 it is BCE. The focusing factors are not detached.
    """
    prob = torch.sigmoid(logits)
    if clip > 0:
        shifted = torch.clamp(prob - clip, min=0.0)
        log_neg = torch.log(torch.clamp(1.0 - shifted, min=1e-8))
    else:
        shifted = prob
        log_neg = functional.logsigmoid(-logits)
    positive = targets * functional.logsigmoid(logits)
    negative = (1.0 - targets) * log_neg
    if gamma_pos > 0:
        positive = positive * (1.0 - prob).pow(gamma_pos)
    if gamma_neg > 0:
        negative = negative * shifted.pow(gamma_neg)
    return -(positive + negative)


def soft_auc_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise soft-AUC loss of a batch, spread onto its examples: (B,) values whose mean is
    the batch loss.

    For class k, every ordered pair (i, j), i != j, of the batch weighs
    w_ijk = y_ik (1 - y_jk) (soft labels: a 0.5 target is half positive, half negative) and
    costs the pairwise logistic loss log(1 + exp(-(s_ik - s_jk))) of the logits s, the
    AUC-consistent surrogate of Gao & Zhou, "On the Consistency of AUC Pairwise Optimization"
    (IJCAI 2015) (RankNet's pair loss, Burges et al. 2005). The class loss is the weighted
    mean over pairs, L_k = sum_ij w_ijk l_ijk / sum_ij w_ijk, and the batch loss the mean of
    L_k over the classes with pair weight (both positive and negative mass) in the batch;
    with none, the loss is 0. Spreading: half of each pair's share w_ijk l_ijk / (W_k n_k)
    goes to i and half to j, times B, so the per-example values average to the batch loss
    and an example's weight scales the pairs it is in.
    """
    batch = logits.shape[0]
    diff = logits[:, None, :] - logits[None, :, :]  # (i, j, k): s_ik - s_jk
    pair_weight = targets[:, None, :] * (1.0 - targets[None, :, :])
    pair_weight = pair_weight * (1.0 - torch.eye(batch, device=logits.device, dtype=logits.dtype))[:, :, None]
    class_weight = pair_weight.sum(dim=(0, 1))  # W_k
    present = class_weight > 1e-6
    n_present = present.sum().clamp(min=1)  # no class with pairs: every share is 0
    share = pair_weight * functional.softplus(-diff) / torch.where(present, class_weight, 1.0)
    per_class = 0.5 * (share.sum(dim=1) + share.sum(dim=0))  # (B, K): each pair split in two
    return batch * (per_class * present).sum(dim=1) / n_present


PAIRWISE_LOSSES = ("soft_auc", "bce+soft_auc")


def example_loss(
    logits: torch.Tensor, targets: torch.Tensor, settings: TrainSettings
) -> torch.Tensor:
    """Per-example loss of `settings.loss`, in float32: element-wise losses are averaged over
    classes; soft-AUC is the batch's pairwise loss spread onto its examples (`soft_auc_loss`)."""
    logits = logits.float()
    targets = targets.float()
    if settings.loss == "soft_auc":
        return soft_auc_loss(logits, targets)
    if settings.loss == "focal":
        return focal_loss(logits, targets, settings.focal_gamma).mean(dim=1)
    if settings.loss == "asl":
        return asymmetric_loss(logits, targets, settings.asl_gamma_neg, settings.asl_gamma_pos,
                               settings.asl_clip).mean(dim=1)
    bce = functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if settings.loss == "bce+focal":
        w = settings.focal_weight
        return ((1.0 - w) * bce + w * focal_loss(logits, targets, settings.focal_gamma)).mean(dim=1)
    if settings.loss == "bce+soft_auc":
        w = settings.soft_auc_weight
        return (1.0 - w) * bce.mean(dim=1) + w * soft_auc_loss(logits, targets)
    return bce.mean(dim=1)


def example_loss_in_batches(logits: torch.Tensor, targets: torch.Tensor, settings: TrainSettings,
                            batch_size: int) -> torch.Tensor:
    """`example_loss` of many examples (validation): pairwise losses in batches of at most
    `batch_size`, each taking every n-th example (n batches), so a batch mixes recordings
    as training batches do; element-wise losses do not depend on the batching."""
    if settings.loss not in PAIRWISE_LOSSES or len(logits) <= batch_size:
        return example_loss(logits, targets, settings)
    n_batches = math.ceil(len(logits) / batch_size)
    loss = torch.empty(len(logits), dtype=torch.float32)
    for start in range(n_batches):
        rows = torch.arange(start, len(logits), n_batches)
        loss[rows] = example_loss(logits[rows], targets[rows], settings).cpu()
    return loss


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))

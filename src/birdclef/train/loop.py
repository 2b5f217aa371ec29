"""The epoch loop: the model with its optimizer and schedule, one epoch of steps, its history entry."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from birdclef.common.progress import progress_bar
from birdclef.train.data import EpochBatchSampler
from birdclef.train.distill import Projection, embedding_loss, logit_loss, mix_teacher
from birdclef.train.loss import example_loss, lr_factor, mix_batch, mixup_permutation
from birdclef.train.model import build_model, init_backbone_from
from birdclef.train.run import FoldRun, autocast, to_input
from birdclef.train.settings import TrainSettings
from birdclef.train.validation import ValidationSet, validate

log = logging.getLogger(__name__)


@dataclass
class Optimization:
    """The model and what trains it: optimizer, learning-rate schedule, gradient scaler, and with
    distillation the projection onto the teacher's embedding and the classes the teacher knows."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    projection: torch.nn.Module | None = None
    class_mask: torch.Tensor | None = None


def build_optimization(model_spec: Mapping[str, Any], settings: TrainSettings, dev: torch.device,
                       amp_dtype: torch.dtype | None, steps_per_epoch: int,
                       teacher_dim: int | None = None, class_mask: np.ndarray | None = None,
                       init_from: str | None = None) -> Optimization:
    """A fresh model on `dev`, its optimizer, the warmup + cosine schedule and the grad scaler.

    `init_from` (the pretrain stage's ``best.pt``) replaces the backbone's initial weights;
    the head keeps its fresh initialisation.

    With a teacher (`teacher_dim`, `class_mask`: distillation on) and an embedding weight, a
    projection of the pooled features onto the teacher's embedding trains alongside the model.
    """
    model = build_model(model_spec)
    if init_from:
        init_backbone_from(model, init_from)
        log.info("backbone initialised from the pretrain checkpoint %s (head re-initialised)", init_from)
    model = model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    projection = None
    if teacher_dim and settings.distill_embedding_weight > 0:
        projection = Projection(model.num_features, int(teacher_dim)).to(dev)
    parameters = list(model.parameters()) + ([] if projection is None else list(projection.parameters()))
    if settings.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=settings.lr,
                                      weight_decay=settings.weight_decay)
    else:
        optimizer = torch.optim.RAdam(parameters, lr=settings.lr,
                                      weight_decay=settings.weight_decay,
                                      decoupled_weight_decay=True)
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = int(round(settings.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    mask = None if class_mask is None else torch.as_tensor(np.asarray(class_mask, dtype=bool), device=dev)
    return Optimization(model, optimizer, scheduler, scaler, projection, mask)


def distill_loss(opt: Optimization, settings: TrainSettings, logits: torch.Tensor, pooled: torch.Tensor,
                 teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Per-example distillation loss: weighted embedding (cosine) and logit (soft BCE) terms."""
    embeddings, teacher_logits, has = teacher
    loss = torch.zeros(len(logits), device=logits.device)
    if opt.projection is not None:
        projected = opt.projection(pooled.float())
        loss = loss + settings.distill_embedding_weight * embedding_loss(projected, embeddings, has)
    if settings.distill_logit_weight > 0 and opt.class_mask is not None:
        loss = loss + settings.distill_logit_weight * logit_loss(
            logits, teacher_logits, opt.class_mask, has, settings.distill_temperature)
    return loss


def _optimizer_step(opt: Optimization, loss: torch.Tensor) -> float:
    """Backward and step on `loss`; the learning rate the step used."""
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    step_lr = float(opt.optimizer.param_groups[0]["lr"])
    opt.scheduler.step()
    return step_lr


def train_steps(run: FoldRun, opt: Optimization, sampler: EpochBatchSampler, loader: DataLoader,
                epoch: int, mix_rng: np.random.Generator) -> tuple[float, int, float]:
    """The optimizer steps of one epoch: (loss sum, examples seen, lr of the last step)."""
    settings, dev = run.settings, run.dev
    loss_sum, seen = 0.0, 0
    step_lr = float(opt.optimizer.param_groups[0]["lr"])
    bar = progress_bar(loader, desc=f"{run.backbone} fold {run.fold} epoch {epoch}",
                       disable=not run.progress, leave=False)
    for x, y, w, *teacher in bar:
        if settings.mixup_alpha > 0 and mix_rng.random() < settings.mixup_prob:
            lam = float(mix_rng.beta(settings.mixup_alpha, settings.mixup_alpha))
            perm = torch.from_numpy(mixup_permutation(
                mix_rng, len(x), len(x) - sampler.windows_per_batch, settings.mix_pseudo))
            x, y, w = mix_batch(x, y, w, lam, perm)
            if teacher:
                teacher = list(mix_teacher(*teacher, lam, perm))
        x = to_input(x, dev)
        y = y.to(dev, non_blocking=True)
        w = w.to(dev, non_blocking=True)
        with autocast(dev, run.amp_dtype):
            if teacher:
                logits, _, pooled = opt.model.forward_with_features(x)
            else:
                logits, _ = opt.model(x)
        if run.columns is None:
            per_example = example_loss(logits, y, settings) * w
        else:  # a specialist learns its own classes only
            per_example = example_loss(logits[:, run.columns], y[:, run.columns], settings) * w
        if teacher:
            teacher = tuple(t.to(dev, non_blocking=True) for t in teacher)
            per_example = per_example + distill_loss(opt, settings, logits, pooled, teacher)
        loss = per_example.mean()
        step_lr = _optimizer_step(opt, loss)
        loss_sum += float(loss.detach()) * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    return loss_sum, seen, step_lr


def finite(value: float | None) -> float | None:
    """`value` as a float, or None when it is None, NaN or infinite (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


def run_epoch(run: FoldRun, opt: Optimization, sampler: EpochBatchSampler, loader: DataLoader,
              validation: ValidationSet, epoch: int) -> tuple[dict[str, Any], float, float | None]:
    """Train and validate one epoch: (history entry, training loss, validation loss)."""
    opt.model.train()
    sampler.set_epoch(epoch)
    mix_rng = np.random.default_rng([run.base_seed, epoch, 1])
    started = time.perf_counter()
    loss_sum, seen, step_lr = train_steps(run, opt, sampler, loader, epoch, mix_rng)
    train_seconds = time.perf_counter() - started
    train_loss = loss_sum / max(seen, 1)
    val_loss = auc = None
    if not validation.table.empty:
        _, val_loss, auc = validate(opt.model, validation.windows, len(validation.table),
                                    validation.soft, validation.binary, run.settings, run.dev,
                                    run.amp_dtype, run.progress, run.columns)
    seconds = time.perf_counter() - started
    entry = {
        "epoch": epoch,
        "train_loss": float(train_loss),
        "val_loss": finite(val_loss),
        "oof_auc": finite(auc),
        "lr": step_lr,  # the learning rate of the epoch's last step
        "seconds": float(seconds),
        "samples_per_s": float(seen / train_seconds) if train_seconds > 0 else None,
    }
    return entry, train_loss, val_loss


def epoch_score(entry: Mapping[str, Any], has_val: bool, train_loss: float) -> tuple:
    """What the best epoch maximises: (OOF AUC, -validation loss), or -training loss without validation."""
    if has_val:
        return (-math.inf if entry["oof_auc"] is None else entry["oof_auc"],
                -(entry["val_loss"] if entry["val_loss"] is not None else math.inf))
    return (-train_loss,)


def log_epoch(run: FoldRun, entry: Mapping[str, Any], train_loss: float, val_loss: float | None,
              improved: bool) -> None:
    """The epoch's log line."""
    log.info("%s fold %d epoch %d/%d: train loss %.4f, val loss %s, OOF AUC %s, lr %.2e, "
             "%.1fs, %.1f samples/s%s", run.backbone, run.fold, entry["epoch"], run.settings.epochs,
             train_loss, "-" if val_loss is None else f"{val_loss:.4f}",
             "-" if entry["oof_auc"] is None else f"{entry['oof_auc']:.4f}", entry["lr"],
             entry["seconds"], entry["samples_per_s"] or 0.0, " (best)" if improved else "")

"""Checkpoints of a fold's run: ``best.pt``, and ``last.pt`` with everything a resumed run needs.

``last.pt`` (model, optimizer, scheduler, grad-scaler, RNG states, history, and
the best epoch's weights) is rewritten after every epoch; a rerun of a killed job
with a compatible configuration and the same inputs continues after the last
finished epoch. ``best.pt`` is written with `birdclef.train.model.save_checkpoint`,
so `birdclef.train.model.load_model` reads it. Snakemake deletes ``best.pt`` (a
declared output) before it reruns a job, so a resumed run rewrites it from the
best weights in ``last.pt``: the rerun ends with the best epoch of the whole run,
as an uninterrupted run does, not only of the epochs after the resume.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdclef.train.loop import Optimization
from birdclef.train.model import save_checkpoint
from birdclef.train.run import FoldRun

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


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


def resume_signature(model_spec, settings, fold, classes, window_frames, frames_per_second,
                     n_train, n_val, n_pseudo, n_labelled=0, inputs=None) -> dict[str, Any]:
    """What must match for `last.pt` to be continued (everything but the epoch count).

    `inputs` (the stage's input files as `birdclef.common.manifest.describe_file`
    describes them: sha256 of small files, size and mtime of large ones) ties
    ``last.pt`` to the data it was trained on: a job rerun because an input was
    rewritten with other content trains from scratch instead of continuing a model
    of the old data. None (direct calls without files) leaves it out."""
    values = dataclasses.asdict(settings)
    values.pop("epochs")
    for key in settings.unused_keys():  # a last.pt from before these options still resumes
        values.pop(key)
    signature = {
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
    if inputs is not None:
        signature["inputs"] = list(inputs)
    return signature


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of `model`'s weights (the best epoch's, kept for ``last.pt``)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


def load_resume(path: Path, signature: Mapping[str, Any], epochs: int) -> dict[str, Any] | None:
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


def resume(run: FoldRun, opt: Optimization, signature: Mapping[str, Any]
           ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int, dict[str, torch.Tensor] | None]:
    """Restore `opt` and the RNGs from ``last.pt`` when it continues, and ``best.pt`` when it is
    missing: (history, best, first epoch, the best epoch's weights)."""
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 1
    payload = load_resume(run.last_path, signature, run.settings.epochs)
    if payload is not None:
        opt.model.load_state_dict(payload["state_dict"])
        opt.optimizer.load_state_dict(payload["optimizer"])
        opt.scheduler.load_state_dict(payload["scheduler"])
        opt.scaler.load_state_dict(payload["scaler"])
        if opt.projection is not None:
            opt.projection.load_state_dict(payload["projection"])
        _set_rng_states(payload["rng"])
        history = list(payload["history"])
        best = payload.get("best")
        best_state = payload.get("best_state_dict")
        start_epoch = int(payload["epoch"]) + 1
        if best is not None and best_state is None:  # a last.pt written before it kept the best weights
            log.warning("%s has no best weights: the best epoch is chosen again from the epochs to come",
                        run.last_path)
            best = None
        elif best is not None and not run.best_path.exists():
            restore_best(run, opt.model, best_state, int(best["epoch"]), history)
        log.info("resuming %s fold %d from epoch %d of %d", run.backbone, run.fold,
                 start_epoch, run.settings.epochs)
    return history, best, start_epoch, best_state


def restore_best(run: FoldRun, model: torch.nn.Module, best_state: Mapping[str, torch.Tensor],
                 epoch: int, history: list[dict[str, Any]]) -> None:
    """Rewrite ``best.pt`` from ``last.pt``'s best weights, as `save_best` wrote it at `epoch`."""
    best_model = copy.deepcopy(model)
    best_model.load_state_dict(best_state)
    save_best(run, best_model, epoch, history[:epoch])
    log.info("%s rewritten from the best weights in %s (epoch %d)", run.best_path, run.last_path, epoch)


def save_best(run: FoldRun, model: torch.nn.Module, epoch: int,
              history: list[dict[str, Any]]) -> None:
    """Write ``best.pt``: the model of `epoch`, readable by `load_model`."""
    save_checkpoint(run.best_path, model, run.model_spec, epoch=epoch, classes=run.classes,
                    fold=int(run.fold), window_frames=int(run.window_frames),
                    frames_per_second=float(run.frames_per_second), history=history)


def save_last(run: FoldRun, opt: Optimization, signature: Mapping[str, Any], epoch: int,
              history: list[dict[str, Any]], best: dict[str, Any] | None,
              best_state: Mapping[str, torch.Tensor] | None) -> None:
    """Write ``last.pt``: everything a resumed run continues from, with the best epoch's weights."""
    save_checkpoint(
        run.last_path, opt.model, run.model_spec,
        format=CHECKPOINT_FORMAT, signature=signature, epoch=epoch,
        optimizer=opt.optimizer.state_dict(), scheduler=opt.scheduler.state_dict(),
        scaler=opt.scaler.state_dict(), rng=_rng_states(), history=history, best=best,
        best_state_dict=None if best_state is None else dict(best_state),
        classes=run.classes,
        **({"projection": opt.projection.state_dict()} if opt.projection is not None else {}),
    )

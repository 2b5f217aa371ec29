"""Training of one (backbone, fold, round) of the SED model on the log-mel cache.

`train_fold` trains one fold and writes ``last.pt``, ``best.pt``, ``oof.parquet``,
``soundscape_preds.parquet`` and ``metrics.json`` (see `birdclef.train.fold`);
`train_stage` is the workflow's train stage around it. Modules:

- `settings`: `TrainSettings`, the hyper-parameters, and `settings_from_config`;
- `data`: the fold split, random crops of the mel cache, the batch sampler and collation;
- `loss`: power-domain mixup, the losses (BCE, focal, soft-AUC, ASL), the learning-rate schedule;
- `run`: a fold's set-up (seeds, threads, device, mixed precision) and `FoldRun`;
- `validation`: window prediction and the OOF score on a fold's validation recordings;
- `loop`: model, optimizer and schedule, one epoch of steps and its history entry;
- `checkpoint`: ``best.pt`` and ``last.pt``, and resuming from it;
- `fold_data`: a fold's checked inputs, split, targets and loader;
- `outputs`: the best model's OOF and soundscape predictions, and the metrics;
- `fold`: `train_fold`, in named steps;
- `stage`: `train_stage`, reading the caches and writing the manifest;
- `pretrain`: `pretrain_stage`, the broad-set run whose backbone starts every fold (train.pretrain);
- `model`: the SED model (timm backbone + attention head) and its checkpoints.
"""

from birdclef.train.data import EpochBatchSampler, TrainWindows, collate, split_fold, usable_frames
from birdclef.train.fold import train_fold
from birdclef.train.loss import example_loss, focal_loss, lr_factor, mix_batch, mixup_permutation
from birdclef.train.pretrain import pretrain_stage
from birdclef.train.settings import TrainSettings, settings_from_config
from birdclef.train.stage import train_stage
from birdclef.train.validation import validation_set

__all__ = [
    "EpochBatchSampler",
    "TrainSettings",
    "TrainWindows",
    "collate",
    "example_loss",
    "focal_loss",
    "lr_factor",
    "mix_batch",
    "mixup_permutation",
    "pretrain_stage",
    "settings_from_config",
    "split_fold",
    "train_fold",
    "train_stage",
    "usable_frames",
    "validation_set",
]

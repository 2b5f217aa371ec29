"""Benchmark: training throughput on CPU (samples/s) for the demo backbone.

Builds a synthetic mel cache shaped like the demo's (12 classes x 10
recordings of about 15 s, 64 mels, 5 s windows of 313 frames, float16), then
for each thread count runs `birdclef.train.train_fold` with the demo's
training settings (test_efficientnet, batch 32, lr 0.01, 512 samples per epoch,
power-domain mixup, spec-augment) on fold 0 of 2 and reports:

- training samples/s as the pipeline logs it (every step: crops, mixup,
  forward, backward, optimizer; the first epoch, which includes warm-up, is left
  out of the mean);
- validation windows/s: the fold's validation windows (`train.validation_set`)
  over each epoch's seconds minus its training seconds, both as `train_fold`
  records them (so the validation pass plus whatever else an epoch does after
  its last training step; mean over epochs after the first); and the whole
  job's wall seconds;
- where the time goes: the data path alone (crops + spec-augment + collation,
  no model) and one optimizer step alone on a fixed batch.

Usage: python bench/bench_train.py [--threads 1,2] [--epochs 3] [--backbones test_efficientnet]
Prints markdown tables (machine and date included) for bench/README.md; about a
minute on two cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from benchlib import machine, markdown  # noqa: E402

from birdclef.common.labels import build_targets
from birdclef.train import (
    EpochBatchSampler,
    TrainSettings,
    TrainWindows,
    collate,
    example_loss,
    mix_batch,
    split_fold,
    train_fold,
    validation_set,
)
from birdclef.train.model import build_model

N_CLASSES = 12
PER_CLASS = 10
N_MELS = 64
WINDOW_FRAMES = 313  # 5 s at 32 kHz, hop 512
FRAMES_PER_SECOND = 32000 / 512
DEMO_SETTINGS = {"epochs": 3, "batch_size": 32, "lr": 0.01, "samples_per_epoch": 512,
                 "mixup_alpha": 0.5, "mixup_prob": 0.5}


def synthetic_cache(seed: int = 0):
    """A demo-sized cache: each class a band of energy in its own mel bins, plus noise."""
    rng = np.random.default_rng(seed)
    classes = [f"sp{k:02d}" for k in range(N_CLASSES)]
    chunks, rows, offset = [], [], 0
    for k, label in enumerate(classes):
        for i in range(PER_CLASS):
            frames = int(rng.integers(500, 1250))  # 8-20 s
            mel = rng.normal(-60.0, 6.0, size=(frames, N_MELS))
            band = slice(k * N_MELS // N_CLASSES, (k + 1) * N_MELS // N_CLASSES)
            mel[:, band] += 25.0
            chunks.append(mel.astype(np.float16))
            rows.append({"filename": f"{label}/XC{k}{i:02d}.ogg", "primary_label": label,
                         "secondary_labels": np.array([], dtype=object), "offset": offset,
                         "frames": frames, "fold": i % 2})
            offset += frames
    index = pd.DataFrame(rows)
    return np.concatenate(chunks), index.drop(columns="fold"), index[["filename", "fold"]], classes


def data_path_rate(mels, index, classes, settings: TrainSettings, batches: int = 16) -> float:
    """Samples/s of the data path alone: sampler, crops, spec-augment, collation."""
    soft, _ = build_targets(index, classes, settings.secondary_weight)
    crop_max = int(round(settings.crop_seconds_max * FRAMES_PER_SECOND))
    dataset = TrainWindows(mels, index["offset"].to_numpy(np.int64), index["frames"].to_numpy(np.int64),
                           soft, WINDOW_FRAMES, crop_max, settings)
    sampler = EpochBatchSampler(np.ones(len(index)), 0, settings.batch_size,
                                settings.batch_size * batches, 0.0, seed=0)
    start = time.perf_counter()
    seen = 0
    for keys in sampler:
        x, _, _ = collate([dataset[key] for key in keys])
        seen += len(x)
    return seen / (time.perf_counter() - start)


def step_rate(backbone: str, settings: TrainSettings, steps: int = 8) -> tuple[float, float]:
    """(samples/s of one optimizer step on a fixed batch, of which mixup's share in %)."""
    torch.manual_seed(0)
    model = build_model({"backbone": backbone, "n_classes": N_CLASSES, "drop_rate": 0.2}).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    x = torch.randn(settings.batch_size, 1, N_MELS, WINDOW_FRAMES) * 8 - 50
    y = torch.zeros(settings.batch_size, N_CLASSES)
    y[:, 0] = 1
    w = torch.ones(settings.batch_size)

    def step():
        logits, _ = model(x)
        loss = (example_loss(logits, y, settings) * w).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    step_seconds = (time.perf_counter() - start) / steps
    perm = torch.randperm(settings.batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        mix_batch(x, y, w, 0.3, perm)
    mix_seconds = (time.perf_counter() - start) / steps
    return settings.batch_size / step_seconds, 100.0 * mix_seconds / step_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="torch threads to try")
    parser.add_argument("--epochs", type=int, default=DEMO_SETTINGS["epochs"])
    parser.add_argument("--backbones", default="test_efficientnet")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    mels, index, folds, classes = synthetic_cache()
    settings = TrainSettings(**{**DEMO_SETTINGS, "epochs": args.epochs})
    started = dt.datetime.now().astimezone()
    _, val_table = split_fold(index, folds, 0)
    val_windows = len(validation_set(mels, val_table, classes, settings, WINDOW_FRAMES,
                                     FRAMES_PER_SECOND).windows)
    rows, parts = [], []
    for backbone in backbones:
        spec = {"backbone": backbone, "n_classes": N_CLASSES, "pretrained": False, "drop_rate": 0.2}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                metrics = train_fold(mels, index, folds, 0, classes, spec, settings, WINDOW_FRAMES,
                                     FRAMES_PER_SECOND, out, threads=threads, device="cpu",
                                     progress=False)
                wall = time.perf_counter() - start
            history = metrics["epochs"]
            steady = history[1:] or history
            train_rate = float(np.mean([h["samples_per_s"] for h in steady]))
            # Every batch is full: steps x batch size samples per epoch.
            trained = metrics["steps_per_epoch"] * settings.batch_size
            after_training_s = float(np.mean([h["seconds"] - trained / h["samples_per_s"]
                                              for h in steady]))
            rows.append({
                "backbone": backbone, "threads": threads, "loader_workers": metrics["loader_workers"],
                "epochs": len(history), "train_samples_per_s": round(train_rate, 1),
                "train_samples_per_s_per_thread": round(train_rate / threads, 1),
                "validation_windows_per_s": (round(val_windows / after_training_s, 1)
                                             if after_training_s > 0 else None),
                "job_wall_s": round(wall, 1), "final_oof_auc": round(metrics["oof_auc"], 3),
            })
            data_rate = data_path_rate(mels, index, classes, settings)
            step_samples, mix_share = step_rate(backbone, settings)
            parts.append({"backbone": backbone, "threads": threads,
                          "data_path_samples_per_s": round(data_rate, 1),
                          "optimizer_step_samples_per_s": round(step_samples, 1),
                          "mixup_share_of_step_pct": round(mix_share, 1)})
    n_params = sum(p.numel() for p in build_model({"backbone": backbones[0], "n_classes": N_CLASSES}).parameters())
    print(f"## Training throughput on CPU ({started:%Y-%m-%d %H:%M %Z})\n")
    print(f"Machine: {machine()}  ")
    print(f"torch {torch.__version__}; synthetic demo-sized cache ({N_CLASSES} classes x {PER_CLASS} "
          f"recordings, {N_MELS} mels, windows of {WINDOW_FRAMES} frames); fold 0 of 2; settings "
          f"{DEMO_SETTINGS | {'epochs': args.epochs}}; {backbones[0]} has {n_params:,} parameters. "
          f"Training samples/s is the mean over epochs after the first; validation windows/s is "
          f"the fold's {val_windows} validation windows over (epoch seconds - training seconds), "
          "i.e. the validation pass plus anything else after an epoch's last step.\n")
    print(markdown(rows))
    print("\nWhere the time goes (same thread counts):\n")
    print(markdown(parts))


if __name__ == "__main__":
    main()

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

With ``--wave``: the cost of waveform augmentation (``train.wave_augment``), side by side in one
run: a demo-sized set of synthetic recordings is written as Ogg Vorbis and cached with the
pipeline's mel cache, and the same training runs with and without waveform augmentation (prob 0.5
and 1.0, every part on: speech from a 20 s file of spans, background noise from a folder of four
30 s Ogg files, coloured noise, gain), plus the data path alone for each.

Usage: python bench/bench_train.py [--threads 1,2] [--epochs 3] [--backbones test_efficientnet] [--wave]
Prints markdown tables (machine and date included) for bench/README.md; about a
minute on two cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from benchlib import machine, markdown  # noqa: E402

from birdclef.common.labels import build_targets
from birdclef.mels import build_mel_cache
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
from birdclef.train.wave_augment import (
    SegmentBank,
    WaveAugmentSettings,
    WaveSources,
    colored_noise,
    folder_bank,
)

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


def data_path_rate(mels, index, classes, settings: TrainSettings, batches: int = 16,
                   wave: WaveSources | None = None) -> float:
    """Samples/s of the data path alone: sampler, crops, (waveform augmentation), spec-augment,
    collation."""
    soft, _ = build_targets(index, classes, settings.secondary_weight)
    crop_max = int(round(settings.crop_seconds_max * FRAMES_PER_SECOND))
    dataset = TrainWindows(mels, index["offset"].to_numpy(np.int64), index["frames"].to_numpy(np.int64),
                           soft, WINDOW_FRAMES, crop_max, settings,
                           wave=None if wave is None else wave.augmenter(index))
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


WAVE_MEL = {"sample_rate": 32000, "n_fft": 1024, "hop_length": 512, "n_mels": N_MELS, "fmin": 50,
            "fmax": 14000, "top_db": 80, "window_seconds": 5, "max_seconds": 30, "rare_threshold": 0,
            "rare_max_seconds": None}
WAVE_ON = {"noise_source": "noise", "noise_prob": 1.0, "color_noise_prob": 0.5, "speech_prob": 0.5}


def audio_set(folder: Path, seed: int = 0):
    """Demo-sized synthetic recordings (a tone per class in noise, 8-20 s) as Ogg files, their mel
    cache (the pipeline's), four 30 s noise files and one speech-like file: (mels, index, folds,
    classes, WaveSources of prob 1)."""
    rng = np.random.default_rng(seed)
    sr = WAVE_MEL["sample_rate"]
    classes = [f"sp{k:02d}" for k in range(N_CLASSES)]
    rows = []
    for k, label in enumerate(classes):
        for i in range(PER_CLASS):
            seconds = float(rng.uniform(8, 20))
            t = np.arange(int(seconds * sr)) / sr
            wave = 0.2 * np.sin(2 * np.pi * (600 + 500 * k) * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
            wave = (wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
            path = folder / "audio" / label / f"XC{k}{i:02d}.ogg"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave, sr, format="OGG", subtype="VORBIS")
            rows.append({"filename": f"{label}/XC{k}{i:02d}.ogg", "path": str(path), "audio_path": str(path),
                         "primary_label": label, "secondary_labels": [], "collection": "XC", "rating": 4.0,
                         "fold": i % 2})
    catalog = pd.DataFrame(rows)
    build_mel_cache(catalog, folder / "mels.npy", folder / "index.parquet", WAVE_MEL, progress=False)
    mels = np.load(folder / "mels.npy", mmap_mode="r")
    index = pd.read_parquet(folder / "index.parquet")
    (folder / "noise").mkdir()
    for n in range(4):
        noise = 0.05 * colored_noise(30 * sr, -3.0 - n, rng)
        sf.write(folder / "noise" / f"noise{n}.ogg", noise, sr, format="OGG", subtype="VORBIS")
    speech_path = folder / "speech.flac"
    t = np.arange(20 * sr) / sr
    sf.write(speech_path, (0.1 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32), sr)
    noise, _ = folder_bank(folder / "noise", sr)
    speech = SegmentBank([str(speech_path)] * 10, np.arange(10) * 2 * sr, np.full(10, int(1.5 * sr)), sr)
    sources = WaveSources(WaveAugmentSettings(prob=1.0, **WAVE_ON), dict(zip(catalog["filename"], catalog["audio_path"],
                                                                             strict=True)),
                          WAVE_MEL, noise, speech)
    return mels, index, catalog[["filename", "fold"]], classes, sources


def wave_comparison(thread_counts: list[int], epochs: int, backbone: str) -> None:
    """Training and data-path samples/s with and without waveform augmentation, in one run."""
    started = dt.datetime.now().astimezone()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mels, index, folds, classes, sources = audio_set(Path(tmp))
        spec = {"backbone": backbone, "n_classes": N_CLASSES, "pretrained": False, "drop_rate": 0.2}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for prob in (0.0, 0.5, 1.0):
                wave = WaveAugmentSettings(prob=prob, **WAVE_ON) if prob else WaveAugmentSettings()
                settings = TrainSettings(**{**DEMO_SETTINGS, "epochs": epochs}, wave_augment=wave)
                wave_sources = WaveSources(wave, sources.audio_paths, WAVE_MEL, sources.noise, sources.speech)
                load = os.getloadavg()[0]
                with tempfile.TemporaryDirectory() as out:
                    metrics = train_fold(mels, index, folds, 0, classes, spec, settings, WINDOW_FRAMES,
                                         FRAMES_PER_SECOND, out, threads=threads, device="cpu", progress=False,
                                         wave=wave_sources if prob else None)
                steady = metrics["epochs"][1:] or metrics["epochs"]
                rows.append({
                    "threads": threads, "wave_augment_prob": prob,
                    "train_samples_per_s": round(float(np.mean([h["samples_per_s"] for h in steady])), 1),
                    "data_path_samples_per_s": round(data_path_rate(
                        mels, index, classes, settings, wave=wave_sources if prob else None), 1),
                    "load_avg_1min_at_start": round(load, 2),
                })
    print(f"## Waveform augmentation cost ({started:%Y-%m-%d %H:%M %Z})\n")
    print(f"Machine: {machine()}  ")
    print(f"torch {torch.__version__}; {backbone}; synthetic demo-sized recordings ({N_CLASSES} classes x "
          f"{PER_CLASS}, 8-20 s, Ogg Vorbis) cached by the pipeline's mel cache ({N_MELS} mels, n_fft 1024); "
          f"settings {DEMO_SETTINGS | {'epochs': epochs}}; wave_augment {WAVE_ON} with gain "
          "[-6, 6] dB. Rows of one thread count ran back to back in this process; the 1-minute load "
          "average at each row's start says how busy the shared machine was.\n")
    print(markdown(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="torch threads to try")
    parser.add_argument("--epochs", type=int, default=DEMO_SETTINGS["epochs"])
    parser.add_argument("--backbones", default="test_efficientnet")
    parser.add_argument("--wave", action="store_true", help="compare training with and without waveform augmentation")
    args = parser.parse_args()
    if args.wave:
        wave_comparison([int(t) for t in args.threads.split(",") if t.strip()], args.epochs,
                        args.backbones.split(",")[0].strip())
        return
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

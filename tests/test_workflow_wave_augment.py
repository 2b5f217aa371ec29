"""Snakemake on the demo with waveform augmentation on, up to training: noise from the labelled
soundscape windows without a label, speech from the VAD's spans, coloured noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from workflow_utils import copy_run, load_config, new_runs, snakemake, write_config

pytestmark = pytest.mark.workflow


def test_training_with_waveform_augmentation(demo_base, tmp_path):
    workdir = copy_run(demo_base, tmp_path / "wf")  # the demo run: only training runs again
    config = load_config(workdir)
    config["train"].update({"epochs": 2, "samples_per_epoch": 128, "folds": [0],
                            "wave_augment": {"prob": 0.8, "noise_source": "soundscapes", "noise_prob": 0.8,
                                             "color_noise_prob": 0.5, "speech_prob": 0.5}})
    path = write_config(workdir, "wave.yaml", config)
    snakemake(workdir, "--cores", "2", "submission", "--until", "train", "--configfile", str(path))
    (run,) = new_runs(workdir, demo_base, "train")
    manifest_path = run / "fold0/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    stats = manifest["headline"]["wave_augment"]
    assert stats["noise_from"] == "labelled train-split soundscape windows without a label"
    assert stats["noise_segments"] > 0 and stats["noise_files_skipped"] == 0 and stats["speech_clips"] > 0
    assert manifest["settings"]["wave_augment"]["speech_prob"] == 0.5
    metrics = json.loads((manifest_path.parent / "metrics.json").read_text())
    assert metrics["settings"]["wave_augment"]["prob"] == 0.8
    assert len(metrics["epochs"]) == 2 and all(np.isfinite(e["train_loss"]) for e in metrics["epochs"])

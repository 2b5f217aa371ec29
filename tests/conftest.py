"""Shared test helpers: tiny BirdCLEF-layout folders built in tmp_path."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

# Test files run on two pytest-xdist workers (`make test`) and so do their Snakemake jobs: with
# both cores busy, OpenMP threads that spin while waiting (libgomp's default, which torch uses)
# slow training far more than sharing the cores does (bench/bench_omp_wait.py: two 2-thread timm
# trainings at 5.0-5.5 s/step each spinning, 2.8-3.0 passive, 1.5-1.6 alone). Set before torch
# loads; jobs inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
REAL_AUDIO = REPO.parent / "shared" / "data" / "real-audio"

# The longest test files first (pytest-xdist --dist loadfile hands files out in collection order):
# the demo run that several modules copy is built by the first, while the other worker runs the
# Slurm test, which waits more than it computes; short unit-test files fill the end.
SLOW_FIRST = (
    "test_workflow.py", "test_slurm.py", "test_workflow_rounds.py", "test_workflow_self_distill.py",
    "test_workflow_teacher.py", "test_workflow_extra_roots.py", "test_workflow_two_mels.py",
    "test_workflow_xc.py", "test_export.py", "test_inference.py", "test_workflow_wave_augment.py",
    "test_workflow_errors.py",
)


def pytest_collection_modifyitems(items):
    """Order test files SLOW_FIRST, then the rest as collected (tests keep their order in a file)."""
    rank = {name: k for k, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))


def size_for_tests(config: dict) -> dict:
    """The demo config as the workflow tests run it (written into the copy's config.yaml): every
    stage and contract the same, fewer recordings and test soundscapes and a shorter schedule.
    Fewer validation recordings make the int8 gate's AUC noisier, hence its wider bound here.
    The demo's full-size quality is measured by bench/bench_pipeline.py, not by the tests."""
    config["data"]["demo"].update(recordings_per_species=6, n_test_soundscapes=4)
    config["train"].update(epochs=6, samples_per_epoch=512)
    config["export"].update(calibration_size=32, max_auc_drop=0.02)
    return config


@pytest.fixture(scope="session")
def demo_base(tmp_path_factory) -> Path:
    """The demo config (size_for_tests) run end to end once per test session (`snakemake
    submission` in a copy of the workflow); workflow tests start from a copy of it
    (workflow_utils.copy_run) and find its config in the copy's config.yaml.

    Under pytest-xdist the workers share one run: the first to need it runs it under a file lock
    in the session's temporary root, the others wait for it."""
    from workflow_utils import copy_workflow, load_config, snakemake, write_config

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this session's root, above the workers' own folders
    base, done = shared / "demo-base", shared / "demo-base.done"
    with (shared / "demo-base.lock").open("w") as lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(base, ignore_errors=True)  # an earlier worker's failed attempt
            workdir = copy_workflow(base)
            write_config(workdir, "config.yaml", size_for_tests(load_config(workdir)))
            snakemake(workdir, "--cores", "2", "submission")
            done.touch()
    return base


def tone(seconds: float, freq: float, sample_rate: int = 32000, seed: int = 0) -> np.ndarray:
    """A tone with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def mini_dataset(tmp_path: Path) -> Path:
    """A three-class BirdCLEF-layout folder: train.csv, taxonomy.csv, train_audio/."""
    root = tmp_path / "data"
    labels = ["aaa1", "bbb1", "ccc1"]
    pd.DataFrame(
        {
            "primary_label": labels,
            "inat_taxon_id": [1, 2, 3],
            "scientific_name": ["A a", "B b", "C c"],
            "common_name": ["A", "B", "C"],
            "class_name": ["Aves"] * 3,
        }
    ).to_csv(root.mkdir(parents=True) or root / "taxonomy.csv", index=False)
    rows = []
    for k, label in enumerate(labels):
        for i in range(4):
            name = f"{label}/XC{k}{i}.ogg"
            path = root / "train_audio" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(2.0 + i, 1000 * (k + 1), seed=i), 32000, format="OGG", subtype="VORBIS")
            rows.append(
                {
                    "primary_label": label,
                    "secondary_labels": "['bbb1']" if label == "aaa1" and i == 0 else "[]",
                    "type": "['song']",
                    "filename": name,
                    "collection": "XC",
                    "rating": 4.0,
                    "url": f"https://xeno-canto.org/{k}{i}",
                    "latitude": 0.0,
                    "longitude": 0.0,
                    "scientific_name": "x",
                    "common_name": "x",
                    "author": "me",
                    "license": "CC BY 4.0",
                }
            )
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root

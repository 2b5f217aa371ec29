"""Snakemake on the demo config with a self-distillation round on the recordings (label mass
cap on) and sonotype max-pooling: round 1 reads round 0's OOF predictions and the bundle
carries the pooling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import copy_workflow, load_config, snakemake, write_config

from birdclef.runtime.postprocess import sonotype_groups

pytestmark = pytest.mark.workflow

ROUND = {"method": "power", "power": 2.0, "recordings": True, "recordings_power": 2.0,
         "normalize": "none", "label_mass_cap": True}


def submission_of(workdir: Path) -> tuple[pd.DataFrame, dict]:
    """The published submission and its manifest's headline."""
    published = (workdir / "results/submission.csv").read_bytes()
    for manifest in (workdir / "results/submission").glob("*/manifest.json"):
        if (manifest.parent / "submission.csv").read_bytes() == published:
            return pd.read_csv(workdir / "results/submission.csv"), json.loads(manifest.read_text())["headline"]
    raise AssertionError("no results/submission/<tag>/ holds the published submission")


def run_demo(workdir: Path, config: dict, name: str) -> None:
    """Snakemake `submission` on the demo with `config` (training two rounds takes a while
    on a shared machine: a longer timeout than the default)."""
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(write_config(workdir, name, config)),
              timeout=3600)


def check_self_distill_round(workdir: Path) -> dict:
    """Round 1 read round 0's OOF files and trained on capped targets; returns fold 1's stats."""
    r0 = [p for p in (workdir / "results/train").iterdir() if "-r0-" in p.name]
    (r1,) = [p for p in (workdir / "results/train").iterdir() if "-r1-" in p.name]
    for fold in (0, 1):
        manifest = json.loads((r1 / f"fold{fold}/manifest.json").read_text())
        assert manifest["upstream"]["recording_oof"] == [r0[0].name]
        assert {entry["path"] for entry in manifest["inputs"]} >= {
            f"results/train/{r0[0].name}/fold{k}/oof.parquet" for k in (0, 1)}
        stats = manifest["headline"]["self_distill"]
        # each training recording of fold k was held out by round 0's other fold model
        assert stats["recordings_with_oof"] > 0 and stats["label_mass_cap"] is True
        assert stats["pseudo_mass_mean"] <= stats["true_mass_mean"] + 1e-6
        metrics = json.loads((r1 / f"fold{fold}/metrics.json").read_text())
        assert metrics["self_distill"] == stats
    return stats


def check_sonotype_pooling(workdir: Path) -> list[list[str]]:
    """The bundle carries the pooling and the submission applies it to every sonotype group.

    The demo's 12 species hold one sonotype (47158son01): no group of two, so its columns
    are the model's own (the values of a group are checked in test_inference)."""
    classes = list(pd.read_csv(workdir / "resources/demo/taxonomy.csv", dtype=str)["primary_label"])
    bundles = [json.loads(p.read_text()) for p in (workdir / "results/export").glob("*/bundle.json")]
    assert [b["postprocess"]["sonotype_max_pool"] for b in bundles] == [True]
    pooled, _ = submission_of(workdir)
    groups = sonotype_groups(classes)
    for columns in groups:
        values = pooled[[classes[k] for k in columns]].to_numpy()
        np.testing.assert_array_equal(values, np.repeat(values[:, :1], len(columns), axis=1))
    return [[classes[k] for k in g] for g in groups]


def demo_config(workdir: Path) -> dict:
    """The demo config with the self-distillation round and sonotype max-pooling on."""
    config = load_config(workdir)
    # the plumbing, not the quality: a smaller demo, two short epochs per fold and round
    config["data"]["demo"].update(
        {"n_species": 10, "recordings_per_species": 5, "n_train_soundscapes": 4, "n_test_soundscapes": 2})
    config["train"].update({"epochs": 2, "samples_per_epoch": 128})
    config["export"].update({"calibration_size": 16})
    config["pseudo"]["rounds"] = [ROUND]
    config["ensemble"]["postprocess"] = {"sonotype_max_pool": True}
    return config


def test_a_self_distillation_round_and_sonotype_pooling_on_the_demo(tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    config = demo_config(workdir)
    run_demo(workdir, config, "self_distill.yaml")
    print("self-distillation (fold 1):", check_self_distill_round(workdir))
    print("sonotype groups of the demo:", check_sonotype_pooling(workdir))

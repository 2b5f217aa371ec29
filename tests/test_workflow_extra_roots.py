"""The whole pipeline with a second data root and the pretrain stage on (demo data)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from workflow_utils import copy_workflow, load_config, snakemake, write_config

from birdclef.demo import generate_demo

pytestmark = pytest.mark.workflow


def relabel(root, old, new):
    """Give species `old` of a BirdCLEF-layout folder the label `new` (same scientific name)."""
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype=str)
    taxonomy.loc[taxonomy["primary_label"] == old, "primary_label"] = new
    taxonomy.to_csv(root / "taxonomy.csv", index=False)
    train = pd.read_csv(root / "train.csv", dtype=str)
    train.loc[train["primary_label"] == old, "primary_label"] = new
    train["secondary_labels"] = train["secondary_labels"].str.replace(f"'{old}'", f"'{new}'", regex=False)
    train["filename"] = train["filename"].str.replace(f"{old}/", f"{new}/", regex=False)
    train.to_csv(root / "train.csv", index=False)
    (root / "train_audio" / old).rename(root / "train_audio" / new)


def test_a_second_root_and_pretraining_flow_through_the_whole_pipeline(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    # An earlier "year": another seed, two species the main taxonomy lacks, one species under another label.
    second = tmp_path / "bc_prev"
    generate_demo(second, seed=1, n_species=12, recordings_per_species=3, n_train_soundscapes=0,
                  n_test_soundscapes=1)
    relabel(second, "andtin", "andtin-old")
    config = load_config(workdir)
    config["data"]["demo"].update(
        {"n_species": 10, "recordings_per_species": 4, "n_train_soundscapes": 1, "n_test_soundscapes": 1}
    )
    config["data"]["extra_roots"] = [{"root": str(second), "use": "train"}]
    config["train"].update({"epochs": 1, "samples_per_epoch": 64, "pretrain": {"enabled": True, "epochs": 1}})
    config["pseudo"]["rounds"] = []
    config["export"].update({"calibration_size": 16, "on_gate_fail": "warn"})
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(write_config(workdir, "extra.yaml", config)))

    main_labels = set(pd.read_csv(workdir / "resources/demo/taxonomy.csv", dtype=str)["primary_label"])
    second_train = pd.read_csv(second / "train.csv", dtype=str)
    outside = set(second_train["primary_label"]) - main_labels - {"andtin-old"}
    assert outside  # the two species only the second root has (those with training audio)

    (catalog_dir,) = (workdir / "results/catalog").iterdir()
    catalog = pd.read_parquet(catalog_dir / "catalog.parquet")
    extra = catalog[catalog["source"] == "extra0:bc_prev"]
    assert len(extra) == len(second_train)
    assert set(extra.loc[extra["pretrain_only"], "primary_label"]) == outside
    assert set(extra.loc[~extra["pretrain_only"], "primary_label"]) <= main_labels
    renamed = extra[extra["source_label"] == "andtin-old"]
    assert len(renamed) and (renamed["primary_label"] == "andtin").all() and not renamed["pretrain_only"].any()
    headline = json.loads((catalog_dir / "manifest.json").read_text())["headline"]
    assert headline["extra_roots"][0]["outside_taxonomy"] == int(extra["pretrain_only"].sum())

    (folds_path,) = (workdir / "results/folds").glob("*/folds.parquet")
    folds = pd.read_parquet(folds_path).set_index("filename")
    assert (folds.loc[extra.loc[extra["pretrain_only"], "filename"], "fold"] == -2).all()
    assert (folds.loc[extra.loc[~extra["pretrain_only"], "filename"], "fold"] >= -1).all()

    (pretrain_dir,) = (workdir / "results/pretrain").iterdir()
    classes = pd.read_parquet(pretrain_dir / "classes.parquet")
    assert classes["primary_label"].tolist()[: len(main_labels)] == pd.read_csv(
        workdir / "resources/demo/taxonomy.csv", dtype=str)["primary_label"].tolist()
    assert set(classes.loc[~classes["in_taxonomy"], "primary_label"]) >= outside
    pretrain_headline = json.loads((pretrain_dir / "manifest.json").read_text())["headline"]
    assert pretrain_headline["pretrain_only_recordings"] == int(extra["pretrain_only"].sum())

    for manifest_path in (workdir / "results/train").glob("*/fold*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        assert manifest["upstream"]["pretrain"] == pretrain_dir.name
        assert manifest["headline"]["n_train"] + manifest["headline"]["n_val"] <= int((~catalog["pretrain_only"]).sum())
    logs = list((workdir / "results/logs/train").rglob("*.log"))
    assert logs and all("initialised from the pretrain checkpoint" in log.read_text() for log in logs)
    assert (workdir / "results/submission.csv").is_file()

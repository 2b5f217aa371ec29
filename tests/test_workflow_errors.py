"""Bad config and bad input data stop the workflow with a message naming the culprit."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from workflow_utils import copy_workflow, load_config, snakemake, write_config

from birdclef.demo import generate_demo

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A small demo folder generated once for this module."""
    root = tmp_path_factory.mktemp("data") / "birdclef"
    generate_demo(root, seed=1, n_species=10, recordings_per_species=3, n_train_soundscapes=1, n_test_soundscapes=1)
    return root


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


def real_data_config(workdir, root, **changes):
    config = load_config(workdir)
    config["data"] = {"root": str(root), "demo": {"enabled": False}, "on_bad_audio": "skip"}
    for section, values in changes.items():
        config.setdefault(section, {}).update(values)
    return config


def failure_text(result):
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["train"].update(epochs="many"), ["epochs", "'many' is not of type 'integer'"]),
        (lambda c: c["train"].update(learning_rate=0.1), ["learning_rate", "Additional properties"]),
        (lambda c: c["train"].update(backbones=[{"in_chans": 1}]), ["'name' is a required property"]),
        (lambda c: c.update(mels_typo={}), ["mels_typo"]),
        # window_seconds is shared by every mel configuration: a backbone cannot override it.
        (lambda c: c["train"]["backbones"][0].update(mels={"window_seconds": 4}), ["window_seconds", "Additional properties"]),
        (
            lambda c: c["train"].update(backbones=c["train"]["backbones"] * 2),
            ["train.backbones has 2 entries named", "give each a distinct `label`"],
        ),
        (
            lambda c: c["train"].update(backbones=[c["train"]["backbones"][0], {**c["train"]["backbones"][0], "label": "b"}]),
            ["twice with the same settings"],
        ),
    ],
)
def test_bad_config_names_the_key(workdir, edit, expected):
    config = load_config(workdir)
    edit(config)
    path = write_config(workdir, "bad.yaml", config)
    result = snakemake(workdir, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0
    for text in expected:
        assert text in failure_text(result), failure_text(result)[-3000:]


def test_missing_data_root(workdir, tmp_path):
    config = real_data_config(workdir, tmp_path / "nowhere")
    path = write_config(workdir, "missing.yaml", config)
    result = snakemake(workdir, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "data.root" in failure_text(result) and "does not exist" in failure_text(result)


def run_catalog(workdir, root, name="real.yaml", **changes):
    path = write_config(workdir, name, real_data_config(workdir, root, **changes))
    return snakemake(workdir, "--cores", "1", "--configfile", str(path), "--until", "catalog", check=False)


def test_train_csv_without_required_column(workdir, small_data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(small_data, root)
    pd.read_csv(root / "train.csv").drop(columns=["primary_label"]).to_csv(root / "train.csv", index=False)
    result = run_catalog(workdir, root)
    assert result.returncode != 0
    assert "train.csv: missing required column(s) ['primary_label']" in failure_text(result)


def test_train_csv_filename_that_does_not_exist(workdir, small_data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(small_data, root)
    frame = pd.read_csv(root / "train.csv")
    frame.loc[3, "filename"] = "nope/XC000.ogg"
    frame.to_csv(root / "train.csv", index=False)
    result = run_catalog(workdir, root)
    assert result.returncode != 0
    assert "row 5: 'nope/XC000.ogg'" in failure_text(result)


def test_corrupt_ogg_is_skipped_and_counted_or_fails(workdir, small_data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(small_data, root)
    victim = pd.read_csv(root / "train.csv")["filename"].iloc[0]
    (root / "train_audio" / victim).write_bytes(b"OggS" + bytes(range(256)) * 4)
    result = run_catalog(workdir, root)
    assert result.returncode == 0, failure_text(result)[-3000:]
    manifest = json.loads(next((workdir / "results/catalog").glob("*/manifest.json")).read_text())
    assert manifest["headline"]["bad_audio"] == 1
    assert manifest["headline"]["bad_audio_files"][0]["filename"] == victim
    result = run_catalog(workdir, root, name="strict.yaml", data={"on_bad_audio": "fail"})
    assert result.returncode != 0
    assert victim.split("/")[-1] in failure_text(result) and "on_bad_audio" in failure_text(result)


def test_bad_soundscape_labels_name_the_file_and_row_and_keep_other_work(workdir, small_data, tmp_path):
    """An unknown label stops the soundscape_labels job; the caches computed meanwhile stay."""
    root = tmp_path / "copy"
    shutil.copytree(small_data, root)
    labels = pd.read_csv(root / "train_soundscapes_labels.csv", dtype=str)
    labels.loc[1, "primary_label"] = "nosuch"
    labels.to_csv(root / "train_soundscapes_labels.csv", index=False)
    path = write_config(workdir, "labels.yaml", real_data_config(workdir, root))
    result = snakemake(workdir, "--cores", "1", "--configfile", str(path), "--until", "soundscape_labels",
                       "--keep-going", check=False)
    assert result.returncode != 0
    log = "\n".join(p.read_text() for p in (workdir / "results/logs/soundscape_labels").glob("*.log"))
    assert "train_soundscapes_labels.csv row 3: label 'nosuch' is not in taxonomy.csv" in log, log[-2000:]
    assert not list((workdir / "results/soundscape_labels").glob("*/labels.parquet"))
    assert list((workdir / "results/soundscape_mels").glob("*/mels.npy"))  # other work is kept
    # A configured labels file that does not exist stops the run before any job, naming the setting.
    (root / "train_soundscapes_labels.csv").unlink()
    result = snakemake(workdir, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0 and "soundscape_labels.file" in failure_text(result)

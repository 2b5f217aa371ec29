"""Two mel configurations in one ensemble on the demo, the second entry a taxon specialist that
sees 10 s at once (context_seconds: two 5 s rows joined, its predictions spread back to the rows):
a copy of the session's demo run (conftest.demo_base) gains the second backbone entry, trained
on fold 0 only (train.folds: [0]; the first entry's fold 0 is reused)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from workflow_utils import (
    copy_run,
    expected_rows,
    load_config,
    planned_jobs,
    snakemake,
    write_config,
)

pytestmark = pytest.mark.workflow


def test_two_mel_configurations_in_one_ensemble(demo_base, tmp_path):
    """Two mel configurations in one ensemble; the second entry is also a taxon specialist with
    10 s windows."""
    workdir = copy_run(demo_base, tmp_path / "wf")
    config = load_config(workdir)
    base = config["train"]["backbones"][0]
    other = {**base, "label": f"{base['name']}-48mels", "mels": {"n_mels": 48, "n_fft": 512, "hop_length": 400},
             "specialist": {"classes": {"class_name": ["Amphibia", "Insecta"]}, "upsample": 3.0},
             "context_seconds": 10}
    config["train"]["backbones"] = [base, other]
    config["pseudo"]["rounds"] = []
    config["train"]["folds"] = [0]
    two = write_config(workdir, "two_mels.yaml", config)
    jobs = planned_jobs(workdir, "submission", "--configfile", str(two))
    # The base backbone's round 0 and the base caches are reused: the new
    # configuration's caches and the new entry's fold 0 train.
    assert jobs["mels"] == 1 and jobs["soundscape_mels"] == 1 and jobs["train"] == 1, jobs
    assert "folds" not in jobs and "vad" not in jobs, jobs
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(two))

    caches = {np.load(path, mmap_mode="r").shape[1]: path for path in (workdir / "results/mels").glob("*/mels.npy")}
    assert {64, 48} <= set(caches), caches
    ensembles = sorted((workdir / "results/ensemble").glob("*/ensemble.json"), key=lambda p: p.stat().st_mtime)
    definition = json.loads(ensembles[-1].read_text())
    groups = definition["mel_groups"]
    assert [g["n_mels"] for g in groups] == [64, 48] and groups[1]["hop_length"] == 400
    assert groups[1]["tag"] == caches[48].parent.name
    by_group = {g: sorted(m["backbone"] for m in definition["members"] if m["mel_group"] == g) for g in (0, 1)}
    assert by_group == {0: [base["name"]], 1: [other["label"]]}, by_group
    assert set(definition["backbone_weights"]) == {base["name"], other["label"]}
    taxonomy = pd.read_csv(workdir / "resources/demo/taxonomy.csv", dtype={"primary_label": str})
    specialist = taxonomy.loc[taxonomy["class_name"].isin(["Amphibia", "Insecta"]), "primary_label"].tolist()
    assert 0 < len(specialist) < len(taxonomy), specialist
    for member in definition["members"]:
        assert member.get("specialist_classes") == (specialist if member["mel_group"] == 1 else None), member
    trained = [json.loads(path.read_text())["headline"] for path in (workdir / "results/train").glob("*/fold*/manifest.json")]
    assert sum(h.get("specialist") == {"classes": specialist, "upsample": 3.0} for h in trained) == 1
    specs = [json.loads(path.read_text())["model_spec"] for path in (workdir / "results/train").glob("*/fold0/metrics.json")]
    assert sorted(spec["context_windows"] for spec in specs) == [1, 2], specs
    longer = next(path for path in (workdir / "results/train").glob("*/fold0/soundscape_preds.parquet")
                  if json.loads((path.parent / "metrics.json").read_text())["model_spec"]["context_windows"] == 2)
    preds = pd.read_parquet(longer)
    index = pd.read_parquet(next((workdir / "results/soundscape_mels").glob("*/index.parquet")))
    assert preds["row_id"].tolist() == index["row_id"].tolist()  # one prediction per 5 s row

    exports = sorted((workdir / "results/export").glob("*/bundle.json"), key=lambda p: p.stat().st_mtime)
    bundle = json.loads(exports[-1].read_text())
    assert [g["n_mels"] for g in bundle["mel_groups"]] == [64, 48]
    assert [m.get("specialist_classes") for m in bundle["members"]] == [None, specialist]
    assert [m["context_windows"] for m in bundle["members"]] == [1, 2]
    for group in bundle["mel_groups"]:
        filterbank = np.load(exports[-1].parent / group["filterbank"])
        assert filterbank.shape == (group["n_mels"], group["n_fft"] // 2 + 1)
    export = json.loads((exports[-1].parent / "manifest.json").read_text())["headline"]
    assert export["gate"]["status"] in ("passed", "failed"), export["gate"]
    assert len(export["members"]) == 2

    manifests = sorted((workdir / "results/submission").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    headline = json.loads(manifests[-1].read_text())["headline"]
    assert headline["macro_roc_auc"] >= 0.75, headline  # the demo sized for tests (conftest.size_for_tests)
    submission = pd.read_csv(workdir / "results/submission.csv")
    assert submission["row_id"].tolist() == expected_rows(workdir)


"""Snakemake on the demo config, in a temporary directory: the whole product.

The session's one run of the default demo config (conftest.demo_base) is copied once for the
tests of this module (module-scoped fixture); they check what came out, the incremental reruns
and the no-op. Pseudo-label rounds and the report: test_workflow_rounds.py; two mel
configurations and a specialist: test_workflow_two_mels.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import (
    COMPUTE_STAGES,
    copy_run,
    expected_rows,
    load_config,
    planned_jobs,
    snakemake,
    write_config,
)

pytestmark = pytest.mark.workflow


def mtimes(workdir: Path, stages: set[str]) -> dict[str, float]:
    """mtime of every file under results/<stage>/ for the given stages."""
    out = {}
    for stage in stages:
        for path in (workdir / "results" / stage).rglob("*"):
            if path.is_file():
                out[str(path.relative_to(workdir))] = path.stat().st_mtime_ns
    return out


@pytest.fixture(scope="module")
def demo_run(demo_base, tmp_path_factory):
    """The demo workflow run once end to end (a copy of the session's run): the workdir and
    its one submission artifact."""
    workdir = copy_run(demo_base, tmp_path_factory.mktemp("workflow") / "wf")
    (first_submission,) = (workdir / "results/submission").iterdir()
    return workdir, first_submission


def test_full_run_writes_a_scored_submission(demo_run):
    workdir, _ = demo_run
    submission = pd.read_csv(workdir / "results/submission.csv")
    sample = pd.read_csv(workdir / "resources/demo/sample_submission.csv")
    assert list(submission.columns) == list(sample.columns)
    # Kaggle's sample lists a few rows: the submission's rows come from the test files.
    assert len(sample) == 3
    assert submission["row_id"].tolist() == expected_rows(workdir)
    values = submission.drop(columns="row_id").to_numpy()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    manifests = list((workdir / "results/submission").glob("*/manifest.json"))
    assert len(manifests) == 1
    headline = json.loads(manifests[0].read_text())["headline"]
    assert headline["macro_roc_auc"] >= 0.75, headline  # the demo sized for tests (conftest.size_for_tests)
    log = next((workdir / "results/logs/submission").glob("*.log")).read_text()
    assert "macro ROC-AUC" in log and "precision f32" in log


def test_every_stage_wrote_a_versioned_artifact_with_manifest(demo_run):
    workdir, _ = demo_run
    for stage in ("catalog", "vad", "mels", "soundscape_mels", "soundscape_labels", "folds", "ensemble", "export",
                  "submission"):
        folders = [p for p in (workdir / "results" / stage).iterdir() if p.is_dir()]
        assert len(folders) == 1, stage
        manifest = json.loads((folders[0] / "manifest.json").read_text())
        assert manifest["stage"] == stage and manifest["tag"] == folders[0].name
        for key in ("settings", "upstream", "inputs", "packages", "started", "finished", "headline"):
            assert key in manifest, (stage, key)
    train_runs = sorted(p.name for p in (workdir / "results/train").iterdir())
    backbone = load_config(workdir)["train"]["backbones"][0]["name"]
    assert [name.split("-")[0] for name in train_runs] == [backbone]
    assert [name.split("-")[1] for name in train_runs] == ["r0"]  # no pseudo round by default
    for run in train_runs:
        for fold in (0, 1):
            folder = workdir / "results/train" / run / f"fold{fold}"
            for name in ("best.pt", "oof.parquet", "soundscape_preds.parquet", "metrics.json", "manifest.json"):
                assert (folder / name).is_file(), folder / name
    ensemble = json.loads(next((workdir / "results/ensemble").glob("*/ensemble.json")).read_text())
    assert all("-r0-" in m["name"] for m in ensemble["members"])
    export = json.loads(next((workdir / "results/export").glob("*/manifest.json")).read_text())["headline"]
    assert export["precision"] == "int8" and export["gate"]["status"] == "passed", export["gate"]
    assert abs(export["auc"]["openvino_f32"] - export["auc"]["torch_fp32"]) < 1e-3
    mel_manifest = json.loads(next((workdir / "results/mels").glob("*/manifest.json")).read_text())
    assert mel_manifest["headline"]["recordings"] > 50


def test_labelled_soundscapes_validate_and_train_at_every_stage(demo_run):
    """The 2026 layout on the demo: labels file, held-out sites, a class without training audio."""
    workdir, _ = demo_run
    root = workdir / "resources/demo"
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype=str)
    train = pd.read_csv(root / "train.csv", dtype=str)
    without_audio = sorted(set(taxonomy["primary_label"]) - set(train["primary_label"]))
    assert without_audio, "the demo has a class without training audio"
    (labels_dir,) = (workdir / "results/soundscape_labels").iterdir()
    headline = json.loads((labels_dir / "manifest.json").read_text())["headline"]
    assert headline["duplicate_rows"] >= headline["windows"] > 0  # every row shipped twice
    assert headline["validation_windows"] > 0 and headline["train_windows"] > 0
    table = pd.read_parquet(labels_dir / "labels.parquet")
    # Held out by site: no site is on both sides.
    sides = table.groupby("site")["split"].nunique()
    assert (sides == 1).all(), sides
    held = set(table.loc[table["split"] == "validation", "row_id"])
    # The class without training audio is learnt from the soundscapes: it has a column everywhere.
    submission = pd.read_csv(workdir / "results/submission.csv")
    assert set(without_audio) <= set(submission.columns)
    # Every stage reports the held-out soundscape score beside the OOF score (pseudo rounds:
    # test_two_rounds_chain_and_the_ensemble_names_the_final_round).
    for metrics in (workdir / "results/train").glob("*/fold*/metrics.json"):
        values = json.loads(metrics.read_text())
        assert values["soundscape_auc"] is not None and values["n_labelled"] > 0, metrics
        assert values["soundscape_windows_scored"] == len(held)
    ensemble = json.loads(next((workdir / "results/ensemble").glob("*/ensemble.json")).read_text())
    assert ensemble["soundscape_auc"] is not None and ensemble["oof_auc"] is not None
    export = json.loads(next((workdir / "results/export").glob("*/manifest.json")).read_text())["headline"]
    assert set(export["soundscape_auc"]) == {"openvino_f32", "openvino_int8"}
    assert export["soundscape_windows_scored"] == len(held)
    # Site, date and hour parsed from the 2026 file names into the soundscape cache index.
    index = pd.read_parquet(next((workdir / "results/soundscape_mels").glob("*/index.parquet")))
    assert index["site"].str.fullmatch(r"S\d+").all() and index["hour"].notna().all()


def test_vad_cleaned_the_speech_recordings(demo_run):
    workdir, _ = demo_run
    info = json.loads((workdir / "resources/demo/demo_info.json").read_text())
    vad_dir = next((workdir / "results/vad").iterdir())
    spans = pd.read_parquet(vad_dir / "speech_spans.parquet")
    with_speech = {item["filename"] for item in info["speech"]}
    assert with_speech, "the demo mixes speech into some recordings"
    found = set(spans["filename"])
    assert len(found & with_speech) >= 0.8 * len(with_speech)
    catalog = pd.read_parquet(vad_dir / "catalog.parquet")
    cleaned = catalog[catalog["vad_status"] == "cleaned"]
    assert len(cleaned) >= 0.8 * len(with_speech)
    assert all(Path(workdir / p).is_file() for p in cleaned["audio_path"])


def test_noop_rerun_has_nothing_to_do(demo_run):
    workdir, _ = demo_run
    assert planned_jobs(workdir, "submission") == {}


def test_training_change_reruns_training_and_after_only(demo_run):
    workdir, _ = demo_run
    config = load_config(workdir)
    config["train"]["epochs"] = 1  # any training setting; one epoch keeps the retraining short
    changed = write_config(workdir, "changed_train.yaml", config)
    jobs = planned_jobs(workdir, "submission", "--configfile", str(changed))
    assert not COMPUTE_STAGES & set(jobs), jobs
    assert jobs["train"] == 2 and {"ensemble", "export", "submission_predict"} <= set(jobs)
    before = mtimes(workdir, COMPUTE_STAGES)
    runs_before = len(list((workdir / "results/train").iterdir()))
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(changed))
    assert mtimes(workdir, COMPUTE_STAGES) == before
    assert len(list((workdir / "results/train").iterdir())) == runs_before + 1  # one new train tag
    assert planned_jobs(workdir, "submission", "--configfile", str(changed)) == {}


def test_submission_change_reruns_submission_only(demo_run):
    workdir, _ = demo_run
    config = load_config(workdir)
    config["submission"]["precision_hint"] = "bf16"
    changed = write_config(workdir, "changed_submission.yaml", config)
    jobs = planned_jobs(workdir, "submission", "--configfile", str(changed))
    assert set(jobs) == {"submission_predict", "publish_submission", "submission"}, jobs
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(changed))
    log = sorted((workdir / "results/logs/submission").glob("*.log"), key=lambda p: p.stat().st_mtime)[-1]
    assert "precision bf16" in log.read_text()


def test_switching_back_finds_the_old_artifacts(demo_run):
    workdir, first_submission = demo_run
    runs_before = sorted(p.name for p in (workdir / "results").glob("*/*") if p.is_dir())
    jobs = planned_jobs(workdir, "submission")
    # No stage runs again: only the stable copy results/submission.csv is
    # re-pointed at the old artifact.
    assert set(jobs) <= {"publish_submission", "submission"}, jobs
    snakemake(workdir, "--cores", "2", "submission")
    assert (workdir / "results/submission.csv").read_bytes() == (first_submission / "submission.csv").read_bytes()
    assert sorted(p.name for p in (workdir / "results").glob("*/*") if p.is_dir()) == runs_before
    assert planned_jobs(workdir, "submission") == {}

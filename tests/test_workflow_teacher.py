"""Snakemake on the demo with a teacher, up to training: a Perch-shaped stand-in (built here)
scattered over shards and distilled into the students; then the same ONNX stand-in in the final blend
through export (IR, int8 behind its gate) and submission; a killed shard is the only one a rerun
computes. (The teacher in the final blend is tested in detail in tests/test_teacher_inference.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from teacher_standin import build_perch_standin, standin_names, write_perch_labels
from workflow_utils import copy_run, load_config, new_runs, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def teacher_run(demo_base, tmp_path_factory):
    """The demo with a Perch stand-in teacher (knowing half of the demo's species), 2 shards,
    embedding and logit distillation, a short schedule."""
    # a copy of the session's demo run: its data and caches are reused
    workdir = copy_run(demo_base, tmp_path_factory.mktemp("teacher_workflow") / "wf")
    taxonomy = pd.read_csv(workdir / "resources/demo/taxonomy.csv", dtype=str)
    known = taxonomy["scientific_name"].tolist()[::2]
    names = standin_names()
    names[: len(known)] = known
    build_perch_standin(workdir / "perch.onnx")
    write_perch_labels(workdir / "perch_labels.csv", names)
    config = load_config(workdir)
    config["teacher"] = {"enabled": True, "model": "perch", "model_path": str(workdir / "perch.onnx"),
                         "labels_path": str(workdir / "perch_labels.csv"), "shards": 2}
    config["train"].update({"epochs": 2, "samples_per_epoch": 256,
                            "distill": {"embedding_weight": 0.5, "logit_weight": 0.5}})
    path = write_config(workdir, "teacher.yaml", config)
    # up to training: what follows it does not change with the teacher (tests/test_workflow.py)
    snakemake(workdir, "--cores", "2", "submission", "--until", "train", "--configfile", str(path))
    return workdir, path, taxonomy, len(known)


def test_the_teacher_artifact_covers_every_window_and_maps_by_name(teacher_run):
    workdir, _, taxonomy, n_known = teacher_run
    (folder,) = (workdir / "results/teacher").iterdir()
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["shard0-of-2", "shard1-of-2"]
    index = pd.read_parquet(folder / "index.parquet")
    logits = np.load(folder / "logits.npy")
    embeddings = np.load(folder / "embeddings.npy")
    assert len(index) == len(logits) == len(embeddings) and embeddings.shape[1] == 1536
    assert logits.shape[1] == len(taxonomy)
    soundscapes = sorted((workdir / "resources/demo/train_soundscapes").glob("*.ogg"))
    assert (index["source"] == "soundscape").sum() == 12 * len(soundscapes)  # 60 s each
    vad = pd.read_parquet(next((workdir / "results/vad").glob("*/catalog.parquet")))
    kept = vad[~vad["vad_dropped"].astype(bool)] if "vad_dropped" in vad else vad
    assert set(index.loc[index["source"] == "recording", "filename"]) == set(kept["filename"])
    mapping = pd.read_parquet(folder / "mapping.parquet")
    assert mapping["status"].tolist() == ["matched" if k % 2 == 0 else "unmatched" for k in range(len(taxonomy))]
    assert np.isfinite(logits[:, ::2]).all() and np.isnan(logits[:, 1::2]).all()
    headline = json.loads((folder / "manifest.json").read_text())["headline"]
    assert headline["classes"] == {"matched": n_known, "genus": 0, "unmatched": len(taxonomy) - n_known}
    assert headline["shards"] == 2 and headline["runtime"] == "openvino"


def test_students_learned_from_the_teacher(teacher_run, demo_base):
    workdir, _, _, _ = teacher_run
    (teacher,) = (p.name for p in (workdir / "results/teacher").iterdir())
    manifests = [path for run in new_runs(workdir, demo_base, "train") for path in run.glob("fold*/manifest.json")]
    assert manifests
    for path in manifests:
        manifest = json.loads(path.read_text())
        assert manifest["upstream"]["teacher"] == teacher
        coverage = manifest["headline"]["teacher_coverage"]
        assert coverage["recordings"] == 1.0 and coverage["classes"] == pytest.approx(0.5, abs=0.05)
        metrics = json.loads((path.parent / "metrics.json").read_text())
        assert metrics["settings"]["distill_embedding_weight"] == 0.5
        assert all(np.isfinite(epoch["train_loss"]) for epoch in metrics["epochs"])


def test_the_onnx_perch_in_the_final_blend_is_compiled_into_the_bundle(teacher_run):
    """ensemble.teacher_weight > 0 with the ONNX stand-in: the export reads the VAD audio, quantizes the
    teacher behind its gate and ships its IR (not the ONNX); the submission runs it in the ensemble model."""
    workdir, path, _, _ = teacher_run
    config = load_config(workdir)
    config.update(yaml.safe_load(path.read_text()))
    config["ensemble"] = {**config.get("ensemble", {}), "teacher_weight": 0.3}
    blend = write_config(workdir, "blend.yaml", config)
    jobs = planned_jobs(workdir, "submission", "--configfile", str(blend))
    assert "train" not in jobs and {"ensemble", "export", "submission_predict"} <= set(jobs)
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(blend))
    manifests = [json.loads(p.read_text()) for p in (workdir / "results/export").glob("*/manifest.json")]
    (manifest,) = [m for m in manifests if m["headline"].get("teacher")]
    folder = workdir / "results/export" / manifest["tag"]
    teacher = manifest["headline"]["teacher"]
    gate = teacher["gate"]
    assert teacher["compiled"] and teacher["kind"] == "perch" and manifest["upstream"]["vad"]
    assert gate["requested_precision"] == "int8" and gate["calibration_windows"] > 0 and gate["eval_windows"] > 0
    assert gate["status"] in ("passed", "failed", "not run") and teacher["precision"] == gate["precision"]
    entry = json.loads((folder / "bundle.json").read_text())["teacher"]
    assert entry["ir"] == f"teacher/model_{gate['precision']}.xml" and (folder / entry["ir"]).exists()
    assert not list((folder / "teacher").glob("*.onnx"))
    assert any("catalog.parquet" in i["path"] for i in manifest["inputs"])
    log = (workdir / "results/logs/export" / f"{manifest['tag']}.log").read_text()
    assert "teacher gate" in log
    # the bundle scored on the held-out labelled soundscapes through Kaggle's path, with and without the teacher
    blend_score = manifest["headline"]["soundscape_auc_blend"]
    assert blend_score["soundscapes"] > 0 and blend_score["windows"] >= blend_score["soundscapes"]
    assert 0.0 <= blend_score["students_and_teacher"] <= 1.0 and 0.0 <= blend_score["students"] <= 1.0
    assert "held-out labelled soundscapes through the bundle" in log
    submission = pd.read_csv(workdir / "results/submission.csv")
    assert len(submission) and np.isfinite(submission.iloc[:, 1:].to_numpy()).all()


def test_a_killed_shard_is_the_only_shard_a_rerun_computes(teacher_run):
    workdir, path, _, _ = teacher_run
    assert planned_jobs(workdir, "submission", "--until", "train", "--configfile", str(path)) == {}
    (folder,) = (workdir / "results/teacher").iterdir()
    # as left by a run killed in shard 1 (shard 0 done, no gather yet): shards write atomically,
    # so a killed shard leaves no folder
    shutil.rmtree(folder / "shards" / "shard1-of-2")
    for name in ("embeddings.npy", "logits.npy", "index.parquet", "mapping.parquet", "manifest.json"):
        (folder / name).unlink()
    assert not list((folder / "shards").glob(".shard1*"))
    jobs = planned_jobs(workdir, "teacher", "--configfile", str(path))
    assert {k: v for k, v in jobs.items() if k != "total"} == {"teacher_shard": 1, "teacher": 1}

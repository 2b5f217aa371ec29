"""Pseudo-label rounds on the demo and the report: a copy of the session's demo run
(conftest.demo_base) gains one round, whose report is drawn, then a second round. The rounds
train fold 0 only (train.folds: [0]; round 0's fold 0 is reused) to keep the run short."""

from __future__ import annotations

import json
import re
from pathlib import Path

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

from birdclef import pseudo

pytestmark = pytest.mark.workflow

# A pseudo-label round (the default config has none: see config.yaml).
ONE_ROUND = [{"method": "power", "power": 2.0}]


@pytest.fixture(scope="module")
def rounds_run(demo_base, tmp_path_factory):
    """A copy of the session's demo run, for this module's rounds."""
    return copy_run(demo_base, tmp_path_factory.mktemp("rounds") / "wf")


def with_rounds(workdir: Path, rounds: list[dict], name: str) -> Path:
    """The default config with these pseudo rounds on fold 0, written beside it."""
    config = load_config(workdir)
    config["pseudo"]["rounds"] = rounds
    config["train"]["folds"] = [0]
    return write_config(workdir, name, config)


REPORT_SECTIONS = {
    # category -> the figures (paths under results/report/<stage>/<tag>/) it must hold
    "1. Data": ["data/*/recordings_per_class.png", "data/*/durations.png", "data/*/collections.png"],
    "2. VAD": ["vad/*/speech_removed.png", "vad/*/example_spectrogram.png"],
    "3. Mel spectrograms": ["mels/*/examples/classes_01-12.png"],
    # The report is drawn for the default config plus one pseudo round (ONE_ROUND, fold 0).
    "4. Training": ["train/*-r0-*/training_curves.png", "train/*-r1-*/training_curves.png"],
    "5. OOF ROC-AUC per class": ["oof/*-r0-*/per_class_roc_auc.png", "oof/*-r1-*/per_class_roc_auc.png"],
    "6. Pseudo-label rounds": ["pseudo/*/score_per_round.png", "pseudo/*/label_shift.png"],
    "7. Ensemble": ["ensemble/*/members.png"],
    "8. Export": ["export/*/precision.png"],
    "9. Submission": ["submission/*/score_per_class.png", "submission/*/prediction_histograms/classes_01-12.png"],
}


def report_json(html: str, name: str) -> dict:
    """A JSON object the Snakemake html report embeds as `var <name> = {...};`."""
    match = re.search(rf"var {name} = (\{{.*?\}});\n", html, flags=re.S)
    assert match, f"no `var {name}` in the report"
    return json.loads(match.group(1))


def test_report_has_every_section_and_figure(rounds_run):
    workdir = rounds_run
    one = with_rounds(workdir, ONE_ROUND, "one_round.yaml")  # so that the pseudo section is drawn
    snakemake(workdir, "--cores", "2", "report_figures", "--configfile", str(one))
    figures = {}
    for category, patterns in REPORT_SECTIONS.items():
        for pattern in patterns:
            (path,) = (workdir / "results/report").glob(pattern)
            assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000, path
            figures[path.relative_to(workdir).as_posix()] = category
    assert set(figures) == {
        p.relative_to(workdir).as_posix() for p in (workdir / "results/report").rglob("*.png")
    }
    snakemake(workdir, "--report", "report.html", "report_figures", "--configfile", str(one))
    html = (workdir / "report.html").read_text()
    categories = report_json(html, "categories")
    results = report_json(html, "results")
    assert set(categories) == set(REPORT_SECTIONS), categories.keys()
    for path, category in figures.items():
        assert any(path in paths for paths in categories[category].values()), (category, path)
        result = results[path]
        assert result["mime_type"] == "image/png" and result["data_uri"].startswith("data:image/png;")
        assert ";base64," in result["data_uri"]
        assert len(result["caption"]) > 100, (path, result["caption"])
        assert "System Message" not in result["caption"] and "{{" not in result["caption"], result["caption"]
    backbone = load_config(workdir)["train"]["backbones"][0]["name"]
    assert set(categories["4. Training"]) == {f"{backbone}, round 0", f"{backbone}, round 1"}
    assert "test_ground_truth.csv" in results[next(p for p in figures if p.endswith("score_per_class.png"))]["caption"]
    assert "BirdCLEF pipeline" in html  # the workflow description (report/workflow.rst)


def test_two_rounds_chain_and_the_ensemble_names_the_final_round(rounds_run):
    workdir = rounds_run
    one = with_rounds(workdir, ONE_ROUND, "one_round.yaml")
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(one))  # round 1 (or nothing: reused)
    two = with_rounds(workdir, [*ONE_ROUND, {"method": "both", "power": 1.5, "keep_threshold": 0.3}],
                      "two_rounds.yaml")
    jobs = planned_jobs(workdir, "submission", "--configfile", str(two))
    # Round 0 and round 1 are reused: only round 2 (its pseudo-labels and fold 0) and what follows run.
    assert jobs["train"] == 1 and jobs["pseudo"] == 1, jobs
    assert not COMPUTE_STAGES & set(jobs), jobs
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(two))
    runs = {p.name.split("-")[1]: p for p in (workdir / "results/train").iterdir() if p.is_dir()}
    assert {"r0", "r1", "r2"} <= set(runs)
    r1_tags = {p.name for p in (workdir / "results/train").iterdir() if "-r1-" in p.name}
    labels = [p for p in (workdir / "results/pseudo").glob("*/labels.parquet")]
    rounds = {}
    for path in labels:
        provenance = pseudo.read_provenance(str(path))
        rounds[provenance["round"]] = provenance
        frame = pd.read_parquet(path)
        assert (frame["round"] == provenance["round"]).all() and (frame["n_models"] >= 1).all()
    assert {1, 2} <= set(rounds)
    # Round 2's labels come from round 1's fold models.
    assert all(Path(m).parts[-3] in r1_tags for m in rounds[2]["models"]), rounds[2]["models"]
    assert rounds[2]["settings"]["method"] == "both"
    # Pseudo-labels never cover a labelled soundscape window, and each round scores the
    # previous round's models on the held-out labelled windows.
    (labels_dir,) = (workdir / "results/soundscape_labels").iterdir()
    labelled = set(pd.read_parquet(labels_dir / "labels.parquet")["row_id"])
    for path in labels:
        assert not set(pd.read_parquet(path)["row_id"]) & labelled, path
        headline = json.loads((path.parent / "manifest.json").read_text())["headline"]
        assert headline["soundscape_auc"] is not None and headline["labelled_windows_left_out"] > 0
    ensembles = sorted((workdir / "results/ensemble").glob("*/ensemble.json"), key=lambda p: p.stat().st_mtime)
    definition = json.loads(ensembles[-1].read_text())
    assert len(definition["members"]) == 1
    assert all("-r2-" in m["name"] and "-r2-" in m["checkpoint"] for m in definition["members"])
    assert definition["combine"] == "mean" and definition["postprocess"]["tta_shift_seconds"] == 0.0
    submission = pd.read_csv(workdir / "results/submission.csv")
    assert submission["row_id"].tolist() == expected_rows(workdir)

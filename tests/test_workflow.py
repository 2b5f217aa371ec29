"""Snakemake on the demo config, in a temporary directory: the whole product.

One full run is shared by the tests of this module (module-scoped fixture);
they then check what came out, the incremental reruns and the no-op.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import copy_workflow, load_config, planned_jobs, snakemake, write_config

from birdclef import pseudo

pytestmark = pytest.mark.workflow

COMPUTE_STAGES = {"catalog", "vad", "mels", "soundscape_mels", "folds"}


def mtimes(workdir: Path, stages: set[str]) -> dict[str, float]:
    """mtime of every file under results/<stage>/ for the given stages."""
    out = {}
    for stage in stages:
        for path in (workdir / "results" / stage).rglob("*"):
            if path.is_file():
                out[str(path.relative_to(workdir))] = path.stat().st_mtime_ns
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo workflow, run once end to end."""
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    result = snakemake(workdir, "--cores", "2", "submission")
    (first_submission,) = (workdir / "results/submission").iterdir()
    return workdir, result, first_submission


# A pseudo-label round (the default config has none: see config.yaml), for the tests of rounds.
ONE_ROUND = [{"method": "power", "power": 2.0}]


def with_rounds(workdir: Path, rounds: list[dict], name: str) -> Path:
    """The default config with these pseudo rounds, written beside it."""
    config = load_config(workdir)
    config["pseudo"]["rounds"] = rounds
    return write_config(workdir, name, config)


def expected_rows(workdir: Path) -> list[str]:
    """Every 5 s window of every demo test soundscape, files in name order (60 s each)."""
    stems = sorted(p.stem for p in (workdir / "resources/demo/test_soundscapes").glob("*.ogg"))
    return [f"{stem}_{end}" for stem in stems for end in range(5, 61, 5)]


def test_full_run_writes_a_scored_submission(demo_run):
    workdir, result, _ = demo_run
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
    assert headline["macro_roc_auc"] >= 0.80, headline
    log = next((workdir / "results/logs/submission").glob("*.log")).read_text()
    assert "macro ROC-AUC" in log and "precision f32" in log


def test_every_stage_wrote_a_versioned_artifact_with_manifest(demo_run):
    workdir, _, _ = demo_run
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
    assert mel_manifest["headline"]["recordings"] > 100


def test_labelled_soundscapes_validate_and_train_at_every_stage(demo_run):
    """The 2026 layout on the demo: labels file, held-out sites, a class without training audio."""
    workdir, _, _ = demo_run
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
    workdir, _, _ = demo_run
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


REPORT_SECTIONS = {
    # category -> the figures (paths under results/report/<stage>/<tag>/) it must hold
    "1. Data": ["data/*/recordings_per_class.png", "data/*/durations.png", "data/*/collections.png"],
    "2. VAD": ["vad/*/speech_removed.png", "vad/*/example_spectrogram.png"],
    "3. Mel spectrograms": ["mels/*/examples/classes_01-12.png"],
    # The report is drawn for the default config plus one pseudo round (ONE_ROUND).
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


def test_report_has_every_section_and_figure(demo_run):
    workdir, _, _ = demo_run
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


def test_noop_rerun_has_nothing_to_do(demo_run):
    workdir, _, _ = demo_run
    assert planned_jobs(workdir, "submission") == {}


def test_training_change_reruns_training_and_after_only(demo_run):
    workdir, _, _ = demo_run
    config = load_config(workdir)
    config["train"]["epochs"] = config["train"]["epochs"] - 2
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
    workdir, _, _ = demo_run
    config = load_config(workdir)
    config["submission"]["precision_hint"] = "bf16"
    changed = write_config(workdir, "changed_submission.yaml", config)
    jobs = planned_jobs(workdir, "submission", "--configfile", str(changed))
    assert set(jobs) == {"submission_predict", "publish_submission", "submission"}, jobs
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(changed))
    log = sorted((workdir / "results/logs/submission").glob("*.log"), key=lambda p: p.stat().st_mtime)[-1]
    assert "precision bf16" in log.read_text()


def test_switching_back_finds_the_old_artifacts(demo_run):
    workdir, _, first_submission = demo_run
    runs_before = sorted(p.name for p in (workdir / "results").glob("*/*") if p.is_dir())
    jobs = planned_jobs(workdir, "submission")
    # No stage runs again: only the stable copy results/submission.csv is
    # re-pointed at the old artifact.
    assert set(jobs) <= {"publish_submission", "submission"}, jobs
    snakemake(workdir, "--cores", "2", "submission")
    assert (workdir / "results/submission.csv").read_bytes() == (first_submission / "submission.csv").read_bytes()
    assert sorted(p.name for p in (workdir / "results").glob("*/*") if p.is_dir()) == runs_before
    assert planned_jobs(workdir, "submission") == {}


def test_two_rounds_chain_and_the_ensemble_names_the_final_round(demo_run):
    workdir, _, _ = demo_run
    one = with_rounds(workdir, ONE_ROUND, "one_round.yaml")
    snakemake(workdir, "--cores", "2", "submission", "--configfile", str(one))  # round 1 (or nothing: reused)
    two = with_rounds(workdir, [*ONE_ROUND, {"method": "both", "power": 1.5, "keep_threshold": 0.3}],
                      "two_rounds.yaml")
    jobs = planned_jobs(workdir, "submission", "--configfile", str(two))
    # Round 0 and round 1 are reused: only round 2 (its pseudo-labels and 2 folds) and what follows run.
    assert jobs["train"] == 2 and jobs["pseudo"] == 1, jobs
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
    assert len(definition["members"]) == 2
    assert all("-r2-" in m["name"] and "-r2-" in m["checkpoint"] for m in definition["members"])
    assert definition["combine"] == "mean" and definition["postprocess"]["tta_shift_seconds"] == 0.0
    submission = pd.read_csv(workdir / "results/submission.csv")
    assert submission["row_id"].tolist() == expected_rows(workdir)


def test_two_mel_configurations_in_one_ensemble(demo_run):
    """Two mel configurations in one ensemble; the second entry is also a taxon specialist."""
    workdir, _, _ = demo_run
    config = load_config(workdir)
    base = config["train"]["backbones"][0]
    other = {**base, "label": f"{base['name']}-48mels", "mels": {"n_mels": 48, "n_fft": 512, "hop_length": 400},
             "specialist": {"classes": {"class_name": ["Amphibia", "Insecta"]}, "upsample": 3.0}}
    config["train"]["backbones"] = [base, other]
    config["pseudo"]["rounds"] = []
    two = write_config(workdir, "two_mels.yaml", config)
    jobs = planned_jobs(workdir, "submission", "--configfile", str(two))
    # The base backbone's round 0 and the base caches are reused: the new
    # configuration's caches and the new entry's folds train.
    assert jobs["mels"] == 1 and jobs["soundscape_mels"] == 1 and jobs["train"] == 2, jobs
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
    assert by_group == {0: [base["name"]] * 2, 1: [other["label"]] * 2}, by_group
    assert set(definition["backbone_weights"]) == {base["name"], other["label"]}
    taxonomy = pd.read_csv(workdir / "resources/demo/taxonomy.csv", dtype={"primary_label": str})
    specialist = taxonomy.loc[taxonomy["class_name"].isin(["Amphibia", "Insecta"]), "primary_label"].tolist()
    assert 0 < len(specialist) < len(taxonomy), specialist
    for member in definition["members"]:
        assert member.get("specialist_classes") == (specialist if member["mel_group"] == 1 else None), member
    trained = [json.loads(path.read_text())["headline"] for path in (workdir / "results/train").glob("*/fold*/manifest.json")]
    assert sum(h.get("specialist") == {"classes": specialist, "upsample": 3.0} for h in trained) == 2

    exports = sorted((workdir / "results/export").glob("*/bundle.json"), key=lambda p: p.stat().st_mtime)
    bundle = json.loads(exports[-1].read_text())
    assert [g["n_mels"] for g in bundle["mel_groups"]] == [64, 48]
    assert [m.get("specialist_classes") for m in bundle["members"]] == [None, None, specialist, specialist]
    for group in bundle["mel_groups"]:
        filterbank = np.load(exports[-1].parent / group["filterbank"])
        assert filterbank.shape == (group["n_mels"], group["n_fft"] // 2 + 1)
    export = json.loads((exports[-1].parent / "manifest.json").read_text())["headline"]
    assert export["gate"]["status"] in ("passed", "failed"), export["gate"]
    assert len(export["members"]) == 4

    manifests = sorted((workdir / "results/submission").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    headline = json.loads(manifests[-1].read_text())["headline"]
    assert headline["macro_roc_auc"] >= 0.80, headline
    submission = pd.read_csv(workdir / "results/submission.csv")
    assert submission["row_id"].tolist() == expected_rows(workdir)

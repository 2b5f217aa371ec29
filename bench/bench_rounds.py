"""Evidence for pseudo-label rounds and post-processing: test macro ROC-AUC per step.

For each data variant (the demo, and a harder demo: 24 species, fewer
recordings per species, low soundscape SNR, more overlapping calls, more
unlabelled soundscapes), runs the workflow with 0, 1 and 2 pseudo-label
rounds, with power scaling (exponent from --power) and without it (exponent 1,
i.e. the averaged probabilities renormalised, no sharpening), with power
scaling that keeps each window's top probability (`normalize: max`) and with
the 2nd place's threshold rule. Rounds chain by
tag, so the runs share their earlier rounds' models. Each run's submission is
scored against the held-out test ground truth (int8 OpenVINO models, f32
inference precision). Then, on each run's export bundle, the post-processing
variants are scored: TTA (+-2.5 s shifted windows), neighbour smoothing, and
the per-soundscape power adjustment of low-ranked classes. A last run adds the
greedy model soup (`ensemble.soup`) to round 2 and tabulates, per fold, each
round's checkpoint alone, each candidate soup and what the greedy rule kept.

Usage: python bench/bench_rounds.py [--workdir DIR] [--cores 2] [--variants demo,hard]
Prints markdown tables for bench/README.md (and writes results.json in the workdir).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from benchlib import machine, markdown  # noqa: E402
from workflow_utils import copy_workflow, load_config, snakemake, write_config  # noqa: E402

from birdclef.common.metrics import score_submission  # noqa: E402
from birdclef.runtime.inference import load_bundle  # noqa: E402
from birdclef.runtime.submission import predict_submission  # noqa: E402

VARIANTS = {
    "demo": {},
    "hard": {
        "n_species": 24,
        "recordings_per_species": 6,
        "n_train_soundscapes": 16,
        "n_test_soundscapes": 20,
        "soundscape_snr_db": [-4.0, 6.0],
        "soundscape_overlap": 0.5,
    },
}

POSTPROCESS = {
    "tta": {"tta_shift_seconds": 2.5},
    "smoothing": {"smoothing": 0.25},
    "power_adjust": {"power_adjust_top_k": 3, "power_adjust_exponent": 2.0},
    "power_adjust k=8": {"power_adjust_top_k": 8, "power_adjust_exponent": 2.0},
    "all three": {"tta_shift_seconds": 2.5, "smoothing": 0.25, "power_adjust_top_k": 3,
                  "power_adjust_exponent": 2.0},
}


def run_config(
    workdir: Path, name: str, base: dict, demo: dict, rounds: list[dict], ensemble: dict, cores: str
) -> dict:
    """Run the workflow with these rounds and ensemble settings.

    Returns the submission's score, its folder, and the export and ensemble folders.
    """
    config = json.loads(json.dumps(base))
    config["data"]["demo"].update(demo)
    config["pseudo"] = {"rounds": rounds}
    config["ensemble"] = {**config.get("ensemble", {}), **ensemble}
    path = write_config(workdir, f"{name}.yaml", config)
    snakemake(workdir, "--cores", cores, "submission", "--configfile", str(path), timeout=5400)
    # results/submission.csv is the published copy of this config's submission: find its folder.
    published = (workdir / "results/submission.csv").read_bytes()
    for folder in (workdir / "results/submission").iterdir():
        if (folder / "submission.csv").is_file() and (folder / "submission.csv").read_bytes() == published:
            manifest = json.loads((folder / "manifest.json").read_text())
            export = workdir / "results/export" / manifest["upstream"]["export"]
            export_manifest = json.loads((export / "manifest.json").read_text())
            return {"score": manifest["headline"]["macro_roc_auc"], "submission": folder / "submission.csv",
                    "export": export, "ensemble": workdir / "results/ensemble" / export_manifest["upstream"]["ensemble"]}
    raise RuntimeError(f"no submission folder holds the published submission of {name}")


def bootstrap_sd(submission_csv: Path, truth_csv: Path, reps: int = 200) -> float:
    """Standard deviation of a submission's test macro ROC-AUC when the test soundscapes are resampled.

    A yardstick for how large a difference between two rows must be before it
    means something on this many test soundscapes (it leaves out training noise).
    """
    from birdclef.common.metrics import macro_roc_auc

    aligned = pd.read_csv(submission_csv)
    classes = list(aligned.columns[1:])
    truth = pd.read_csv(truth_csv).set_index("row_id").reindex(aligned["row_id"])
    scape = aligned["row_id"].str.rsplit("_", n=1).str[0].to_numpy()
    names = np.unique(scape)
    rows = {name: np.flatnonzero(scape == name) for name in names}
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(reps):
        pick = np.concatenate([rows[n] for n in rng.choice(names, size=len(names), replace=True)])
        value = macro_roc_auc(truth[classes].to_numpy()[pick], aligned[classes].to_numpy()[pick])
        if value is not None and np.isfinite(value):
            scores.append(value)
    return float(np.std(scores))


def score_postprocess(workdir: Path, export_dir: Path, settings: dict, threads: int) -> float:
    """Test macro ROC-AUC of the bundle with `settings` as its post-processing."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        definition = json.loads((export_dir / "bundle.json").read_text())
        definition["postprocess"] = settings
        (tmp / "bundle.json").write_text(json.dumps(definition))
        for item in export_dir.iterdir():
            if item.name not in ("bundle.json", "manifest.json"):
                (tmp / item.name).symlink_to(item.resolve())
        bundle = load_bundle(tmp, threads=threads, precision_hint="f32")
        root = workdir / "resources/demo"
        submission, _ = predict_submission(root / "test_soundscapes", root / "sample_submission.csv",
                                           bundle, progress=False)
        truth = pd.read_csv(root / "test_ground_truth.csv")
        return float(score_submission(submission, truth, list(submission.columns[1:])))


def round_of(checkpoint: str) -> str:
    """"r<k>" of a results/train/<backbone>-r<k>-<hash>/fold<f>/best.pt path."""
    return Path(checkpoint).parts[-3].split("-")[1]


def soup_rows(variant: str, ensemble_dir: Path) -> list[dict]:
    """One row per soup member: each ingredient alone, each candidate soup, what was kept."""
    manifest = json.loads((ensemble_dir / "manifest.json").read_text())
    rows = []
    for member, soup in manifest["soups"].items():
        rows.append({
            "data": variant,
            "member": member.split("/")[-1],
            "ingredients alone": ", ".join(f"{round_of(p)} {v:.4f}" for p, v in soup["scores"].items()),
            "candidate soups": ", ".join(f"+{round_of(t['added'])} {t['oof_auc']:.4f}" for t in soup["tried"]),
            "kept": " + ".join(round_of(p) for p in soup["ingredients"]),
            "soup OOF": round(soup["oof_auc"], 4),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--cores", default="2")
    parser.add_argument("--variants", default="demo,hard")
    parser.add_argument("--power", type=float, default=2.0)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_rounds_"))
    results, soups = [], []
    for variant in args.variants.split(","):
        workdir = root / variant
        copy_workflow(workdir)  # (again): results stay, the workflow files are the current ones
        base = load_config(workdir)
        power = {"method": "power", "power": args.power}
        runs = {  # name: (pseudo rounds, ensemble settings)
            "round 0": ([], {}),
            "round 1, power scaling": ([power], {}),
            "round 2, power scaling": ([power] * 2, {}),
            "round 1, no scaling": ([{"method": "power", "power": 1.0}], {}),
            "round 2, no scaling": ([{"method": "power", "power": 1.0}] * 2, {}),
            "round 1, power, max-normalised": ([{**power, "normalize": "max"}], {}),
            "round 2, power, max-normalised": ([{**power, "normalize": "max"}] * 2, {}),
            "round 1, threshold rule": ([{"method": "threshold"}], {}),
            "round 2, power scaling, soup": ([power] * 2, {"soup": True}),
        }
        for name, (rounds, ensemble) in runs.items():
            slug = name.replace(" ", "_").replace(",", "")
            outcome = run_config(workdir, slug, base, VARIANTS[variant], rounds, ensemble, args.cores)
            row = {"data": variant, "run": name, "submission": round(outcome["score"], 4),
                   "bootstrap sd": round(bootstrap_sd(outcome["submission"],
                                                      workdir / "resources/demo/test_ground_truth.csv"), 4)}
            for label, settings in POSTPROCESS.items():
                row[f"pp: {label}"] = round(score_postprocess(workdir, outcome["export"], settings, 2), 4)
            results.append(row)
            print(row, flush=True)
            if ensemble.get("soup"):
                soups.extend(soup_rows(variant, outcome["ensemble"]))
    (root / "results.json").write_text(json.dumps({"rounds": results, "soups": soups}, indent=2))
    print(f"\nMachine: {machine()}; {dt.date.today().isoformat()}; int8 OpenVINO members, f32 inference "
          "precision; macro ROC-AUC on the held-out test soundscapes\n")
    print(markdown(results))
    print("\nGreedy soups (OOF macro ROC-AUC on each fold's validation recordings):\n")
    print(markdown(soups))


if __name__ == "__main__":
    main()

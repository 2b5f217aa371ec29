"""Benchmark: the demo pipeline per stage, and the no-op dry run.

1. Runs the demo config end to end in a fresh directory and tabulates each
   job's Snakemake `benchmark:` file (wall seconds, max RSS).
2. Runs a "wide" config (5 folds x 2 backbones, one pseudo round, tiny
   schedules) to completion, then times the no-op `snakemake -n submission`
   (target: under 3 s), and Snakemake's start-up alone (`snakemake --version`:
   imports and plugin discovery, no Snakefile read), so that the rest of the
   no-op time is parsing the Snakefile, the tags and the DAG.

Usage: python bench/bench_pipeline.py [--workdir DIR] [--cores 2] [--repeats 5]
Prints markdown tables for bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from benchlib import machine, markdown  # noqa: E402
from workflow_utils import copy_workflow, load_config, snakemake, write_config  # noqa: E402


def stage_table(workdir: Path) -> pd.DataFrame:
    """One row per rule: jobs, total and max wall seconds, max RSS, from the benchmark files."""
    rows = []
    for path in (workdir / "results/benchmarks").rglob("*.tsv"):
        relative = path.relative_to(workdir / "results/benchmarks")
        rule = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        record = pd.read_csv(path, sep="\t").iloc[0]
        rows.append({"stage": rule, "seconds": float(record["s"]), "max_rss_mb": float(record["max_rss"])})
    frame = pd.DataFrame(rows)
    table = frame.groupby("stage").agg(
        jobs=("seconds", "size"), total_s=("seconds", "sum"), max_job_s=("seconds", "max"), max_rss_mb=("max_rss_mb", "max")
    )
    order = ["demo_data", "catalog", "vad", "mels", "soundscape_mels", "folds", "train", "pseudo", "ensemble", "export", "submission"]
    table = table.reindex([s for s in order if s in table.index])
    table["jobs"] = table["jobs"].astype(int)
    return table


def time_startup(workdir: Path, repeats: int) -> list[float]:
    """Wall seconds of `snakemake --version`: imports and plugin discovery, no Snakefile."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        snakemake(workdir, "--version")
        times.append(time.perf_counter() - start)
    return times


def time_noop(workdir: Path, repeats: int, *extra: str) -> list[float]:
    """Wall seconds of `snakemake -n submission` on a finished run."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = snakemake(workdir, "-n", "submission", *extra)
        times.append(time.perf_counter() - start)
        text = result.stdout + result.stderr
        if "Nothing to be done" not in text:
            raise RuntimeError(f"dry run is not a no-op:\n{text[-3000:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--cores", default="2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--noop-only", action="store_true", help="only time the no-op dry runs of an earlier --workdir"
    )
    args = parser.parse_args()
    if args.noop_only:
        if args.workdir is None:
            parser.error("--noop-only needs the --workdir of an earlier run")
        print(f"Machine: {machine()}  \nDate: {dt.date.today().isoformat()}\n")
        print_noop_table(args.workdir, args.repeats)
        return
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    print(f"Machine: {machine()}  \nDate: {dt.date.today().isoformat()}  \nWork dir: {base}\n")

    demo = copy_workflow(base / "demo")
    start = time.perf_counter()
    snakemake(demo, "--cores", args.cores, "submission", timeout=3600)
    total = time.perf_counter() - start
    table = stage_table(demo)
    print(f"### Demo pipeline, `snakemake --cores {args.cores} submission` (total wall {total:.0f} s)\n")
    print(markdown(table.reset_index().to_dict("records"), "{:.1f}"))
    score = yaml.safe_load(next((demo / "results/submission").glob("*/manifest.json")).read_text())["headline"]
    print(f"\nDemo submission macro ROC-AUC: {score['macro_roc_auc']:.4f} (OpenVINO {score['model_precision']} model, "
          f"inference precision {score['inference_precision']})\n")
    wide = copy_workflow(base / "wide")
    config = load_config(wide)
    config["folds"]["n_folds"] = 5
    config["train"]["backbones"] = [{"name": "lcnet_050"}, {"name": "test_efficientnet"}]
    config["train"]["epochs"] = 1
    config["train"]["samples_per_epoch"] = 64
    path = write_config(wide, "wide.yaml", config)
    start = time.perf_counter()
    snakemake(wide, "--cores", args.cores, "submission", "--configfile", str(path), timeout=3600)
    wide_total = time.perf_counter() - start
    print(f"(the wide run itself took {wide_total:.0f} s with 1-epoch schedules)\n")
    print_noop_table(base, args.repeats)


def print_noop_table(base: Path, repeats: int) -> None:
    """Time the no-op dry runs of the demo and wide runs under `base` and print the table."""
    demo, wide = base / "demo", base / "wide"
    demo_noop = time_noop(demo, repeats)
    wide_noop = time_noop(wide, repeats, "--configfile", str(wide / "wide.yaml"))
    startup = time_startup(demo, repeats)
    print("### No-op dry run, `snakemake -n submission` on a finished run\n")
    rows = [
        {
            "config": name,
            "jobs (with benchmark files)": len(list((workdir / "results/benchmarks").rglob("*.tsv"))),
            "median s": statistics.median(times),
            "min s": min(times),
            "max s": max(times),
            "target": "< 3 s",
        }
        for name, times, workdir in (
            ("demo (2 folds x 1 backbone x 2 rounds)", demo_noop, demo),
            ("5 folds x 2 backbones x 2 rounds", wide_noop, wide),
        )
    ]
    print(markdown(rows, "{:.2f}"))
    print(f"\nSnakemake start-up alone (`snakemake --version`: imports and plugin discovery, no "
          f"Snakefile): median {statistics.median(startup):.2f} s (min {min(startup):.2f}) of "
          f"{repeats}; the rest of the demo's median no-op, "
          f"{statistics.median(demo_noop) - statistics.median(startup):.2f} s, is parsing the "
          "Snakefile, computing the tags and the DAG.")


if __name__ == "__main__":
    main()

"""Run the workflow in a temporary directory, the way a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# The stages before training: a change of training or later settings never reruns them.
COMPUTE_STAGES = {"catalog", "vad", "mels", "soundscape_mels", "folds"}
WORKFLOW_FILES = ("Snakefile", "config.yaml", "schemas", "rules", "workflow_scripts", "profiles", "envs", "report")


def copy_workflow(destination: Path) -> Path:
    """Copy the workflow (not results) into `destination`; returns it."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
            )
        else:
            shutil.copy2(source, destination / name)
    return destination


def copy_run(base: Path, destination: Path) -> Path:
    """Copy a workdir that Snakemake has run in (workflow, results, .snakemake metadata) to
    `destination`, modification times kept: Snakemake there finds the same artifacts up to date."""
    shutil.copytree(base, destination, symlinks=True)
    return destination


def new_runs(workdir: Path, base: Path, stage: str) -> list[Path]:
    """The artifact folders of `stage` in `workdir` that its copy source `base` does not have."""
    before = {p.name for p in (base / "results" / stage).iterdir()} if (base / "results" / stage).is_dir() else set()
    return sorted(p for p in (workdir / "results" / stage).iterdir() if p.is_dir() and p.name not in before)


def load_config(workdir: Path) -> dict:
    """The workflow's default config."""
    return yaml.safe_load((workdir / "config.yaml").read_text())


def write_config(workdir: Path, name: str, config: dict) -> Path:
    """Write a config file beside the default one; returns its path."""
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 1500, env_extra: dict | None = None
) -> subprocess.CompletedProcess:
    """Run snakemake in `workdir` with this interpreter's environment (plus `env_extra`)."""
    binary = Path(sys.executable).parent / "snakemake"
    env = {**os.environ, **(env_extra or {})}
    if "SLURM_CONF" not in env:
        # snakemake-executor-plugin-slurm runs `scontrol show config` when it is
        # imported (at every Snakemake start); where Slurm's tools are installed
        # but no controller runs, that waits ~10 s. An empty config fails at once.
        empty = Path(tempfile.gettempdir()) / "birdclef-tests-no-slurm.conf"
        empty.touch()
        env["SLURM_CONF"] = str(empty)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [str(binary), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule name -> job count that `snakemake -n` plans (empty when nothing to do)."""
    result = snakemake(workdir, *args, "-n", "--quiet", "rules")
    text = result.stdout + result.stderr
    jobs: dict[str, int] = {}
    in_table = False
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if not parts or parts[0] == "total":
                break
            if set(parts[0]) == {"-"}:
                continue
            if len(parts) == 2 and parts[1].isdigit():
                jobs[parts[0]] = int(parts[1])
    return jobs


def expected_rows(workdir: Path) -> list[str]:
    """Every 5 s window of every demo test soundscape, files in name order (60 s each)."""
    stems = sorted(p.stem for p in (workdir / "resources/demo/test_soundscapes").glob("*.ogg"))
    return [f"{stem}_{end}" for stem in stems for end in range(5, 61, 5)]

"""The workflow on a real Slurm cluster, through profiles/slurm and snakemake-executor-plugin-slurm.

tools/slurm/local-cluster.sh installs Debian's Slurm and munge when missing and
starts a one-node cluster on this machine (partitions `cpu` and `gpu`, one GPU
gres). The demo workflow runs once locally and once with
`--profile profiles/slurm`; every job but the local copy must have been a
Slurm job in the right partition, training jobs must have carried the GPU
request, and both submissions must agree. Skips only where Slurm cannot be
started (not root, or no Slurm and no apt-get); fails otherwise.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import REPO, copy_workflow, load_config, snakemake, write_config

pytestmark = pytest.mark.workflow

SCRIPT = REPO / "tools" / "slurm" / "local-cluster.sh"
CANNOT_START = 77  # the script's exit status where Slurm cannot be started here
# One cluster per machine (/etc/slurm, fixed ports): concurrent test runs queue here.
LOCK = Path(tempfile.gettempdir()) / "birdclef-local-slurm.lock"
LOCK_TIMEOUT_S = 1800
# Where the script writes the cluster's config (srun inside jobs reads it there).
SLURM_ENV = {"SLURM_CONF": "/etc/slurm/slurm.conf"}
# Both runs cap every rule at the same thread count, so that training computes
# the same numbers; the Slurm node has nproc CPUs.
THREADS = max(1, min(2, os.cpu_count() or 1))
SLURM_RULES = {
    "demo_data", "catalog", "vad", "mels", "soundscape_mels", "soundscape_labels", "folds",
    "train", "ensemble", "export", "submission_predict",
}
GPU_RULES = {"train"}
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")


def _local_cluster(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def _take_lock():
    handle = LOCK.open("w")
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                pytest.fail(f"another test run holds the local Slurm cluster ({LOCK}) for over {LOCK_TIMEOUT_S} s")
            time.sleep(2)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node Slurm cluster; yields its state dir, stops it afterwards."""
    lock = _take_lock()
    try:
        state_dir = tmp_path_factory.mktemp("slurm-cluster") / "state"
        # A failed start cleans up after itself; only a started cluster needs `stop`.
        started = _local_cluster("start", "--state-dir", str(state_dir))
        if started.returncode == CANNOT_START:
            reason = started.stderr.strip().splitlines()[-1] if started.stderr.strip() else ""
            pytest.skip(f"Slurm cannot be started on this machine ({reason})")
        if started.returncode != 0:
            pytest.fail(f"tools/slurm/local-cluster.sh start failed ({started.returncode}):\n{started.stderr}")
        try:
            yield state_dir
        finally:
            stopped = _local_cluster("stop", timeout=120)
            assert stopped.returncode == 0, f"stopping the local cluster failed:\n{stopped.stderr}"
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _slurm(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **SLURM_ENV}
    )


def _scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` of one job as a dict (finished jobs stay for MinJobAge)."""
    result = _slurm("scontrol", "--oneliner", "show", "job", job_id)
    assert result.returncode == 0, f"scontrol show job {job_id}: {result.stderr}"
    out = result.stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def _completion_log(state_dir: Path) -> dict[str, dict[str, str]]:
    """The controller's job completion log (jobcomp/filetxt): job id -> fields."""
    records = {}
    for line in (state_dir / "log" / "jobcomp.log").read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


def _small_config(workdir: Path) -> Path:
    config = load_config(workdir)
    config["data"]["demo"].update(
        {"n_species": 10, "recordings_per_species": 4, "n_train_soundscapes": 1, "n_test_soundscapes": 1}
    )
    config["train"].update({"epochs": 1, "samples_per_epoch": 64, "folds": [0]})
    config["pseudo"]["rounds"] = []
    config["export"].update({"precision": "fp16", "on_gate_fail": "warn"})
    return write_config(workdir, "small.yaml", config)


def test_gpu_job_steps_get_cuda_visible_devices(slurm_cluster):
    """A --gpus=1 job step (as the plugin's jobstep launches it) sees its GPU in CUDA_VISIBLE_DEVICES."""
    output = slurm_cluster / "gpu-probe.out"
    result = _slurm(
        "sbatch", "--parsable", "--partition", "gpu", "--gpus=1", "--cpus-per-task=1", "--mem", "100",
        "--output", str(output),
        "--wrap", "srun -n1 --gpus=1 --nodes=1 --cpus-per-task=1 printenv CUDA_VISIBLE_DEVICES",
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while (state := _scontrol_job(job_id)["JobState"]) in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"GPU probe job {job_id} still {state} after 300 s"
        time.sleep(0.5)
    assert state == "COMPLETED", (job_id, state, output.read_text() if output.exists() else "")
    visible = output.read_text().split()
    assert len(visible) == 1 and visible[0] != "", f"CUDA_VISIBLE_DEVICES in a GPU job step: {visible}"


def test_demo_workflow_on_slurm_matches_the_local_run(slurm_cluster, tmp_path):
    local_dir = copy_workflow(tmp_path / "local")
    cluster_dir = copy_workflow(tmp_path / "cluster")
    local_config = _small_config(local_dir)
    cluster_config = _small_config(cluster_dir)

    # Both runs at once: the Slurm run spends most of its time waiting.
    with ThreadPoolExecutor(max_workers=2) as pool:
        local_run = pool.submit(
            snakemake, local_dir, "--cores", str(THREADS), "--max-threads", str(THREADS),
            "submission", "--configfile", str(local_config),
        )
        cluster_run = pool.submit(
            snakemake, cluster_dir,
            "--profile", "profiles/slurm", "--workflow-profile", "none",
            "--max-threads", str(THREADS),
            # No slurmdbd here: job states come from squeue; poll soon after submitting.
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "3",
            "--slurm-keep-successful-logs",
            "submission", "--configfile", str(cluster_config),
            env_extra={**SLURM_ENV, "BIRDCLEF_SLURM_PARTITION": "cpu", "BIRDCLEF_SLURM_GPU_PARTITION": "gpu"},
        )
        local_run.result()
        cluster = cluster_run.result()
    output = cluster.stdout + cluster.stderr

    # Every job but the local copy was submitted with sbatch; the plugin's log
    # of each one is kept beside the workflow.
    submitted = {job_id: Path(log) for job_id, log in SUBMITTED.findall(output)}
    assert submitted, f"no job was submitted to Slurm:\n{output[-4000:]}"
    rules = {}
    for job_id, log in submitted.items():
        assert log.is_file(), f"Slurm log of job {job_id} is missing: {log}"
        assert "Finished jobid" in log.read_text(), f"Slurm job {job_id} did not finish its rule ({log})"
        info = _scontrol_job(job_id)
        rule = re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", info["Comment"]).group(1)
        rules.setdefault(rule, []).append(job_id)
        assert info["JobState"] == "COMPLETED", (job_id, rule, info["JobState"])
        assert Path(info["WorkDir"]).resolve() == cluster_dir.resolve()
        if rule in GPU_RULES:
            assert info["Partition"] == "gpu", (job_id, rule, info["Partition"])
            assert "gpu:1" in info.get("TresPerJob", "") + info.get("TresPerNode", ""), (job_id, rule, info)
            assert f"cpu={THREADS}," in info["TRES"] and "mem=16000M" in info["TRES"], (job_id, rule, info["TRES"])
        else:
            assert info["Partition"] == "cpu", (job_id, rule, info["Partition"])
            assert "gpu" not in info.get("TresPerJob", "") + info.get("TresPerNode", ""), (job_id, rule, info)
    assert set(rules) == SLURM_RULES, f"rules run as Slurm jobs: {sorted(rules)}"
    assert len(rules["train"]) == 1, rules["train"]

    # The controller's own record of the finished jobs agrees.
    completed = _completion_log(slurm_cluster)
    for job_id in submitted:
        assert job_id in completed, f"Slurm job {job_id} is not in the job completion log"
        assert completed[job_id]["JobState"] == "COMPLETED", completed[job_id]
        assert completed[job_id]["Partition"] == ("gpu" if job_id in rules["train"] else "cpu"), completed[job_id]

    # Same config, same thread counts: the same submission.
    local = pd.read_csv(local_dir / "results" / "submission.csv")
    on_cluster = pd.read_csv(cluster_dir / "results" / "submission.csv")
    assert list(on_cluster.columns) == list(local.columns)
    assert on_cluster["row_id"].tolist() == local["row_id"].tolist()
    np.testing.assert_allclose(
        on_cluster.drop(columns="row_id").to_numpy(), local.drop(columns="row_id").to_numpy(), rtol=0, atol=1e-5
    )

"""Benchmark: OpenMP's wait policy when two torch trainings share the cores.

`make test` runs two pytest-xdist workers, each starting Snakemake jobs, on a
2-core CI machine; tests/conftest.py sets OMP_WAIT_POLICY=PASSIVE for them
(DESIGN.md, "The test suite's time"). This measures why: seconds per training
step of a timm efficientnet_b0 (batch 32 of 1 x 64 x 313 mels, SGD, THREADS
torch threads), alone and as two concurrent processes, with libgomp's default
(threads spin while they wait) and with PASSIVE.

Usage: python bench/bench_omp_wait.py [--threads 2] [--steps 6]
Prints a markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from benchlib import machine, markdown  # noqa: E402

STEP = """
import sys, time, torch, timm
torch.set_num_threads(int(sys.argv[1]))
model = timm.create_model("efficientnet_b0", num_classes=12, in_chans=1, pretrained=False)
x = torch.randn(32, 1, 64, 313)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
def step():
    model(x).mean().backward(); opt.step(); opt.zero_grad()
for _ in range(2):
    step()
start = time.perf_counter()
for _ in range(int(sys.argv[2])):
    step()
print((time.perf_counter() - start) / int(sys.argv[2]))
"""


def seconds_per_step(processes: int, policy: str | None, threads: int, steps: int) -> list[float]:
    """s/step of each of `processes` concurrent trainings (OMP_WAIT_POLICY=policy; None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    runs = [subprocess.Popen([sys.executable, "-c", STEP, str(threads), str(steps)], env=env,
                             stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return [float(run.communicate()[0]) for run in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    header = (f"`python bench/bench_omp_wait.py --threads {args.threads} --steps {args.steps}`, "
              f"{dt.date.today()}: {machine(['torch', 'timm'], load=True)}\n")
    rows = []
    for processes in (1, 2):
        for policy in (None, "PASSIVE"):
            times = seconds_per_step(processes, policy, args.threads, args.steps)
            rows.append({"processes": processes, "OMP_WAIT_POLICY": policy or "unset (spin)",
                         "threads_each": args.threads,
                         "s_per_step_each": " / ".join(f"{t:.2f}" for t in times)})
    print(header)
    print(markdown(rows))


if __name__ == "__main__":
    main()

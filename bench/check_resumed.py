"""Which training runs of a bench workdir were resumed, and which epoch they shipped.

Until 2026-12-01 a training job rerun by Snakemake (which deletes ``best.pt``
first) continued from ``last.pt`` and chose the best epoch only among the epochs
after the resume; a finished job rerun shipped its last epoch. This lists, for
each ``results/train/<tag>/fold<k>/metrics.json`` under each workdir, the runs
that were resumed: the epoch resumed from, the epoch shipped in ``best.pt``, the
epoch with the best validation score in the run's own history, and the OOF
macro ROC-AUC of both. A bench row built on such a run measured a model that an
uninterrupted run would not have shipped.

Usage: python bench/check_resumed.py WORKDIR [WORKDIR ...] [--all]
Prints one markdown table (``--all``: every run, resumed or not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import markdown  # noqa: E402


def runs(workdir: Path, every: bool) -> list[dict]:
    """One row per (tag, fold) of `workdir`'s training runs (only resumed ones unless `every`)."""
    rows = []
    for path in sorted(workdir.glob("results/train/*/fold*/metrics.json")):
        metrics = json.loads(path.read_text())
        resumed = int(metrics.get("resumed_from_epoch") or 0)
        if not resumed and not every:
            continue
        history = metrics.get("epochs") or []
        scored = [h for h in history if h.get("oof_auc") is not None]
        best = max(scored, key=lambda h: h["oof_auc"]) if scored else None
        shipped = int(metrics["best_epoch"])
        at_shipped = next((h.get("oof_auc") for h in history if h["epoch"] == shipped), None)
        rows.append({
            "workdir": str(workdir),
            "run": f"{path.parent.parent.name}/{path.parent.name}",
            "resumed from epoch": resumed,
            "epoch shipped": shipped,
            "best epoch (OOF)": None if best is None else best["epoch"],
            "OOF shipped": None if at_shipped is None else round(at_shipped, 4),
            "OOF best": None if best is None else round(best["oof_auc"], 4),
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--all", action="store_true", help="list every run, not only resumed ones")
    args = parser.parse_args(argv)
    rows = [row for workdir in args.workdirs for row in runs(workdir, args.all)]
    print(markdown(rows) if rows else "no resumed training runs")


if __name__ == "__main__":
    main()

"""Snakemake entry point of rule report_ensemble (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import ensemble_report

setup_logging(snakemake.log[0])
ensemble_report(
    ensemble_path=snakemake.input.ensemble,
    out_png=snakemake.output.members,
    checkpoint_rounds=snakemake.params.checkpoint_rounds,
)

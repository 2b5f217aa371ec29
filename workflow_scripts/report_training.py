"""Snakemake entry point of rule report_training (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import training_report

setup_logging(snakemake.log[0])
training_report(
    metrics_paths=list(snakemake.input.metrics),
    title=snakemake.params.title,
    out_png=snakemake.output.curves,
)

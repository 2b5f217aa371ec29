"""Snakemake entry point of rule report_submission (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import submission_report

setup_logging(snakemake.log[0])
submission_report(
    submission_csv=snakemake.input.submission,
    taxonomy_csv=snakemake.input.taxonomy,
    out_histograms=snakemake.output.histograms,
    ground_truth_csv=snakemake.input.get("ground_truth"),
)

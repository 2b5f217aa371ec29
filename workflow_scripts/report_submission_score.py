"""Snakemake entry point of rule report_submission_score (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import submission_score_report

setup_logging(snakemake.log[0])
submission_score_report(
    submission_csv=snakemake.input.submission,
    ground_truth_csv=snakemake.input.ground_truth,
    taxonomy_csv=snakemake.input.taxonomy,
    out_png=snakemake.output.score,
)

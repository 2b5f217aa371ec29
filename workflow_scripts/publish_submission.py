"""Snakemake entry point of rule publish_submission (logic: birdclef.submission_stage)."""

from birdclef.common.logs import setup_logging
from birdclef.submission_stage import publish_submission

setup_logging(snakemake.log[0])
publish_submission(snakemake.input.submission, snakemake.output[0])

"""Snakemake entry point of rule publish_submission (logic: birdclef.submission)."""

from birdclef.logs import setup_logging
from birdclef.submission import publish_submission

setup_logging(snakemake.log[0])
publish_submission(snakemake.input.submission, snakemake.output[0])

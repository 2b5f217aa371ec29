"""Snakemake entry point of rule demo_data (logic: birdclef.demo)."""

from birdclef.common.logs import setup_logging
from birdclef.demo import demo_stage

setup_logging(snakemake.log[0])
demo_stage(out_root=snakemake.params.root, settings=snakemake.params.settings)

"""Snakemake entry point of rule folds (logic: birdclef.folds)."""

from birdclef.folds import folds_stage
from birdclef.logs import setup_logging

setup_logging(snakemake.log[0])
folds_stage(
    index_path=snakemake.input.index,
    out_folds=snakemake.output.folds,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
)

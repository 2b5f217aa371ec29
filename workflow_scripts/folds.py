"""Snakemake entry point of rule folds (logic: birdclef.folds)."""

from birdclef.common.logs import setup_logging
from birdclef.folds import folds_stage

setup_logging(snakemake.log[0])
folds_stage(
    index_path=snakemake.input.index,
    out_folds=snakemake.output.folds,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
)

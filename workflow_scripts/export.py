"""Snakemake entry point of rule export (logic: birdclef.export)."""

from birdclef.export import export_stage
from birdclef.logs import setup_logging

setup_logging(snakemake.log[0])
export_stage(
    ensemble_path=snakemake.input.ensemble,
    mels_path=snakemake.input.mels,
    index_path=snakemake.input.index,
    folds_path=snakemake.input.folds,
    out_bundle=snakemake.output.bundle,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    mel=snakemake.params.mel,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
    threads=snakemake.threads,
)

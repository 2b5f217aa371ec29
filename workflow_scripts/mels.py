"""Snakemake entry point of rule mels (logic: birdclef.mels)."""

from birdclef.common.logs import setup_logging
from birdclef.mels import mels_stage

setup_logging(snakemake.log[0])
mels_stage(
    catalog_path=snakemake.input.catalog,
    out_mels=snakemake.output.mels,
    out_index=snakemake.output.index,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
    threads=snakemake.threads,
)

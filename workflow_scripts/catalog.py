"""Snakemake entry point of rule catalog (logic: birdclef.catalog)."""

from birdclef.catalog import catalog_stage
from birdclef.common.logs import setup_logging

setup_logging(snakemake.log[0])
catalog_stage(
    train_csv=snakemake.input.train_csv,
    taxonomy_csv=snakemake.input.taxonomy,
    audio_dir=snakemake.input.audio_dir,
    out_catalog=snakemake.output.catalog,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
    extra_csv=snakemake.input.get("extra_csv"),
    extra_audio_dir=snakemake.input.get("extra_audio"),
    threads=snakemake.threads,
)

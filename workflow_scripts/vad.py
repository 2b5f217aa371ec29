"""Snakemake entry point of rule vad (logic: birdclef.vad)."""

from birdclef.common.logs import setup_logging
from birdclef.vad import vad_stage

setup_logging(snakemake.log[0])
vad_stage(
    catalog_path=snakemake.input.catalog,
    out_spans=snakemake.output.spans,
    out_catalog=snakemake.output.catalog,
    out_clean=snakemake.output.clean,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
    threads=snakemake.threads,
)

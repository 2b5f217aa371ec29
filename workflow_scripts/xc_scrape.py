"""Snakemake entry point of rule xc_scrape (logic: birdclef.xeno_canto)."""

from birdclef.logs import setup_logging
from birdclef.xeno_canto import scrape_stage

setup_logging(snakemake.log[0])
scrape_stage(
    train_csv=snakemake.input.train_csv,
    taxonomy_csv=snakemake.input.taxonomy,
    out_rows=snakemake.output.rows,
    out_metadata=snakemake.output.metadata,
    out_audio=snakemake.output.audio,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    key_env=snakemake.params.key_env,
    tag=snakemake.params.tag,
)

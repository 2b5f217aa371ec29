"""Snakemake entry point of rule xc_scrape (logic: birdclef.xeno_canto)."""

from birdclef.common.logs import setup_logging
from birdclef.xeno_canto import scrape_stage

setup_logging(snakemake.log[0])
execution = snakemake.config["xeno_canto"]  # rate, retries, workers, key variable: not result-changing
scrape_stage(
    train_csv=snakemake.input.train_csv,
    taxonomy_csv=snakemake.input.taxonomy,
    out_rows=snakemake.output.rows,
    out_metadata=snakemake.output.metadata,
    out_audio=snakemake.output.audio,
    out_manifest=snakemake.output.manifest,
    settings={
        **snakemake.params.settings,
        **{k: execution[k] for k in ("requests_per_second", "download_workers", "timeout_seconds", "max_retries", "backoff_seconds")},
    },
    key_env=execution["key_env"],
    tag=snakemake.params.tag,
)

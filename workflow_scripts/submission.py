"""Snakemake entry point of rule submission_predict (logic: birdclef.submission_stage)."""

from birdclef.common.logs import setup_logging
from birdclef.submission_stage import submission_stage

setup_logging(snakemake.log[0])
submission_stage(
    bundle_path=snakemake.input.bundle,
    sample_submission_csv=snakemake.input.sample_submission,
    soundscape_dir=snakemake.input.test_soundscapes,
    ground_truth_csv=snakemake.input.get("ground_truth"),
    out_submission=snakemake.output.submission,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
    threads=snakemake.threads,
    kaggle_data_dir=snakemake.config["submission"]["kaggle_data_dir"],
)

"""Snakemake entry point of rule ensemble (logic: birdclef.ensemble.stage)."""

from birdclef.common.logs import setup_logging
from birdclef.ensemble.stage import ensemble_stage

setup_logging(snakemake.log[0])
ensemble_stage(
    members=snakemake.params.members,
    index_paths=list(snakemake.input.index),
    taxonomy_csv=snakemake.input.taxonomy,
    mel_groups=snakemake.params.mel_groups,
    out_ensemble=snakemake.output.ensemble,
    out_soups=snakemake.output.soups,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
    mels_paths=list(snakemake.input.mels),
    folds_path=snakemake.input.folds,
    train_settings=snakemake.params.train_settings,
    threads=snakemake.threads,
    labelled_path=snakemake.input.get("soundscape_labels"),
)

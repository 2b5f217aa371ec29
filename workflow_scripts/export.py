"""Snakemake entry point of rule export (logic: birdclef.export)."""

from birdclef.common.logs import setup_logging
from birdclef.export import export_stage

setup_logging(snakemake.log[0])
export_stage(
    ensemble_path=snakemake.input.ensemble,
    mels_paths=list(snakemake.input.mels),
    index_paths=list(snakemake.input.index),
    folds_path=snakemake.input.folds,
    out_bundle=snakemake.output.bundle,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
    threads=snakemake.threads,
    soundscape_mels_paths=list(snakemake.input.soundscape_mels),
    soundscape_index_paths=list(snakemake.input.soundscape_index),
    labelled_path=snakemake.input.get("soundscape_labels"),
    teacher=snakemake.params.teacher,
    taxonomy_csv=snakemake.input.get("taxonomy"),
    catalog_path=snakemake.input.get("catalog"),
    soundscapes_dir=snakemake.input.get("soundscapes"),
)

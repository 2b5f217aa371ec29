"""Snakemake entry point of rule soundscape_labels (logic: birdclef.soundscapes)."""

from birdclef.common.logs import setup_logging
from birdclef.soundscapes import soundscape_labels_stage

setup_logging(snakemake.log[0])
soundscape_labels_stage(
    labels_csv=snakemake.input.labels,
    taxonomy_csv=snakemake.input.taxonomy,
    soundscape_index_path=snakemake.input.index,
    out_labels=snakemake.output.labels,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
)

"""Snakemake entry point of rule soundscape_mels (logic: birdclef.mels)."""

from birdclef.common.logs import setup_logging
from birdclef.mels import soundscape_mels_stage

setup_logging(snakemake.log[0])
soundscape_mels_stage(
    soundscape_dir=snakemake.input.soundscapes,
    out_mels=snakemake.output.mels,
    out_index=snakemake.output.index,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    threads=snakemake.threads,
)

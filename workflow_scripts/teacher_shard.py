"""Snakemake entry point of rule teacher_shard (logic: birdclef.teacher.stage)."""

from birdclef.common.logs import setup_logging
from birdclef.teacher.stage import teacher_shard_stage

setup_logging(snakemake.log[0])
windows = dict(snakemake.params.windows)
teacher_shard_stage(
    catalog_path=snakemake.input.catalog,
    soundscape_dir=snakemake.input.soundscapes,
    taxonomy_csv=snakemake.input.taxonomy,
    out_dir=snakemake.output.shard,
    settings={**snakemake.params.settings, "batch_windows": snakemake.config["teacher"]["batch_windows"]},
    mel_settings=windows,
    shard=int(snakemake.wildcards.shard),
    shards=int(snakemake.params.shards),
    threads=snakemake.threads,
    on_bad_audio=windows["on_bad_audio"],
)

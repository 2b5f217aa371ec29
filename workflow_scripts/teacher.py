"""Snakemake entry point of rule teacher (logic: birdclef.teacher.stage)."""

from birdclef.common.logs import setup_logging
from birdclef.teacher.stage import teacher_stage

setup_logging(snakemake.log[0])
teacher_stage(
    shard_dirs=list(snakemake.input.shards),
    out=dict(snakemake.output.items()),
    settings=snakemake.params.settings,
    tag=snakemake.params.tag,
    upstream=snakemake.params.upstream,
)

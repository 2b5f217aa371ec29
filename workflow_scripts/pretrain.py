"""Snakemake entry point of rule pretrain (logic: birdclef.train.pretrain)."""

from birdclef.common.logs import setup_logging
from birdclef.train import pretrain_stage

setup_logging(snakemake.log[0])
pretrain_stage(
    inputs=dict(snakemake.input.items()),
    outputs=dict(snakemake.output.items()),
    tag=snakemake.wildcards.tag,
    settings=snakemake.params.settings,
    backbone=snakemake.params.backbone,
    upstream=snakemake.params.upstream,
    mel=snakemake.params.mel,
    device=snakemake.config["train"]["device"],  # where it runs, not what it computes
    threads=snakemake.threads,
)

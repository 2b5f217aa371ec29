"""Snakemake entry point of rule report_mels (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import mels_report

setup_logging(snakemake.log[0])
mels_report(
    mels_path=snakemake.input.mels,
    index_path=snakemake.input.index,
    taxonomy_csv=snakemake.input.taxonomy,
    mel_settings=snakemake.params.mel,
    out_dir=snakemake.output.examples,
)

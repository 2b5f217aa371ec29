"""Snakemake entry point of rule report_teacher (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import teacher_report

setup_logging(snakemake.log[0])
teacher_report(
    mapping_path=snakemake.input.mapping,
    manifest_path=snakemake.input.manifest,
    taxonomy_csv=snakemake.input.taxonomy,
    out_mapping_png=snakemake.output.mapping,
)

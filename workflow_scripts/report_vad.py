"""Snakemake entry point of rule report_vad (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import vad_report

setup_logging(snakemake.log[0])
vad_report(
    catalog_path=snakemake.input.catalog,
    spans_path=snakemake.input.spans,
    manifest_path=snakemake.input.manifest,
    taxonomy_csv=snakemake.input.taxonomy,
    mel_settings=snakemake.params.mel,
    out_removed=snakemake.output.removed,
    out_example=snakemake.output.example,
)

"""Snakemake entry point of rule report_data (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import data_report

setup_logging(snakemake.log[0])
data_report(
    catalog_path=snakemake.input.catalog,
    taxonomy_csv=snakemake.input.taxonomy,
    out_classes=snakemake.output.classes,
    out_durations=snakemake.output.durations,
    out_collections=snakemake.output.collections,
)

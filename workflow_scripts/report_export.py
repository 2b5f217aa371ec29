"""Snakemake entry point of rule report_export (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import export_report

setup_logging(snakemake.log[0])
export_report(manifest_path=snakemake.input.manifest, out_png=snakemake.output.precision)

"""Snakemake entry point of rule report_oof (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import oof_report

setup_logging(snakemake.log[0])
oof_report(
    oof_paths=list(snakemake.input.oof),
    index_path=snakemake.input.index,
    taxonomy_csv=snakemake.input.taxonomy,
    title=snakemake.params.title,
    out_png=snakemake.output.per_class,
)

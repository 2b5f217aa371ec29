"""Snakemake entry point of rule report_pseudo (logic: birdclef.report)."""

from birdclef.common.logs import setup_logging
from birdclef.report import pseudo_report

setup_logging(snakemake.log[0])
pseudo_report(
    fold_metrics=snakemake.params.fold_metrics,
    pseudo_manifests=snakemake.params.pseudo_manifests,
    backbone_labels=snakemake.params.backbone_labels,
    index_path=snakemake.input.index,
    taxonomy_csv=snakemake.input.taxonomy,
    out_scores=snakemake.output.scores,
    out_shift=snakemake.output.shift,
)

"""Snakemake entry point of rule pseudo (logic: birdclef.pseudo)."""

from birdclef.common.logs import setup_logging
from birdclef.pseudo import pseudo_stage

setup_logging(snakemake.log[0])
pseudo_stage(
    prediction_paths=list(snakemake.input.predictions),
    taxonomy_csv=snakemake.input.taxonomy,
    out_labels=snakemake.output.labels,
    out_manifest=snakemake.output.manifest,
    settings=snakemake.params.settings,
    tag=snakemake.wildcards.tag,
    upstream=snakemake.params.upstream,
    labelled_path=snakemake.input.get("soundscape_labels"),
    teacher_paths=(
        {"logits": snakemake.input.teacher_logits, "index": snakemake.input.teacher_index}
        if snakemake.input.get("teacher_logits")
        else None
    ),
)

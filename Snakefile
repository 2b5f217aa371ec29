# BirdCLEF workflow: a BirdCLEF-style data folder -> results/submission.csv.
# Stages, tags and data contracts: DESIGN.md. Config keys: README.md and
# schemas/config.schema.yaml.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/xc_scrape.smk"
include: "rules/catalog.smk"
include: "rules/vad.smk"
include: "rules/mels.smk"
include: "rules/teacher.smk"
include: "rules/soundscape_labels.smk"
include: "rules/folds.smk"
include: "rules/pretrain.smk"
include: "rules/train.smk"
include: "rules/pseudo.smk"
include: "rules/ensemble.smk"
include: "rules/export.smk"
include: "rules/submission.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        "results/submission.csv",


rule submission:
    input:
        "results/submission.csv",

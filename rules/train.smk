# Training: one job per (backbone, round, fold); round r > 0 also reads the
# pseudo-labels made from round r - 1.


rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint="results/train/{tag}/fold{fold}/best.pt",
        oof="results/train/{tag}/fold{fold}/oof.parquet",
        soundscape_preds="results/train/{tag}/fold{fold}/soundscape_preds.parquet",
        metrics="results/train/{tag}/fold{fold}/metrics.json",
        manifest="results/train/{tag}/fold{fold}/manifest.json",
    log:
        "results/logs/train/{tag}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{tag}/fold{fold}.tsv"
    wildcard_constraints:
        tag=r"[^/]+",
        fold=r"\d+",
    conda:
        "../envs/pipeline.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=1,
    params:
        settings=lambda wildcards: TRAIN_RUNS[wildcards.tag]["settings"],
        backbone=lambda wildcards: TRAIN_RUNS[wildcards.tag]["backbone"],
        upstream=lambda wildcards: TRAIN_RUNS[wildcards.tag]["upstream"],
        mel=lambda wildcards: TRAIN_RUNS[wildcards.tag]["mel"],
    script:
        "../workflow_scripts/train.py"

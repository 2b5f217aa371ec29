# Pretrain (train.pretrain, off by default): one run per backbone on every catalog
# recording (pretrain-only species included, their own class list); its backbone
# starts every fold of every round (train_inputs adds its best.pt).


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        checkpoint="results/pretrain/{tag}/best.pt",
        classes="results/pretrain/{tag}/classes.parquet",
        metrics="results/pretrain/{tag}/metrics.json",
        manifest="results/pretrain/{tag}/manifest.json",
    log:
        "results/logs/pretrain/{tag}.log",
    benchmark:
        "results/benchmarks/pretrain/{tag}.tsv"
    wildcard_constraints:
        tag=r"[^/]+",
    conda:
        "../envs/pipeline.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=1,
    params:
        settings=lambda wildcards: PRETRAIN_RUNS[wildcards.tag]["settings"],
        backbone=lambda wildcards: PRETRAIN_RUNS[wildcards.tag]["backbone"],
        upstream=lambda wildcards: PRETRAIN_RUNS[wildcards.tag]["upstream"],
        mel=lambda wildcards: PRETRAIN_RUNS[wildcards.tag]["mel"],
    script:
        "../workflow_scripts/pretrain.py"

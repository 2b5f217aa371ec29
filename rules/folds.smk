# Folds: stratified, grouped k-fold table over the cached recordings.


rule folds:
    input:
        index=mel_cache(MELS_TAG)["index"],
    output:
        folds=f"{stage_dir('folds', FOLDS_TAG)}/folds.parquet",
        manifest=f"{stage_dir('folds', FOLDS_TAG)}/manifest.json",
    log:
        log_path("folds", FOLDS_TAG),
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=FOLDS_SETTINGS,
        tag=FOLDS_TAG,
        upstream={"mels": MELS_TAG},
    script:
        "../workflow_scripts/folds.py"

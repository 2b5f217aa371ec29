# Ensemble: the final round's models over every backbone and fold.


rule ensemble:
    input:
        checkpoints=[f"{folder}/best.pt" for folder in fold_dirs(FINAL_TRAIN_TAGS)],
        oof=[f"{folder}/oof.parquet" for folder in fold_dirs(FINAL_TRAIN_TAGS)],
        index=rules.mels.output.index,
        taxonomy=root_path("taxonomy.csv"),
    output:
        ensemble=f"{stage_dir('ensemble', ENSEMBLE_TAG)}/ensemble.json",
        manifest=f"{stage_dir('ensemble', ENSEMBLE_TAG)}/manifest.json",
    log:
        log_path("ensemble", ENSEMBLE_TAG),
    benchmark:
        benchmark_path("ensemble", ENSEMBLE_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=ENSEMBLE_SETTINGS,
        tag=ENSEMBLE_TAG,
        upstream={"train": FINAL_TRAIN_TAGS},
        members=[
            {
                "name": f"{tag}/fold{fold}",
                "backbone": TRAIN_RUNS[tag]["backbone"]["name"],
                "fold": fold,
            }
            for tag in FINAL_TRAIN_TAGS
            for fold in FOLDS
        ],
        mel=MEL_SETTINGS,
    script:
        "../workflow_scripts/ensemble.py"

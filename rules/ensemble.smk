# Ensemble: the final round's models over every backbone and fold (with soup:
# each fold's checkpoints of every round, weight-averaged greedily).


rule ensemble:
    input:
        **soundscape_labels_input(None),
        checkpoints=[
            path for member in ensemble_members() for path in member["ingredients"]
        ],
        oof=[
            path.replace("best.pt", "oof.parquet")
            for member in ensemble_members()
            for path in member["ingredients"]
        ],
        mels=[mel_cache(tag)["mels"] for tag in MEL_GROUPS],
        index=[mel_cache(tag)["index"] for tag in MEL_GROUPS],
        folds=rules.folds.output.folds,
        taxonomy=root_path("taxonomy.csv"),
        soundscape_preds=[
            path.replace("best.pt", "soundscape_preds.parquet")
            for member in ensemble_members()
            for path in member["ingredients"][-1:]
        ],
    output:
        ensemble=f"{stage_dir('ensemble', ENSEMBLE_TAG)}/ensemble.json",
        soups=directory(f"{stage_dir('ensemble', ENSEMBLE_TAG)}/soups"),
        manifest=f"{stage_dir('ensemble', ENSEMBLE_TAG)}/manifest.json",
    log:
        log_path("ensemble", ENSEMBLE_TAG),
    benchmark:
        benchmark_path("ensemble", ENSEMBLE_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        settings=ENSEMBLE_SETTINGS,
        tag=ENSEMBLE_TAG,
        upstream={
            "train": FINAL_TRAIN_TAGS,
            "soup_ingredients": ENSEMBLE_TRAIN_TAGS,
            "soundscape_labels": SOUNDSCAPE_LABELS_TAG,
        },
        members=ensemble_members(),
        train_settings=TRAIN_COMMON,
        mel_groups=mel_groups(),
    script:
        "../workflow_scripts/ensemble.py"

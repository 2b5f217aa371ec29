# Export: OpenVINO IR per ensemble member, NNCF int8, accuracy gate.


rule export:
    input:
        **soundscape_labels_input(None),
        # the teacher in the final blend: its classes are mapped by taxonomy.csv's names
        **({"taxonomy": root_path("taxonomy.csv")} if EXPORT_TEACHER else {}),
        # with the teacher and the 2026 labels: the bundle is also scored on the held-out
        # labelled soundscape files through Kaggle's inference path
        **(
            {"soundscapes": root_path("train_soundscapes")}
            if EXPORT_TEACHER and LABELS_FILE
            else {}
        ),
        # an ONNX Perch in the blend becomes an IR of the ensemble model: its int8 calibration
        # and accuracy gate read the training recordings' (VAD-cleaned) audio
        **(
            {"catalog": rules.vad.output.catalog, "clean": rules.vad.output.clean}
            if EXPORT_TEACHER_AUDIO
            else {}
        ),
        ensemble=rules.ensemble.output.ensemble,
        checkpoints=rules.ensemble.input.checkpoints,
        soups=rules.ensemble.output.soups,
        mels=rules.ensemble.input.mels,
        index=rules.ensemble.input.index,
        folds=rules.folds.output.folds,
        soundscape_mels=[
            soundscape_mel_cache(tag)["mels"] for tag in SOUNDSCAPE_MEL_GROUPS
        ],
        soundscape_index=[
            soundscape_mel_cache(tag)["index"] for tag in SOUNDSCAPE_MEL_GROUPS
        ],
    output:
        bundle=f"{stage_dir('export', EXPORT_TAG)}/bundle.json",
        filterbanks=[
            f"{stage_dir('export', EXPORT_TAG)}/mel_filterbank_{group}.npy"
            for group in range(len(MEL_GROUPS))
        ],
        members=directory(f"{stage_dir('export', EXPORT_TAG)}/members"),
        manifest=f"{stage_dir('export', EXPORT_TAG)}/manifest.json",
    log:
        log_path("export", EXPORT_TAG),
    benchmark:
        benchmark_path("export", EXPORT_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        settings=EXPORT_SETTINGS,
        teacher=EXPORT_TEACHER,
        tag=EXPORT_TAG,
        upstream={
            "ensemble": ENSEMBLE_TAG,
            "mels": MEL_GROUPS,
            "soundscape_labels": SOUNDSCAPE_LABELS_TAG,
            **({"vad": VAD_TAG} if EXPORT_TEACHER_AUDIO else {}),
        },
    script:
        "../workflow_scripts/export.py"

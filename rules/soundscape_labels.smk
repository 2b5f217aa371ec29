# Labelled train soundscapes: every window of each soundscape named in
# train_soundscapes_labels.csv, with its targets and its site-held-out split.

if LABELS_FILE:

    rule soundscape_labels:
        input:
            labels=root_path(LABELS_FILE),
            taxonomy=root_path("taxonomy.csv"),
            index=soundscape_mel_cache(SOUNDSCAPE_MELS_TAG)["index"],
        output:
            labels=SOUNDSCAPE_LABELS_PATH,
            manifest=f"{stage_dir('soundscape_labels', SOUNDSCAPE_LABELS_TAG)}/manifest.json",
        log:
            log_path("soundscape_labels", SOUNDSCAPE_LABELS_TAG),
        benchmark:
            benchmark_path("soundscape_labels", SOUNDSCAPE_LABELS_TAG)
        conda:
            "../envs/pipeline.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            settings=SOUNDSCAPE_LABELS_SETTINGS,
            tag=SOUNDSCAPE_LABELS_TAG,
            upstream={"soundscape_mels": SOUNDSCAPE_MELS_TAG},
        script:
            "../workflow_scripts/soundscape_labels.py"

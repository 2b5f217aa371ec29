# Log-mel caches: training recordings (from the VAD-cleaned catalog) and the
# 5 s windows of the unlabelled train_soundscapes (for pseudo-labelling).


rule mels:
    input:
        catalog=rules.vad.output.catalog,
    output:
        mels=f"{stage_dir('mels', MELS_TAG)}/mels.npy",
        index=f"{stage_dir('mels', MELS_TAG)}/index.parquet",
        manifest=f"{stage_dir('mels', MELS_TAG)}/manifest.json",
    log:
        log_path("mels", MELS_TAG),
    benchmark:
        benchmark_path("mels", MELS_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 16
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=MELS_SETTINGS,
        tag=MELS_TAG,
        upstream={"vad": VAD_TAG},
    script:
        "../workflow_scripts/mels.py"


rule soundscape_mels:
    input:
        soundscapes=root_path("train_soundscapes"),
    output:
        mels=f"{stage_dir('soundscape_mels', SOUNDSCAPE_MELS_TAG)}/mels.npy",
        index=f"{stage_dir('soundscape_mels', SOUNDSCAPE_MELS_TAG)}/index.parquet",
        manifest=f"{stage_dir('soundscape_mels', SOUNDSCAPE_MELS_TAG)}/manifest.json",
    log:
        log_path("soundscape_mels", SOUNDSCAPE_MELS_TAG),
    benchmark:
        benchmark_path("soundscape_mels", SOUNDSCAPE_MELS_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 16
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=SOUNDSCAPE_MELS_SETTINGS,
        tag=SOUNDSCAPE_MELS_TAG,
    script:
        "../workflow_scripts/soundscape_mels.py"

# VAD: Silero finds human speech; it is cut out of the training audio.


rule vad:
    input:
        catalog=rules.catalog.output.catalog,
    output:
        spans=f"{stage_dir('vad', VAD_TAG)}/speech_spans.parquet",
        catalog=f"{stage_dir('vad', VAD_TAG)}/catalog.parquet",
        clean=directory(f"{stage_dir('vad', VAD_TAG)}/clean"),
        manifest=f"{stage_dir('vad', VAD_TAG)}/manifest.json",
    log:
        log_path("vad", VAD_TAG),
    benchmark:
        benchmark_path("vad", VAD_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 16
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=VAD_SETTINGS,
        tag=VAD_TAG,
        upstream={"catalog": CATALOG_TAG},
    script:
        "../workflow_scripts/vad.py"

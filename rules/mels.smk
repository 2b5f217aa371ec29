# Log-mel caches: training recordings (from the VAD-cleaned catalog) and the
# 5 s windows of the unlabelled train_soundscapes (for pseudo-labelling), one
# pair per mel configuration in use (the base `mels` and any backbone's
# `mels` override; MEL_RUNS and SOUNDSCAPE_MEL_RUNS in common.smk).


rule mels:
    input:
        catalog=rules.vad.output.catalog,
    output:
        mels="results/mels/{tag}/mels.npy",
        index="results/mels/{tag}/index.parquet",
        manifest="results/mels/{tag}/manifest.json",
    log:
        "results/logs/mels/{tag}.log",
    benchmark:
        "results/benchmarks/mels/{tag}.tsv"
    wildcard_constraints:
        tag=r"[^/]+",
    conda:
        "../envs/pipeline.yaml"
    threads: 16
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=lambda wildcards: MEL_RUNS[wildcards.tag],
        tag=lambda wildcards: wildcards.tag,
        upstream={"vad": VAD_TAG},
    script:
        "../workflow_scripts/mels.py"


rule soundscape_mels:
    input:
        soundscapes=root_path("train_soundscapes"),
    output:
        mels="results/soundscape_mels/{tag}/mels.npy",
        index="results/soundscape_mels/{tag}/index.parquet",
        manifest="results/soundscape_mels/{tag}/manifest.json",
    log:
        "results/logs/soundscape_mels/{tag}.log",
    benchmark:
        "results/benchmarks/soundscape_mels/{tag}.tsv"
    wildcard_constraints:
        tag=r"[^/]+",
    conda:
        "../envs/pipeline.yaml"
    threads: 16
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=lambda wildcards: SOUNDSCAPE_MEL_RUNS[wildcards.tag],
        tag=lambda wildcards: wildcards.tag,
    script:
        "../workflow_scripts/soundscape_mels.py"

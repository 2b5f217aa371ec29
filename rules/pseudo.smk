# Pseudo-labels for round r: the round r - 1 models' soundscape predictions,
# averaged and sharpened.


rule pseudo:
    input:
        unpack(pseudo_inputs),
    output:
        labels="results/pseudo/{tag}/labels.parquet",
        manifest="results/pseudo/{tag}/manifest.json",
    log:
        "results/logs/pseudo/{tag}.log",
    benchmark:
        "results/benchmarks/pseudo/{tag}.tsv"
    wildcard_constraints:
        tag=r"[^/]+",
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=lambda wildcards: PSEUDO_RUNS[wildcards.tag]["settings"],
        upstream=lambda wildcards: {
            "train": PSEUDO_RUNS[wildcards.tag]["train_tags"],
            "soundscape_labels": SOUNDSCAPE_LABELS_TAG,
            **(
                {"teacher": PSEUDO_RUNS[wildcards.tag]["teacher_tag"]}
                if PSEUDO_RUNS[wildcards.tag]["teacher_tag"]
                else {}
            ),
        },
    script:
        "../workflow_scripts/pseudo.py"

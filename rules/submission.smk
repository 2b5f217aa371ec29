# Submission: CPU inference with the exported bundle over test_soundscapes.
# results/submission.csv is the stable copy of the current config's submission.


rule submission_predict:
    input:
        unpack(ground_truth_input),
        bundle=rules.export.output.bundle,
        members=rules.export.output.members,
        sample_submission=root_path("sample_submission.csv"),
        test_soundscapes=root_path("test_soundscapes"),
    output:
        submission=f"{stage_dir('submission', SUBMISSION_TAG)}/submission.csv",
        manifest=f"{stage_dir('submission', SUBMISSION_TAG)}/manifest.json",
    log:
        log_path("submission", SUBMISSION_TAG),
    benchmark:
        benchmark_path("submission", SUBMISSION_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=90,
    params:
        settings=SUBMISSION_SETTINGS,
        tag=SUBMISSION_TAG,
        upstream={"export": EXPORT_TAG},
    script:
        "../workflow_scripts/submission.py"


localrules:
    publish_submission,


rule publish_submission:
    input:
        submission=rules.submission_predict.output.submission,
    output:
        "results/submission.csv",
    log:
        "results/logs/publish_submission.log",
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../workflow_scripts/publish_submission.py"

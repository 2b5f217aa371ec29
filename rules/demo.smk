# Demo data: a synthetic BirdCLEF+ 2026-style folder generated into data.root.


if DEMO:

    rule demo_data:
        output:
            train_csv=root_path("train.csv"),
            taxonomy=root_path("taxonomy.csv"),
            sample_submission=root_path("sample_submission.csv"),
            ground_truth=root_path("test_ground_truth.csv"),
            soundscape_labels=root_path("train_soundscapes_labels.csv"),
            info=root_path("demo_info.json"),
            train_audio=directory(root_path("train_audio")),
            train_soundscapes=directory(root_path("train_soundscapes")),
            test_soundscapes=directory(root_path("test_soundscapes")),
        log:
            "results/logs/demo_data.log",
        benchmark:
            "results/benchmarks/demo_data.tsv"
        conda:
            "../envs/pipeline.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        params:
            settings={k: v for k, v in DATA["demo"].items() if k != "enabled"},
            root=lambda wildcards, output: os.path.dirname(output.train_csv),
        script:
            "../workflow_scripts/demo_data.py"

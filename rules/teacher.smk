# The teacher: a bioacoustic foundation model (BirdNET 2.4 or Perch v2) over every
# training-recording window (VAD-cleaned audio) and every train_soundscapes window.
# Scattered over TEACHER_SHARDS jobs (a cluster runs them in parallel; a rerun
# computes only missing shards), then gathered into one artifact.

if TEACHER_TAG:

    rule teacher_shard:
        input:
            catalog=rules.vad.output.catalog,
            clean=rules.vad.output.clean,
            soundscapes=root_path("train_soundscapes"),
            taxonomy=root_path("taxonomy.csv"),
        output:
            shard=directory(
                f"{stage_dir('teacher', TEACHER_TAG)}/shards/shard{{shard}}-of-{TEACHER_SHARDS}"
            ),
        log:
            f"results/logs/teacher/{TEACHER_TAG}/shard{{shard}}.log",
        benchmark:
            f"results/benchmarks/teacher/{TEACHER_TAG}/shard{{shard}}.tsv"
        wildcard_constraints:
            shard=r"\d+",
        conda:
            "../envs/pipeline.yaml"
        threads: 4
        resources:
            mem_mb=6000,
            runtime=240,
        params:
            settings=TEACHER_SETTINGS,
            windows=TEACHER_WINDOWS,
            shards=TEACHER_SHARDS,
        script:
            "../workflow_scripts/teacher_shard.py"

    rule teacher:
        input:
            shards=teacher_shard_dirs(),
        output:
            embeddings=f"{stage_dir('teacher', TEACHER_TAG)}/embeddings.npy",
            logits=f"{stage_dir('teacher', TEACHER_TAG)}/logits.npy",
            index=f"{stage_dir('teacher', TEACHER_TAG)}/index.parquet",
            mapping=f"{stage_dir('teacher', TEACHER_TAG)}/mapping.parquet",
            manifest=f"{stage_dir('teacher', TEACHER_TAG)}/manifest.json",
        log:
            log_path("teacher", TEACHER_TAG),
        benchmark:
            benchmark_path("teacher", TEACHER_TAG)
        conda:
            "../envs/pipeline.yaml"
        threads: 1
        resources:
            mem_mb=8000,
            runtime=30,
        params:
            settings={**TEACHER_SETTINGS, **TEACHER_WINDOWS},
            tag=TEACHER_TAG,
            upstream={"vad": VAD_TAG, "data": PLAN.data_identity},
        script:
            "../workflow_scripts/teacher.py"

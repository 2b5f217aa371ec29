# Report figures: separate rules read each stage's artifacts and draw PNGs under
# results/report/<stage>/<tag>/, registered with report() for
# `snakemake --report results/report.html report_figures` (make report).
# A plot change never reruns a stage, and the stage outputs stay data.

PSEUDO_TAGS = list(PSEUDO_RUNS)  # in round order
# train tag -> "<backbone>, round <r>": the report's subcategory for that run
RUN_TITLES = {
    tag: f"{backbone_label(run['backbone'])}, round {run['round']}"
    for tag, run in TRAIN_RUNS.items()
}
# metrics.json of every fold -> the ensemble's name of its backbone entry
METRICS_LABELS = {
    f"{folder}/metrics.json": backbone_label(TRAIN_RUNS[tag]["backbone"])
    for tag in TRAIN_RUNS
    for folder in fold_dirs([tag])
}
# round -> every fold's metrics.json of that round (backbone, OOF ROC-AUC)
ROUND_METRICS = {
    r: [f"{folder}/metrics.json" for folder in fold_dirs(tags)]
    for r, tags in enumerate(ROUND_TRAIN_TAGS)
}
# round -> that round's pseudo manifest (label distribution, windows kept)
PSEUDO_MANIFESTS = {
    run["round"]: f"{stage_dir('pseudo', tag)}/manifest.json"
    for tag, run in PSEUDO_RUNS.items()
}
# checkpoint -> its training round: names the rounds of an ensemble soup
CHECKPOINT_ROUNDS = {
    f"{train_outputs(tag, fold)}/best.pt": TRAIN_RUNS[tag]["round"]
    for tag in ENSEMBLE_TRAIN_TAGS
    for fold in FOLDS
}


localrules:
    report_data,
    report_vad,
    report_mels,
    report_training,
    report_oof,
    report_ensemble,
    report_export,
    report_submission,
    report_figures,


rule report_data:
    input:
        catalog=rules.catalog.output.catalog,
        taxonomy=root_path("taxonomy.csv"),
    output:
        classes=report(
            f"{stage_dir('report/data', CATALOG_TAG)}/recordings_per_class.png",
            caption="../report/data_classes.rst",
            category="1. Data",
            subcategory="Training recordings",
            labels={"figure": "recordings and audio per class"},
        ),
        durations=report(
            f"{stage_dir('report/data', CATALOG_TAG)}/durations.png",
            caption="../report/data_durations.rst",
            category="1. Data",
            subcategory="Training recordings",
            labels={"figure": "recording durations"},
        ),
        collections=report(
            f"{stage_dir('report/data', CATALOG_TAG)}/collections.png",
            caption="../report/data_collections.rst",
            category="1. Data",
            subcategory="Training recordings",
            labels={"figure": "collections"},
        ),
    log:
        log_path("report/data", CATALOG_TAG),
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/report_data.py"


rule report_vad:
    input:
        catalog=rules.vad.output.catalog,
        spans=rules.vad.output.spans,
        clean=rules.vad.output.clean,
        manifest=rules.vad.output.manifest,
        taxonomy=root_path("taxonomy.csv"),
    output:
        removed=report(
            f"{stage_dir('report/vad', VAD_TAG)}/speech_removed.png",
            caption="../report/vad_removed.rst",
            category="2. VAD",
            subcategory="Human speech",
            labels={"figure": "speech removed per collection"},
        ),
        example=report(
            f"{stage_dir('report/vad', VAD_TAG)}/example_spectrogram.png",
            caption="../report/vad_example.rst",
            category="2. VAD",
            subcategory="Human speech",
            labels={"figure": "example spectrogram, speech spans marked"},
        ),
    log:
        log_path("report/vad", VAD_TAG),
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        mel=MEL_SETTINGS,
    script:
        "../workflow_scripts/report_vad.py"


rule report_mels:
    input:
        mels=mel_cache(MELS_TAG)["mels"],
        index=mel_cache(MELS_TAG)["index"],
        taxonomy=root_path("taxonomy.csv"),
    output:
        examples=report(
            directory(f"{stage_dir('report/mels', MELS_TAG)}/examples"),
            patterns=["{page}.png"],
            caption="../report/mel_examples.rst",
            category="3. Mel spectrograms",
            subcategory="Examples per class",
            labels={"figure": "log-mel examples", "page": "{page}"},
        ),
    log:
        log_path("report/mels", MELS_TAG),
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        mel=MEL_SETTINGS,
    script:
        "../workflow_scripts/report_mels.py"


if TEACHER_TAG:

    localrules:
        report_teacher,

    rule report_teacher:
        input:
            mapping=rules.teacher.output.mapping,
            manifest=rules.teacher.output.manifest,
            taxonomy=root_path("taxonomy.csv"),
        output:
            mapping=report(
                f"{stage_dir('report/teacher', TEACHER_TAG)}/class_mapping.png",
                caption="../report/teacher_mapping.rst",
                category="3b. Teacher",
                subcategory="Class mapping",
                labels={"figure": "teacher classes mapped per class group"},
            ),
        log:
            log_path("report/teacher", TEACHER_TAG),
        conda:
            "../envs/pipeline.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        script:
            "../workflow_scripts/report_teacher.py"


rule report_training:
    input:
        metrics=lambda wildcards: [
            f"{folder}/metrics.json" for folder in fold_dirs([wildcards.tag])
        ],
    output:
        curves=report(
            f"{stage_dir('report/train', '{tag}')}/training_curves.png",
            caption="../report/training_curves.rst",
            category="4. Training",
            subcategory=lambda wildcards: RUN_TITLES[wildcards.tag],
            labels={"figure": "training curves, all folds", "run": "{tag}"},
        ),
    log:
        log_path("report/train", "{tag}"),
    wildcard_constraints:
        tag=r"[^/]+",
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        title=lambda wildcards: f"{RUN_TITLES[wildcards.tag]}: training curves",
    script:
        "../workflow_scripts/report_training.py"


rule report_oof:
    input:
        oof=lambda wildcards: [
            f"{folder}/oof.parquet" for folder in fold_dirs([wildcards.tag])
        ],
        index=mel_cache(MELS_TAG)["index"],
        taxonomy=root_path("taxonomy.csv"),
    output:
        per_class=report(
            f"{stage_dir('report/oof', '{tag}')}/per_class_roc_auc.png",
            caption="../report/oof_per_class.rst",
            category="5. OOF ROC-AUC per class",
            subcategory=lambda wildcards: RUN_TITLES[wildcards.tag],
            labels={"figure": "OOF ROC-AUC per class", "run": "{tag}"},
        ),
    log:
        log_path("report/oof", "{tag}"),
    wildcard_constraints:
        tag=r"[^/]+",
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        title=lambda wildcards: f"{RUN_TITLES[wildcards.tag]}: out-of-fold ROC-AUC per class",
    script:
        "../workflow_scripts/report_oof.py"


if PSEUDO_TAGS:

    localrules:
        report_pseudo,

    rule report_pseudo:
        input:
            metrics=[path for paths in ROUND_METRICS.values() for path in paths],
            manifests=list(PSEUDO_MANIFESTS.values()),
            index=mel_cache(MELS_TAG)["index"],
            taxonomy=root_path("taxonomy.csv"),
        output:
            scores=report(
                f"{stage_dir('report/pseudo', PSEUDO_TAGS[-1])}/score_per_round.png",
                caption="../report/pseudo_scores.rst",
                category="6. Pseudo-label rounds",
                subcategory="Rounds",
                labels={"figure": "score per round"},
            ),
            shift=report(
                f"{stage_dir('report/pseudo', PSEUDO_TAGS[-1])}/label_shift.png",
                caption="../report/pseudo_shift.rst",
                category="6. Pseudo-label rounds",
                subcategory="Rounds",
                labels={"figure": "label distribution per round"},
            ),
        log:
            log_path("report/pseudo", PSEUDO_TAGS[-1]),
        conda:
            "../envs/pipeline.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            fold_metrics=ROUND_METRICS,
            backbone_labels=METRICS_LABELS,
            pseudo_manifests=PSEUDO_MANIFESTS,
        script:
            "../workflow_scripts/report_pseudo.py"


rule report_ensemble:
    input:
        ensemble=rules.ensemble.output.ensemble,
    output:
        members=report(
            f"{stage_dir('report/ensemble', ENSEMBLE_TAG)}/members.png",
            caption="../report/ensemble_members.rst",
            category="7. Ensemble",
            subcategory="Members",
            labels={"figure": "member scores"},
        ),
    log:
        log_path("report/ensemble", ENSEMBLE_TAG),
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        checkpoint_rounds=CHECKPOINT_ROUNDS,
    script:
        "../workflow_scripts/report_ensemble.py"


rule report_export:
    input:
        manifest=rules.export.output.manifest,
    output:
        precision=report(
            f"{stage_dir('report/export', EXPORT_TAG)}/precision.png",
            caption="../report/export_precision.rst",
            category="8. Export",
            subcategory="Precision",
            labels={"figure": "score and speed per precision"},
        ),
    log:
        log_path("report/export", EXPORT_TAG),
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/report_export.py"


rule report_submission:
    input:
        unpack(ground_truth_input),
        submission=rules.submission_predict.output.submission,
        taxonomy=root_path("taxonomy.csv"),
    output:
        histograms=report(
            directory(
                f"{stage_dir('report/submission', SUBMISSION_TAG)}/prediction_histograms"
            ),
            patterns=["{page}.png"],
            caption="../report/submission_histograms.rst",
            category="9. Submission",
            subcategory="Predictions",
            labels={"figure": "prediction histograms per class", "page": "{page}"},
        ),
    log:
        log_path("report/submission", SUBMISSION_TAG),
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/report_submission.py"


if GROUND_TRUTH:

    localrules:
        report_submission_score,

    rule report_submission_score:
        input:
            ground_truth=GROUND_TRUTH,
            submission=rules.submission_predict.output.submission,
            taxonomy=root_path("taxonomy.csv"),
        output:
            score=report(
                f"{stage_dir('report/submission', SUBMISSION_TAG)}/score_per_class.png",
                caption="../report/submission_score.rst",
                category="9. Submission",
                subcategory="Score on the test soundscapes",
                labels={"figure": "ROC-AUC per class (ground truth known)"},
            ),
        log:
            log_path("report/submission_score", SUBMISSION_TAG),
        conda:
            "../envs/pipeline.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow_scripts/report_submission_score.py"


rule report_figures:
    input:
        rules.report_data.output,
        rules.report_vad.output,
        rules.report_mels.output,
        rules.report_teacher.output if TEACHER_TAG else [],
        expand(rules.report_training.output.curves, tag=TRAIN_RUNS),
        expand(rules.report_oof.output.per_class, tag=TRAIN_RUNS),
        rules.report_pseudo.output if PSEUDO_TAGS else [],
        rules.report_ensemble.output,
        rules.report_export.output,
        rules.report_submission.output,
        rules.report_submission_score.output if GROUND_TRUTH else [],

# Paths and tags of every stage, computed once from the validated config by
# birdclef.common.plan.make_plan (standard library only: the no-op dry run stays fast).
# The tag of a stage hashes its settings, the tags it reads and its format
# version (birdclef.common.versioning.stage_tag); every rule writes under
# results/<stage>/<tag>/ and receives the same settings as params. This file
# binds the plan's names for the rules and holds the Snakemake input functions
# and path helpers.

import os

from birdclef.common.layout import backbone_label, stage_dir, train_fold_dir
from birdclef.common.plan import make_plan

PLAN = make_plan(config)

DATA = config["data"]
ROOT = PLAN.root
EXTRA_ROOTS = PLAN.extra_roots  # data.extra_roots: {root, use} each
DEMO = PLAN.demo
GROUND_TRUTH = PLAN.ground_truth

XC_SETTINGS = PLAN.xc_settings
XC_TAG = PLAN.xc_tag
CATALOG_SETTINGS = PLAN.catalog_settings
CATALOG_TAG = PLAN.catalog_tag
VAD_SETTINGS = PLAN.vad_settings
VAD_TAG = PLAN.vad_tag

# Mel configurations: the base one (MEL_SETTINGS) and every backbone's; the
# cache rules take the tag as a wildcard and read its settings here.
MEL_SETTINGS = PLAN.mel_settings
MELS_TAG = PLAN.mels_tag
SOUNDSCAPE_MELS_TAG = PLAN.soundscape_mels_tag
MEL_RUNS = PLAN.mel_runs  # mels tag -> cache settings
SOUNDSCAPE_MEL_RUNS = PLAN.soundscape_mel_runs  # soundscape_mels tag -> cache settings

# The teacher (a foundation model over every window; None when teacher.enabled is false).
TEACHER_SETTINGS = PLAN.teacher_settings
TEACHER_WINDOWS = PLAN.teacher_windows
TEACHER_TAG = PLAN.teacher_tag
TEACHER_SHARDS = PLAN.teacher_shards

LABELS_FILE = PLAN.labels_file
SOUNDSCAPE_LABELS_SETTINGS = PLAN.soundscape_labels_settings
SOUNDSCAPE_LABELS_TAG = PLAN.soundscape_labels_tag
SOUNDSCAPE_LABELS_PATH = PLAN.soundscape_labels_path

FOLDS_SETTINGS = PLAN.folds_settings
FOLDS_TAG = PLAN.folds_tag
FOLDS = PLAN.folds

# TRAIN_RUNS: train tag -> everything its jobs need; PSEUDO_RUNS likewise.
TRAIN_COMMON = PLAN.train_common
TRAIN_RUNS = PLAN.train_runs
# pretrain tag -> backbone, settings, mel, upstream (train.pretrain)
PRETRAIN_RUNS = PLAN.pretrain_runs
PSEUDO_RUNS = PLAN.pseudo_runs
ROUND_TRAIN_TAGS = PLAN.round_train_tags  # per round: the train tags of every backbone
FINAL_TRAIN_TAGS = PLAN.final_train_tags

ENSEMBLE_SETTINGS = PLAN.ensemble_settings
ENSEMBLE_TRAIN_TAGS = PLAN.ensemble_train_tags
ENSEMBLE_TAG = PLAN.ensemble_tag
# The final round's mels tags in order of first use, and each one's soundscape_mels tag.
MEL_GROUPS = PLAN.mel_groups
SOUNDSCAPE_MEL_GROUPS = PLAN.soundscape_mel_groups

EXPORT_SETTINGS = PLAN.export_settings
# The teacher's settings and its weight in the final blend (None: students only).
EXPORT_TEACHER = PLAN.export_teacher
# An ONNX Perch in the blend: the export converts it to IR, calibrated and gated on VAD audio.
EXPORT_TEACHER_AUDIO = PLAN.export_teacher_audio
EXPORT_TAG = PLAN.export_tag
SUBMISSION_SETTINGS = PLAN.submission_settings
SUBMISSION_TAG = PLAN.submission_tag


def log_path(stage, tag):
    """The log file of a stage's job."""
    return f"results/logs/{stage}/{tag}.log"


def benchmark_path(stage, tag):
    """The benchmark file of a stage's job."""
    return f"results/benchmarks/{stage}/{tag}.tsv"


def root_path(name):
    """A path inside data.root."""
    return os.path.join(ROOT, name)


def train_outputs(tag, fold):
    """The files one (backbone, fold, round) training job writes."""
    return train_fold_dir(tag, fold)


def fold_dirs(tags):
    """Every fold folder of the given train tags."""
    return [train_outputs(tag, fold) for tag in tags for fold in FOLDS]


def mel_cache(tag):
    """The training-recording mel cache files of a mels tag."""
    base = stage_dir("mels", tag)
    return {"mels": f"{base}/mels.npy", "index": f"{base}/index.parquet"}


def soundscape_mel_cache(tag):
    """The train_soundscapes mel cache files of a soundscape_mels tag."""
    base = stage_dir("soundscape_mels", tag)
    return {"mels": f"{base}/mels.npy", "index": f"{base}/index.parquet"}


def teacher_shard_dirs():
    """The teacher's shard folders, `shard<i>-of-<n>`."""
    base = stage_dir("teacher", TEACHER_TAG)
    return [
        f"{base}/shards/shard{i}-of-{TEACHER_SHARDS}" for i in range(TEACHER_SHARDS)
    ]


def mel_groups():
    """The ensemble's mel groups: each group's tag and cache settings, in MEL_GROUPS order."""
    return PLAN.mel_group_settings


def ensemble_members():
    """The final round's models: one member per (backbone, fold), with soup ingredients."""
    return PLAN.ensemble_members


def xc_inputs(wildcards):
    """The xeno-canto stage's rows and audio, when the stage is on."""
    if XC_TAG is None:
        return {}
    base = stage_dir("xc_scrape", XC_TAG)
    return {"extra_csv": f"{base}/train_xc.csv", "extra_audio": f"{base}/audio"}


def extra_root_inputs(wildcards):
    """The train.csv, taxonomy.csv and train_audio/ of every data.extra_roots folder."""
    return {
        f"extra_root{i}_{name.split('.')[0]}": os.path.join(entry["root"], name)
        for i, entry in enumerate(EXTRA_ROOTS)
        for name in ("train.csv", "taxonomy.csv", "train_audio")
    }


def pretrain_inputs(wildcards):
    """The pretrain run's mel cache (its backbone's configuration) and the taxonomy."""
    cache = mel_cache(PRETRAIN_RUNS[wildcards.tag]["upstream"]["mels"])
    return {
        "mels": cache["mels"],
        "index": cache["index"],
        "taxonomy": root_path("taxonomy.csv"),
    }


def train_inputs(wildcards):
    """Caches (of the backbone's mel configuration), folds, (rounds > 0) pseudo-labels,
    (with distillation) the teacher's artifact, (train.pretrain on) the pretrain checkpoint and
    (self-distillation on the recordings) the previous round's out-of-fold predictions.
    """
    run = TRAIN_RUNS[wildcards.tag]
    cache = mel_cache(run["upstream"]["mels"])
    soundscapes = soundscape_mel_cache(run["upstream"]["soundscape_mels"])
    inputs = {
        "mels": cache["mels"],
        "index": cache["index"],
        "folds": rules.folds.output.folds,
        "soundscape_mels": soundscapes["mels"],
        "soundscape_index": soundscapes["index"],
        "taxonomy": root_path("taxonomy.csv"),
    }
    if run["pseudo_tag"] is not None:
        inputs["pseudo_labels"] = (
            f"{stage_dir('pseudo', run['pseudo_tag'])}/labels.parquet"
        )
    inputs.update(soundscape_labels_input(wildcards))
    if run["upstream"].get("pretrain"):
        inputs["pretrain"] = (
            f"{stage_dir('pretrain', run['upstream']['pretrain'])}/best.pt"
        )
    inputs.update(wave_augment_inputs(run["settings"].get("wave_augment")))
    if run["upstream"].get("teacher"):
        base = stage_dir("teacher", run["upstream"]["teacher"])
        inputs["teacher_embeddings"] = f"{base}/embeddings.npy"
        inputs["teacher_logits"] = f"{base}/logits.npy"
        inputs["teacher_index"] = f"{base}/index.parquet"
    if run["upstream"].get("recording_oof"):
        inputs["recording_oof"] = [
            f"{folder}/oof.parquet"
            for folder in fold_dirs(run["upstream"]["recording_oof"])
        ]
    return inputs


def wave_augment_inputs(wave):
    """What train.wave_augment (when on) reads: the VAD catalog (each recording's audio),
    its speech spans, and the background-noise folder or the train_soundscapes folder.
    """
    if not wave:
        return {}
    inputs = {"wave_catalog": rules.vad.output.catalog}
    if wave.get("speech_prob"):
        inputs["speech_spans"] = rules.vad.output.spans
    source = wave.get("noise_source")
    if source == "soundscapes":
        inputs["noise_soundscapes"] = root_path("train_soundscapes")
    elif source:
        inputs["noise_dir"] = source
    return inputs


def pseudo_inputs(wildcards):
    """Every fold's soundscape predictions of the previous round's models (and the teacher's
    artifact when the round labels from the teacher or a blend)."""
    run = PSEUDO_RUNS[wildcards.tag]
    return {
        "predictions": [
            f"{folder}/soundscape_preds.parquet"
            for folder in fold_dirs(run["train_tags"])
        ],
        "taxonomy": root_path("taxonomy.csv"),
        **soundscape_labels_input(wildcards),
        **(
            {
                "teacher_logits": f"{stage_dir('teacher', run['teacher_tag'])}/logits.npy",
                "teacher_index": f"{stage_dir('teacher', run['teacher_tag'])}/index.parquet",
            }
            if run["teacher_tag"]
            else {}
        ),
    }


def soundscape_labels_input(wildcards):
    """The labelled soundscape windows (soundscape_labels stage), when configured."""
    return {"soundscape_labels": SOUNDSCAPE_LABELS_PATH} if LABELS_FILE else {}


def ground_truth_input(wildcards):
    """The test ground truth (data.ground_truth), when configured."""
    return {"ground_truth": GROUND_TRUTH} if GROUND_TRUTH else {}

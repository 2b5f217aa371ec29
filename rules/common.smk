# Paths and tags of every stage, computed once from the validated config.
# The tag of a stage hashes its settings, the tags it reads and its format
# version (birdclef.versioning.stage_tag); every rule writes under
# results/<stage>/<tag>/ and receives the same settings as params.

import os

from birdclef.versioning import stage_tag

DATA = config["data"]
ROOT = os.path.normpath(DATA["root"])
DEMO = DATA["demo"]["enabled"]

if DEMO and not ROOT.startswith("resources"):
    raise ValueError(
        f"data.root is {ROOT!r} but data.demo.enabled is true: the demo generator writes into "
        "data.root, so point data.root under resources/ (e.g. resources/demo) or set "
        "data.demo.enabled: false to use a real BirdCLEF folder"
    )
if not DEMO:
    if not os.path.isdir(ROOT):
        raise ValueError(
            f"data.root {ROOT!r} does not exist: expected a BirdCLEF 2025 folder with train.csv, "
            "taxonomy.csv, sample_submission.csv, train_audio/, train_soundscapes/ and "
            "test_soundscapes/ (or set data.demo.enabled: true for the demo data)"
        )
    for _name in ("train.csv", "taxonomy.csv", "sample_submission.csv"):
        if not os.path.isfile(os.path.join(ROOT, _name)):
            raise ValueError(
                f"data.root {ROOT!r} has no {_name}: expected the BirdCLEF 2025 layout "
                "(train.csv, taxonomy.csv, sample_submission.csv, train_audio/, ...)"
            )

# What identifies the input data itself: the folder, and the demo settings
# when the folder is generated.
DATA_IDENTITY = {"root": ROOT, "demo": DATA["demo"] if DEMO else None}
ON_BAD_AUDIO = DATA["on_bad_audio"]
GROUND_TRUTH = (
    os.path.join(ROOT, DATA["ground_truth"])
    if DATA["ground_truth"] is not None
    else None
)

XC = config["xeno_canto"]
# How fast and how hard to ask does not change what is scraped: those keys
# reach the script through the config, so changing them reruns nothing.
XC_EXECUTION_KEYS = (
    "enabled",
    "key_env",
    "requests_per_second",
    "download_workers",
    "timeout_seconds",
    "max_retries",
    "backoff_seconds",
)
XC_SETTINGS = {k: v for k, v in XC.items() if k not in XC_EXECUTION_KEYS}
XC_TAG = (
    stage_tag("xc_scrape", XC_SETTINGS, {"data": DATA_IDENTITY})
    if XC["enabled"]
    else None
)

CATALOG_SETTINGS = {**DATA_IDENTITY, "on_bad_audio": ON_BAD_AUDIO}
CATALOG_TAG = stage_tag("catalog", CATALOG_SETTINGS, {"xc_scrape": XC_TAG})

VAD_SETTINGS = {**config["vad"], "on_bad_audio": ON_BAD_AUDIO}
VAD_TAG = stage_tag("vad", VAD_SETTINGS, {"catalog": CATALOG_TAG})

# Mel configurations: `mels` is the base one (folds and the report's mel
# figure read its cache); a backbone's `mels` overrides some keys and trains on
# its own caches. Every distinct configuration is one mels tag (training
# recordings) and one soundscape_mels tag (train_soundscapes windows); the
# ensemble's members are grouped by it (MEL_GROUPS).
SOUNDSCAPE_EXCLUDED_KEYS = (
    "max_seconds",
    "rare_threshold",
    "rare_max_seconds",
    "normalization",
)
MEL_RUNS = {}  # mels tag -> cache settings
SOUNDSCAPE_MEL_RUNS = {}  # soundscape_mels tag -> cache settings


def mel_configuration(overrides=None):
    """Full mel settings, their mels tag and soundscape_mels tag; registers both caches.

    mels.normalization scales the model's input (inside the model): it is part
    of the training tags, not of the caches.
    """
    settings = {**config["mels"], **(overrides or {})}
    cache = {
        **{k: v for k, v in settings.items() if k != "normalization"},
        "on_bad_audio": ON_BAD_AUDIO,
    }
    tag = stage_tag("mels", cache, {"vad": VAD_TAG})
    MEL_RUNS[tag] = cache
    soundscape = {
        **{k: v for k, v in settings.items() if k not in SOUNDSCAPE_EXCLUDED_KEYS},
        **DATA_IDENTITY,
        "on_bad_audio": ON_BAD_AUDIO,
    }
    soundscape_tag = stage_tag("soundscape_mels", soundscape)
    SOUNDSCAPE_MEL_RUNS[soundscape_tag] = soundscape
    return settings, tag, soundscape_tag


MEL_SETTINGS, MELS_TAG, SOUNDSCAPE_MELS_TAG = mel_configuration()


def mel_cache(tag):
    """The training-recording mel cache files of a mels tag."""
    base = stage_dir("mels", tag)
    return {"mels": f"{base}/mels.npy", "index": f"{base}/index.parquet"}


def soundscape_mel_cache(tag):
    """The train_soundscapes mel cache files of a soundscape_mels tag."""
    base = stage_dir("soundscape_mels", tag)
    return {"mels": f"{base}/mels.npy", "index": f"{base}/index.parquet"}


# Labelled train soundscapes (BirdCLEF+ 2026 train_soundscapes_labels.csv):
# every window of a labelled soundscape with its targets and its split
# (validation: held out by site, scored by every stage; train: injected into
# training). How labelled windows train (share of a batch, loss weight) is a
# training setting, not part of this stage's tag.
SOUNDSCAPE_LABELS = config["soundscape_labels"]
LABELS_FILE = SOUNDSCAPE_LABELS["file"]
if LABELS_FILE and not DEMO and not os.path.isfile(os.path.join(ROOT, LABELS_FILE)):
    raise ValueError(
        f"soundscape_labels.file is {LABELS_FILE!r} but {os.path.join(ROOT, LABELS_FILE)} does not "
        "exist: expected the BirdCLEF+ 2026 train_soundscapes_labels.csv; set "
        "soundscape_labels.file: null for data without labelled soundscapes (BirdCLEF 2025)"
    )
SOUNDSCAPE_LABELS_SETTINGS = {
    k: v
    for k, v in SOUNDSCAPE_LABELS.items()
    if k not in ("train_ratio", "train_weight")
}
SOUNDSCAPE_LABELS_TAG = (
    stage_tag(
        "soundscape_labels",
        {**SOUNDSCAPE_LABELS_SETTINGS, **DATA_IDENTITY},
        {"soundscape_mels": SOUNDSCAPE_MELS_TAG},
    )
    if LABELS_FILE
    else None
)
SOUNDSCAPE_LABELS_PATH = (
    f"results/soundscape_labels/{SOUNDSCAPE_LABELS_TAG}/labels.parquet"
    if LABELS_FILE
    else None
)

FOLDS_SETTINGS = dict(config["folds"])
FOLDS_TAG = stage_tag("folds", FOLDS_SETTINGS, {"mels": MELS_TAG})

TRAIN = config["train"]
# device only chooses where training runs; the folds list only which jobs exist.
TRAIN_COMMON = {
    k: v for k, v in TRAIN.items() if k not in ("backbones", "device", "folds")
}
FOLDS = (
    TRAIN["folds"]
    if TRAIN["folds"] is not None
    else list(range(FOLDS_SETTINGS["n_folds"]))
)
for _fold in FOLDS:
    if _fold >= FOLDS_SETTINGS["n_folds"]:
        raise ValueError(
            f"train.folds lists fold {_fold} but folds.n_folds is {FOLDS_SETTINGS['n_folds']}: "
            f"expected folds between 0 and {FOLDS_SETTINGS['n_folds'] - 1}"
        )


def backbone_label(backbone):
    """The ensemble's name for a train.backbones entry: its label, else its timm name."""
    return backbone.get("label") or backbone["name"]


_labels = [backbone_label(_backbone) for _backbone in TRAIN["backbones"]]
for _label in _labels:
    if _labels.count(_label) > 1:
        raise ValueError(
            f"train.backbones has {_labels.count(_label)} entries named {_label!r}: give each "
            "a distinct `label` (the ensemble's name for it and the key of ensemble.weights), "
            f"e.g. label: {_label}-96mels"
        )
ROUNDS = config["pseudo"]["rounds"]
N_ROUNDS = len(ROUNDS)
PSEUDO_OOF = bool(config["pseudo"].get("oof_by_soundscape", False))

# TRAIN_RUNS: train tag -> everything its jobs need; PSEUDO_RUNS likewise.
TRAIN_RUNS = {}
PSEUDO_RUNS = {}
ROUND_TRAIN_TAGS = []  # per round: the train tags of every backbone
for _round in range(N_ROUNDS + 1):
    _pseudo_tag = None
    _round_settings = {}
    if _round > 0:
        _round_settings = dict(ROUNDS[_round - 1])
        _previous = ROUND_TRAIN_TAGS[_round - 1]
        _pseudo_settings = {
            **_round_settings,
            "round": _round,
            "oof_by_soundscape": PSEUDO_OOF,
        }
        _pseudo_tag = stage_tag(
            "pseudo",
            {**_pseudo_settings, "folds": FOLDS},
            {
                "train": _previous,
                "soundscape_mels": SOUNDSCAPE_MELS_TAG,
                "soundscape_labels": SOUNDSCAPE_LABELS_TAG,
            },
        )
        PSEUDO_RUNS[_pseudo_tag] = {
            "round": _round,
            "settings": _pseudo_settings,
            "train_tags": _previous,
        }
    _tags = []
    for _backbone in TRAIN["backbones"]:
        _mel, _mels_tag, _soundscape_tag = mel_configuration(_backbone.get("mels"))
        _settings = {
            **TRAIN_COMMON,
            "round": _round,
            "pseudo_weight": _round_settings.get("pseudo_weight"),
            "pseudo_ratio": _round_settings.get("pseudo_ratio"),
            "mix_pseudo": _round_settings.get("mix_pseudo"),
            "labelled_ratio": SOUNDSCAPE_LABELS["train_ratio"] if LABELS_FILE else 0.0,
            "labelled_weight": SOUNDSCAPE_LABELS["train_weight"],
        }
        if _round > 0 and PSEUDO_OOF:
            # Which soundscapes each fold leaves out (birdclef.pseudo.soundscape_folds).
            _settings["oof_by_soundscape"] = True
            _settings["soundscape_folds"] = FOLDS
            _settings["soundscape_fold_seed"] = FOLDS_SETTINGS["seed"]
        _upstream = {
            "mels": _mels_tag,
            "folds": FOLDS_TAG,
            "soundscape_mels": _soundscape_tag,
            "pseudo": _pseudo_tag,
            "soundscape_labels": SOUNDSCAPE_LABELS_TAG,
        }
        _tag = stage_tag(
            "train",
            {
                **_settings,
                # The label only names the entry; its mels are in the mels tags
                # and the normalization.
                "backbone": {
                    k: v for k, v in _backbone.items() if k not in ("label", "mels")
                },
                "normalization": _mel.get("normalization"),
            },
            _upstream,
            prefix=f"{_backbone['name']}-r{_round}",
        )
        if _tag in TRAIN_RUNS:
            raise ValueError(
                f"train.backbones lists {_backbone['name']!r} twice with the same settings: "
                "expected entries to differ in more than their label (e.g. mels, "
                "drop_path_rate or checkpoint)"
            )
        TRAIN_RUNS[_tag] = {
            "round": _round,
            "backbone": dict(_backbone),
            "settings": _settings,
            "pseudo_tag": _pseudo_tag,
            "mel": _mel,
            "upstream": _upstream,
        }
        _tags.append(_tag)
    ROUND_TRAIN_TAGS.append(_tags)
FINAL_TRAIN_TAGS = ROUND_TRAIN_TAGS[-1]

ENSEMBLE_SETTINGS = {**config["ensemble"], "folds": FOLDS}
# With soup, the fold's best checkpoint of every round is an ingredient.
ENSEMBLE_TRAIN_TAGS = (
    [tag for tags in ROUND_TRAIN_TAGS for tag in tags]
    if ENSEMBLE_SETTINGS.get("soup")
    else FINAL_TRAIN_TAGS
)
ENSEMBLE_TAG = stage_tag(
    "ensemble",
    ENSEMBLE_SETTINGS,
    {
        "train": FINAL_TRAIN_TAGS,
        "soup_ingredients": ENSEMBLE_TRAIN_TAGS,
        "soundscape_labels": SOUNDSCAPE_LABELS_TAG,
    },
)

# The final round's mel configurations, in order of first use: the ensemble's
# mel_groups (each member names its group; export and inference compute each
# group's log-mels once for all its members).
MEL_GROUPS = []
SOUNDSCAPE_MEL_GROUPS = []  # each mel group's train_soundscapes cache tag
for _tag in FINAL_TRAIN_TAGS:
    if TRAIN_RUNS[_tag]["upstream"]["mels"] not in MEL_GROUPS:
        MEL_GROUPS.append(TRAIN_RUNS[_tag]["upstream"]["mels"])
        SOUNDSCAPE_MEL_GROUPS.append(TRAIN_RUNS[_tag]["upstream"]["soundscape_mels"])

EXPORT_SETTINGS = dict(config["export"])
EXPORT_TAG = stage_tag(
    "export",
    EXPORT_SETTINGS,
    {
        "ensemble": ENSEMBLE_TAG,
        "mels": MEL_GROUPS,
        "soundscape_labels": SOUNDSCAPE_LABELS_TAG,
    },
)

SUBMISSION_SETTINGS = {
    # kaggle_data_dir only says where predict.py finds the data on Kaggle: not in the tag
    **{k: v for k, v in config["submission"].items() if k != "kaggle_data_dir"},
    **DATA_IDENTITY,
    "ground_truth": DATA["ground_truth"],
}
SUBMISSION_TAG = stage_tag("submission", SUBMISSION_SETTINGS, {"export": EXPORT_TAG})


def stage_dir(stage, tag):
    """results/<stage>/<tag>: where one stage's versioned artifact lives."""
    return f"results/{stage}/{tag}"


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
    return f"{stage_dir('train', tag)}/fold{fold}"


def fold_dirs(tags):
    """Every fold folder of the given train tags."""
    return [train_outputs(tag, fold) for tag in tags for fold in FOLDS]


def mel_groups():
    """The ensemble's mel groups: each group's tag and cache settings, in MEL_GROUPS order."""
    return [{"tag": tag, **MEL_RUNS[tag]} for tag in MEL_GROUPS]


def ensemble_members():
    """The final round's models: one member per (backbone, fold), with soup ingredients."""
    members = []
    for final_tag in FINAL_TRAIN_TAGS:
        backbone = TRAIN_RUNS[final_tag]["backbone"]
        group = MEL_GROUPS.index(TRAIN_RUNS[final_tag]["upstream"]["mels"])
        for fold in FOLDS:
            ingredients = [
                f"{train_outputs(tag, fold)}/best.pt"
                for tags in ROUND_TRAIN_TAGS
                for tag in tags
                if TRAIN_RUNS[tag]["backbone"] == backbone
            ]
            members.append(
                {
                    "name": f"{final_tag}/fold{fold}",
                    "backbone": backbone_label(backbone),
                    "mel_group": group,
                    "fold": fold,
                    "round": TRAIN_RUNS[final_tag]["round"],
                    "ingredients": (
                        ingredients
                        if ENSEMBLE_SETTINGS.get("soup")
                        else [f"{train_outputs(final_tag, fold)}/best.pt"]
                    ),
                }
            )
    return members


def xc_inputs(wildcards):
    """The xeno-canto stage's rows and audio, when the stage is on."""
    if not XC["enabled"]:
        return {}
    base = stage_dir("xc_scrape", XC_TAG)
    return {"extra_csv": f"{base}/train_xc.csv", "extra_audio": f"{base}/audio"}


def train_inputs(wildcards):
    """Caches (of the backbone's mel configuration), folds and (rounds > 0) pseudo-labels."""
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
    return inputs


def pseudo_inputs(wildcards):
    """Every fold's soundscape predictions of the previous round's models."""
    run = PSEUDO_RUNS[wildcards.tag]
    return {
        "predictions": [
            f"{folder}/soundscape_preds.parquet"
            for folder in fold_dirs(run["train_tags"])
        ],
        "taxonomy": root_path("taxonomy.csv"),
        **soundscape_labels_input(wildcards),
    }


def soundscape_labels_input(wildcards):
    """The labelled soundscape windows (soundscape_labels stage), when configured."""
    return {"soundscape_labels": SOUNDSCAPE_LABELS_PATH} if LABELS_FILE else {}


def ground_truth_input(wildcards):
    """The test ground truth (data.ground_truth), when configured."""
    return {"ground_truth": GROUND_TRUTH} if GROUND_TRUTH else {}

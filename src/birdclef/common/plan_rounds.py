"""The plan's training rounds and ensemble members (standard library only; see `birdclef.common.plan`).

`MelRegistry` registers every mel configuration a run uses (one mels tag and
one soundscape_mels tag each); `plan_rounds` plans round 0 and each
pseudo-label round: a pseudo run (from round 1) and one train run per backbone;
`plan_ensemble_members` lists the final round's models, one per (backbone, fold).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from birdclef.common.layout import backbone_label, train_fold_dir
from birdclef.common.versioning import stage_tag

# Mel keys that concern training recordings only, or the model's input scaling:
# not part of the train_soundscapes cache.
SOUNDSCAPE_EXCLUDED_KEYS = (
    "max_seconds",
    "rare_threshold",
    "rare_max_seconds",
    "normalization",
)


# Windows (rows of mels.window_seconds) a model may see at once (train.backbones[].context_seconds):
# 5, 10 or 20 s with 5 s rows.
CONTEXT_WINDOWS = (1, 2, 4)


def context_windows(backbone: Mapping[str, Any], window_seconds: float) -> int:
    """Windows a ``train.backbones`` entry sees at once: its ``context_seconds`` (absent or null: one
    window) over `window_seconds` (``mels.window_seconds``), which must give 1, 2 or 4 windows."""
    seconds = backbone.get("context_seconds")
    if seconds is None:
        return 1
    ratio = float(seconds) / float(window_seconds)
    if abs(ratio - round(ratio)) > 1e-9 or int(round(ratio)) not in CONTEXT_WINDOWS:
        raise ValueError(
            f"train.backbones {backbone_label(backbone)!r} has context_seconds {seconds}; expected one of "
            f"{[m * window_seconds for m in CONTEXT_WINDOWS]} (1, 2 or 4 windows of mels.window_seconds "
            f"= {window_seconds}) or null")
    return int(round(ratio))


# pseudo.rounds[] keys of self-distillation on the training recordings: read by the
# train runs (only when `recordings` is on), never by the pseudo stage.
RECORDING_KEYS = ("recordings", "recordings_power", "label_mass_cap")


def dataclass_from_mapping(cls: type, values: Mapping[str, Any] | None, what: str) -> Any:
    """`cls(**values)` for a settings dataclass (missing keys: its defaults); keys that are not
    fields raise a ValueError naming `what` (the config section) and the known keys."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} settings {unknown}; known: {sorted(known)}")
    return cls(**values)


def unused_option_keys(values: Mapping[str, Any]) -> list[str]:
    """Option keys of `values` (train settings) that its loss, filter_augment and distillation do
    not use.

    They are left out of the train runs' settings (so of their tags) and of the resume
    signature: a config that does not use soft-AUC, ASL, FilterAugment or distillation keeps
    the tags (and the ``last.pt``) it had before those keys existed, and
    `birdclef.train.TrainSettings` fills their defaults.
    """
    loss = values.get("loss", "bce")
    unused = []
    if loss != "bce+soft_auc":
        unused.append("soft_auc_weight")
    if loss != "asl":
        unused += ["asl_gamma_neg", "asl_gamma_pos", "asl_clip"]
    if not values.get("filter_augment"):
        unused += ["filter_augment", "filter_augment_db", "filter_augment_bands"]
    if not (values.get("distill_embedding_weight", 0) > 0 or values.get("distill_logit_weight", 0) > 0):
        unused += ["distill_embedding_weight", "distill_logit_weight", "distill_temperature"]
    if not (values.get("wave_augment") or {}).get("prob"):
        unused.append("wave_augment")
    return [key for key in unused if key in values]


# train.wave_augment: the [min, max] ranges, and the keys each part uses (a part whose
# probability is 0, or background noise without a source, leaves its keys out of the tag).
WAVE_RANGES = ("snr_db", "gain_db", "color_noise_snr_db", "color_noise_slope_db", "speech_snr_db")
WAVE_PARTS = {
    "noise_prob": ("noise_source", "snr_db", "empty_threshold"),
    "color_noise_prob": ("color_noise_snr_db", "color_noise_slope_db"),
    "speech_prob": ("speech_snr_db",),
}


def check_wave_augment(values: Mapping[str, Any]) -> None:
    """Checks of a train.wave_augment block: probabilities in [0, 1], every range [min, max]
    with min <= max; a ValueError names the setting."""
    for key in ("prob", *WAVE_PARTS):
        if key in values and not 0.0 <= float(values[key]) <= 1.0:
            raise ValueError(f"train.wave_augment.{key} is {values[key]}: expected a probability in [0, 1]")
    for key in WAVE_RANGES:
        if key not in values:
            continue
        pair = values[key]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"train.wave_augment.{key} is {pair!r}: expected [min, max]")
        if float(pair[0]) > float(pair[1]):
            raise ValueError(f"train.wave_augment.{key} is {list(pair)}: min {pair[0]} > max {pair[1]}, "
                             "expected [min, max] with min <= max")


def used_wave_augment(values: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a train.wave_augment block (prob above 0) its parts use: a part whose
    probability is 0 (background noise: or whose noise_source is null) leaves its keys out."""
    used = dict(values)
    noise_off = not used.get("noise_source")
    for prob, keys in WAVE_PARTS.items():
        if not used.get(prob, 0) or (prob == "noise_prob" and noise_off):
            for key in (prob, *keys):
                used.pop(key, None)
    if used.get("noise_source") != "soundscapes":
        used.pop("empty_threshold", None)
    return used


class MelRegistry:
    """The mel configurations of a plan: `mels` is the base one (folds and the report's mel
    figure read its cache); a backbone's `mels` overrides some keys and trains on its own
    caches. Every distinct configuration is one mels tag (training recordings, in `runs`) and
    one soundscape_mels tag (train_soundscapes windows, in `soundscape_runs`).
    """

    def __init__(
        self, base: Mapping[str, Any], on_bad_audio: str, data_identity: Mapping[str, Any], vad_tag: str
    ) -> None:
        self.base, self.on_bad_audio = base, on_bad_audio
        self.data_identity, self.vad_tag = data_identity, vad_tag
        self.runs: dict[str, dict[str, Any]] = {}
        self.soundscape_runs: dict[str, dict[str, Any]] = {}

    def configuration(self, overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str, str]:
        """Full mel settings, their mels tag and soundscape_mels tag; registers both caches.

        mels.normalization scales the model's input (inside the model): it is
        part of the training tags, not of the caches.
        """
        settings = {**self.base, **(overrides or {})}
        cache = {
            **{k: v for k, v in settings.items() if k != "normalization"},
            "on_bad_audio": self.on_bad_audio,
        }
        tag = stage_tag("mels", cache, {"vad": self.vad_tag})
        self.runs[tag] = cache
        soundscape = {
            **{k: v for k, v in settings.items() if k not in SOUNDSCAPE_EXCLUDED_KEYS},
            **self.data_identity,
            "on_bad_audio": self.on_bad_audio,
        }
        soundscape_tag = stage_tag("soundscape_mels", soundscape)
        self.soundscape_runs[soundscape_tag] = soundscape
        return settings, tag, soundscape_tag


def plan_rounds(config: Mapping[str, Any], fields: Mapping[str, Any], mels: MelRegistry) -> dict[str, Any]:
    """Round 0 and every pseudo.rounds entry: the pseudo run of each round from 1, and a
    train run per backbone (and, with train.pretrain on, a pretrain run per backbone). Returns the
    Plan fields train_common, train_runs, pretrain_runs, pseudo_runs,
    round_train_tags and final_train_tags."""
    train = config["train"]
    # device only chooses where training runs; the folds list only which jobs exist.
    # Option keys the chosen options do not use are left out (see `unused_option_keys`).
    # pretrain has its own runs (`_pretrain_run`); a run names its tag only when it is enabled.
    excluded = ("backbones", "device", "folds", "distill", "pretrain", *unused_option_keys(train))
    train_common = {k: v for k, v in train.items() if k not in excluded}
    pretrain_runs: dict[str, dict[str, Any]] = {}
    pretrain_tags: dict[int, str] = {}  # backbone position -> its pretrain tag
    if train.get("pretrain", {}).get("enabled"):
        for position, backbone in enumerate(train["backbones"]):
            tag, run = _pretrain_run(train_common, train["pretrain"], backbone, mels)
            pretrain_runs[tag] = run
            pretrain_tags[position] = tag
    if "wave_augment" in train_common:
        check_wave_augment(train["wave_augment"])
        train_common["wave_augment"] = used_wave_augment(train["wave_augment"])
    rounds = config["pseudo"]["rounds"]
    pseudo_oof = bool(config["pseudo"].get("oof_by_soundscape", False))
    train_runs: dict[str, dict[str, Any]] = {}
    pseudo_runs: dict[str, dict[str, Any]] = {}
    round_train_tags: list[list[str]] = []  # per round: the train tags of every backbone
    for round_ in range(len(rounds) + 1):
        pseudo_tag = None
        round_settings: dict[str, Any] = {}
        if round_ > 0:
            round_settings = dict(rounds[round_ - 1])
            pseudo_tag, pseudo_runs[pseudo_tag] = _pseudo_run(
                round_, round_settings, pseudo_oof, _generalists(round_train_tags[round_ - 1], train_runs), fields
            )
        tags = []
        for position, backbone in enumerate(train["backbones"]):
            tag, run = _train_run(
                config, fields, mels, train_common, backbone, round_, round_settings, pseudo_tag, pseudo_oof,
                pretrain_tags.get(position),
                round_train_tags[round_ - 1] if round_ > 0 else [],
            )
            if tag in train_runs:
                raise ValueError(
                    f"train.backbones lists {backbone['name']!r} twice with the same settings: "
                    "expected entries to differ in more than their label (e.g. mels, "
                    "drop_path_rate or checkpoint)"
                )
            train_runs[tag] = run
            tags.append(tag)
        round_train_tags.append(tags)
    return {
        "train_common": train_common,
        "train_runs": train_runs,
        "pretrain_runs": pretrain_runs,
        "pseudo_runs": pseudo_runs,
        "round_train_tags": round_train_tags,
        "final_train_tags": round_train_tags[-1],
    }


def _generalists(tags: list[str], train_runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The train tags of `tags` whose backbone is not a taxon specialist: the models a pseudo round
    labels from (a specialist's other columns are untrained). ValueError when every one is."""
    generalists = [tag for tag in tags if not train_runs[tag]["backbone"].get("specialist")]
    if not generalists:
        raise ValueError(
            "pseudo.rounds label soundscapes from the previous round's models, but every entry of "
            "train.backbones is a taxon specialist (specialist set): expected at least one entry without "
            "`specialist`, or no pseudo rounds"
        )
    return generalists


def _pseudo_run(
    round_: int,
    round_settings: Mapping[str, Any],
    pseudo_oof: bool,
    previous: list[str],
    fields: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The pseudo-label run of round `round_` (>= 1), from the previous round's train tags."""
    pseudo_settings = {**{k: v for k, v in round_settings.items() if k not in RECORDING_KEYS},
                       "round": round_, "oof_by_soundscape": pseudo_oof}
    from_teacher = round_settings.get("source", "students") != "students"
    if from_teacher and not fields["teacher_tag"]:
        raise ValueError(
            f"pseudo.rounds[{round_ - 1}].source is {round_settings['source']!r} but teacher.enabled is "
            "false: expected teacher.enabled: true, or source: students"
        )
    teacher = fields["teacher_tag"] if from_teacher else None
    upstream = {
        "train": previous,
        "soundscape_mels": fields["soundscape_mels_tag"],
        "soundscape_labels": fields["soundscape_labels_tag"],
        # only then: a students-only round keeps the tag it had before the teacher existed
        **({"teacher": teacher} if teacher else {}),
    }
    pseudo_tag = stage_tag("pseudo", {**pseudo_settings, "folds": fields["folds"]}, upstream)
    return pseudo_tag, {"round": round_, "settings": pseudo_settings, "train_tags": previous,
                        "teacher_tag": teacher}


def _train_run(
    config: Mapping[str, Any],
    fields: Mapping[str, Any],
    mels: MelRegistry,
    train_common: Mapping[str, Any],
    backbone: Mapping[str, Any],
    round_: int,
    round_settings: Mapping[str, Any],
    pseudo_tag: str | None,
    pseudo_oof: bool,
    pretrain_tag: str | None = None,
    previous: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The train run of one backbone in one round: its tag and what the rules need of it.

    `pretrain_tag` (train.pretrain on) names the run whose backbone starts this one: every
    round starts from it (rounds retrain from their initial weights, and a soup needs one
    start per fold), so it is in every round's upstream.

    With the round's ``recordings`` on (self-distillation), the run also reads the
    previous round's out-of-fold predictions (`previous`: its train tags): the
    ``self_distill_*`` settings and the ``recording_oof`` upstream enter the tag only then.
    """
    soundscape_labels = config["soundscape_labels"]
    mel, backbone_mels_tag, backbone_soundscape_tag = mels.configuration(backbone.get("mels"))
    context_windows(backbone, mel["window_seconds"])  # checked here, at parse time
    settings = {
        **train_common,
        "round": round_,
        "pseudo_weight": round_settings.get("pseudo_weight"),
        "pseudo_ratio": round_settings.get("pseudo_ratio"),
        "mix_pseudo": round_settings.get("mix_pseudo"),
        "labelled_ratio": soundscape_labels["train_ratio"] if fields["labels_file"] else 0.0,
        "labelled_weight": soundscape_labels["train_weight"],
    }
    distill = {**config["train"]["distill"], **backbone.get("distill", {})}
    distills = distill["embedding_weight"] > 0 or distill["logit_weight"] > 0
    settings.update({f"distill_{key}": value for key, value in distill.items()})
    for key in unused_option_keys(settings):  # a run without distillation keeps its earlier tag
        settings.pop(key)
    if distills and not fields["teacher_tag"]:
        raise ValueError(
            f"train.backbones {backbone_label(backbone)!r} distils from the teacher (train.distill "
            "embedding_weight or logit_weight above 0) but teacher.enabled is false: expected "
            "teacher.enabled: true (BirdNET 2.4 or a local Perch v2 model) or both weights 0"
        )
    recording_oof = list(previous) if round_ > 0 and round_settings.get("recordings") else None
    if recording_oof:
        settings["self_distill_power"] = round_settings.get("recordings_power", 2.0)
        settings["self_distill_normalize"] = round_settings.get("normalize") or "sum"
        settings["self_distill_mass_cap"] = bool(round_settings.get("label_mass_cap", False))
    wave_teacher = _check_wave_sources(config, fields, settings.get("wave_augment"))
    if round_ > 0 and pseudo_oof:
        # Which soundscapes each fold leaves out (birdclef.pseudo.soundscape_folds).
        settings["oof_by_soundscape"] = True
        settings["soundscape_folds"] = fields["folds"]
        settings["soundscape_fold_seed"] = fields["folds_settings"]["seed"]
    upstream = {
        "mels": backbone_mels_tag,
        "folds": fields["folds_tag"],
        "soundscape_mels": backbone_soundscape_tag,
        "pseudo": pseudo_tag,
        "soundscape_labels": fields["soundscape_labels_tag"],
        **({"teacher": fields["teacher_tag"]} if distills or wave_teacher else {}),
        **({"pretrain": pretrain_tag} if pretrain_tag else {}),
        **({"recording_oof": recording_oof} if recording_oof else {}),
    }
    tag = stage_tag(
        "train",
        {
            **settings,
            # The label only names the entry; its mels are in the mels tags
            # and the normalization.
            "backbone": {k: v for k, v in backbone.items() if k not in ("label", "mels")},
            "normalization": mel.get("normalization"),
        },
        upstream,
        prefix=f"{backbone['name']}-r{round_}",
    )
    run = {
        "round": round_,
        "backbone": dict(backbone),
        "settings": settings,
        "pseudo_tag": pseudo_tag,
        "mel": mel,
        "upstream": upstream,
    }
    return tag, run


def _pretrain_run(
    train_common: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    backbone: Mapping[str, Any],
    mels: MelRegistry,
) -> tuple[str, dict[str, Any]]:
    """The pretrain run of one backbone: the train settings with train.pretrain's overrides, on
    the backbone's mel cache (which holds the pretrain-only recordings); no pseudo-labels, no
    labelled soundscapes, no distillation."""
    mel, mels_tag, _ = mels.configuration(backbone.get("mels"))
    settings = {
        **train_common,
        **{k: v for k, v in pretrain.items() if k != "enabled" and v is not None},
        "labelled_ratio": 0.0,
    }
    backbone_settings = {k: v for k, v in backbone.items() if k not in ("label", "mels", "distill")}
    upstream = {"mels": mels_tag}
    tag = stage_tag(
        "pretrain",
        {**settings, "backbone": backbone_settings, "normalization": mel.get("normalization")},
        upstream,
        prefix=f"{backbone['name']}-pt",
    )
    return tag, {"backbone": dict(backbone), "settings": settings, "mel": mel, "upstream": upstream}
def _check_wave_sources(config: Mapping[str, Any], fields: Mapping[str, Any],
                        wave: Mapping[str, Any] | None) -> bool:
    """The sources a train.wave_augment block (on) needs exist; whether its background noise
    comes from the teacher's empty train_soundscapes windows (then the teacher tag is upstream)."""
    if not wave:
        return False
    if wave.get("speech_prob") and not config["vad"]["enabled"]:
        raise ValueError(
            f"train.wave_augment.speech_prob is {wave['speech_prob']} but vad.enabled is false: the speech "
            "clips are the spans the VAD cuts out; expected vad.enabled: true or speech_prob: 0")
    if wave.get("noise_source") != "soundscapes":
        return False
    if not fields["teacher_tag"] and not fields["labels_file"]:
        raise ValueError(
            "train.wave_augment.noise_source is 'soundscapes' but teacher.enabled is false and "
            "soundscape_labels.file is null: expected the teacher (its empty windows) or the 2026 "
            "labels (the labelled train windows without a label), or a noise folder path")
    return bool(fields["teacher_tag"])


def check_backbone_labels(backbones: Sequence[Mapping[str, Any]]) -> None:
    """Every train.backbones entry has its own label (the ensemble's name for it)."""
    labels = [backbone_label(backbone) for backbone in backbones]
    for label in labels:
        if labels.count(label) > 1:
            raise ValueError(
                f"train.backbones has {labels.count(label)} entries named {label!r}: give each "
                "a distinct `label` (the ensemble's name for it and the key of ensemble.weights), "
                f"e.g. label: {label}-96mels"
            )


def plan_ensemble_members(
    train_runs: Mapping[str, Mapping[str, Any]],
    round_train_tags: Sequence[Sequence[str]],
    final_train_tags: Sequence[str],
    mel_groups: Sequence[str],
    folds: Sequence[int],
    soup: bool,
) -> list[dict[str, Any]]:
    """The final round's models: one member per (backbone, fold), with soup ingredients."""
    members = []
    for final_tag in final_train_tags:
        backbone = train_runs[final_tag]["backbone"]
        group = mel_groups.index(train_runs[final_tag]["upstream"]["mels"])
        for fold in folds:
            ingredients = (
                [
                    f"{train_fold_dir(tag, fold)}/best.pt"
                    for tags in round_train_tags
                    for tag in tags
                    if train_runs[tag]["backbone"] == backbone
                ]
                if soup
                else [f"{train_fold_dir(final_tag, fold)}/best.pt"]
            )
            members.append(
                {
                    "name": f"{final_tag}/fold{fold}",
                    "backbone": backbone_label(backbone),
                    "mel_group": group,
                    "fold": fold,
                    "round": train_runs[final_tag]["round"],
                    "ingredients": ingredients,
                    **({"specialist": backbone["specialist"]} if backbone.get("specialist") else {}),
                }
            )
    return members

"""Training hyper-parameters: `TrainSettings` and its construction from the workflow config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from birdclef.common.plan_rounds import dataclass_from_mapping, unused_option_keys
from birdclef.train.wave_augment import WaveAugmentSettings

LOSSES = ("bce", "focal", "bce+focal", "soft_auc", "bce+soft_auc", "asl")
OPTIMIZERS = ("adamw", "radam")
# A taxon specialist's sampling factor for recordings with one of its classes (the schema's default:
# train.backbones[].specialist.upsample).
SPECIALIST_UPSAMPLE = 4.0


@dataclass
class TrainSettings:
    """Hyper-parameters of one training run (one backbone, one fold, one round).

    The defaults are the config schema's (schemas/config.schema.yaml: `train`,
    `pseudo.rounds[]` for the pseudo keys, `soundscape_labels.train_ratio` /
    `train_weight` for the labelled ones); tests/test_train.py checks that they agree.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0  # linear warmup then cosine decay (per step)
    optimizer: str = "adamw"  # "adamw" | "radam"
    loss: str = "bce"  # one of LOSSES (birdclef.train.loss)
    focal_gamma: float = 2.0
    focal_weight: float = 0.5  # bce+focal = (1 - w) * bce + w * focal
    soft_auc_weight: float = 0.25  # bce+soft_auc = (1 - w) * bce + w * soft_auc
    asl_gamma_neg: float = 4.0  # asymmetric loss (Ridnik et al. 2021)
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    secondary_weight: float = 0.5
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.5
    mixup_prob: float = 0.5
    spec_augment: bool = True  # time and frequency masks
    filter_augment: float = 0.0  # probability of random band gains per example (0: off)
    filter_augment_db: float = 6.0  # largest gain, +- dB
    filter_augment_bands: list[int] = field(default_factory=lambda: [3, 6])  # [min, max] bands
    # waveform augmentation of recording crops (birdclef.train.wave_augment; prob 0: off)
    wave_augment: WaveAugmentSettings = field(default_factory=WaveAugmentSettings)
    crop_seconds_max: float = 30.0  # random crops come from the first N seconds
    samples_per_epoch: int | None = None  # default: number of training recordings
    class_balance_power: float = -0.5  # sampling weight ~ class frequency ** power
    seed: int = 0
    pseudo_weight: float = 1.0
    pseudo_ratio: float = 0.3
    mix_pseudo: bool = True  # mixup may pair a recording with a pseudo-labelled window
    labelled_ratio: float = 0.25  # share of a batch from labelled soundscape windows
    labelled_weight: float = 1.0  # loss weight of a labelled soundscape window
    distill_embedding_weight: float = 0.0  # cosine loss to the teacher's embedding (0: off)
    distill_logit_weight: float = 0.0  # soft-target BCE to the teacher's mapped logits (0: off)
    distill_temperature: float = 2.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"train loss {self.loss!r} is not one of {LOSSES}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("train epochs and batch_size must be >= 1")
        if not 0.0 <= self.pseudo_ratio <= 1.0:
            raise ValueError(f"pseudo_ratio {self.pseudo_ratio} must lie in [0, 1]")
        if not 0.0 <= self.labelled_ratio <= 1.0:
            raise ValueError(f"labelled_ratio {self.labelled_ratio} (soundscape_labels.train_ratio) "
                             "must lie in [0, 1]")
        if self.pseudo_ratio + self.labelled_ratio > 1.0:
            raise ValueError(f"pseudo_ratio {self.pseudo_ratio} + soundscape_labels.train_ratio "
                             f"{self.labelled_ratio} exceed 1: expected shares of one batch")
        if self.distill_embedding_weight < 0 or self.distill_logit_weight < 0 or self.distill_temperature <= 0:
            raise ValueError("train.distill: embedding_weight and logit_weight must be >= 0 and temperature > 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing {self.label_smoothing} must lie in [0, 1)")
        self._check_recipe()

    def _check_recipe(self) -> None:
        """The recipe options' ranges (soft-AUC, ASL, FilterAugment, waveform augmentation)."""
        if not 0.0 <= self.soft_auc_weight <= 1.0:
            raise ValueError(f"soft_auc_weight {self.soft_auc_weight} must lie in [0, 1]")
        if min(self.asl_gamma_neg, self.asl_gamma_pos) < 0 or not 0.0 <= self.asl_clip < 1.0:
            raise ValueError("train asl_gamma_neg and asl_gamma_pos must be >= 0, asl_clip in [0, 1)")
        if not 0.0 <= self.filter_augment <= 1.0 or self.filter_augment_db < 0:
            raise ValueError("train filter_augment must lie in [0, 1] and filter_augment_db be >= 0")
        bands = list(self.filter_augment_bands)
        if len(bands) != 2 or not 1 <= bands[0] <= bands[1]:
            raise ValueError(f"train filter_augment_bands {bands} must be [min, max] with 1 <= min <= max")
        self.filter_augment_bands = [int(bands[0]), int(bands[1])]
        if not isinstance(self.wave_augment, WaveAugmentSettings):
            self.wave_augment = WaveAugmentSettings.from_dict(self.wave_augment)

    def unused_keys(self) -> list[str]:
        """The option keys (recipe, distillation) the chosen options do not use: left out of tags and resume checks,
        so runs that do not use them keep the tags and checkpoints they had before the keys
        existed (the plan leaves them out by the same rule, `unused_option_keys`)."""
        return unused_option_keys(dataclasses.asdict(self))

    @property
    def distills(self) -> bool:
        """Whether the run learns from the teacher (either distillation weight above 0)."""
        return self.distill_embedding_weight > 0 or self.distill_logit_weight > 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TrainSettings:
        """Build settings from a (config) mapping; unknown keys raise a ValueError."""
        return dataclass_from_mapping(cls, values, "train")


def settings_from_config(values: Mapping[str, Any]) -> TrainSettings:
    """`TrainSettings` from the workflow's train settings (config train + round keys).

    Keys that are not training hyper-parameters (``round``) are dropped, and None
    (e.g. round 0's pseudo_weight) means the default.
    """
    known = {field.name for field in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in values.items() if k in known and v is not None})

"""Where each artifact lives, and the ensemble's name for a backbone (standard library only).

The workflow's rules (`rules/common.smk`) and the plan (`birdclef.common.plan`)
name every output folder with these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def stage_dir(stage: str, tag: str) -> str:
    """results/<stage>/<tag>: where one stage's versioned artifact lives."""
    return f"results/{stage}/{tag}"


def train_fold_dir(tag: str, fold: int) -> str:
    """The folder one (backbone, round, fold) training job writes."""
    return f"{stage_dir('train', tag)}/fold{fold}"


def backbone_label(backbone: Mapping[str, Any]) -> str:
    """The ensemble's name for a train.backbones entry: its label, else its timm name."""
    return backbone.get("label") or backbone["name"]

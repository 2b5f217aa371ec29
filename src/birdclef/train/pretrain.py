"""The pretrain stage: one training run on the broad set, whose backbone starts every fold.

As the 2nd places of 2025 and 2026 did: a model trained first on every catalog
recording (the main taxonomy's, the pretrain-only species of `data.extra_roots`
and of the xeno-canto query mode, their own class list) gives round 0 of every
fold its backbone; the head is re-initialised there because its classes differ.
The run is `birdclef.train.fold.train_fold` with fold -1 (no validation: the
best epoch is the lowest training loss) on the backbone's mel cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.catalog import read_taxonomy
from birdclef.common.io import write_parquet
from birdclef.common.labels import parse_label_list
from birdclef.common.manifest import StageManifest
from birdclef.runtime.features import frames_per_second
from birdclef.runtime.features import window_frames as mel_window_frames
from birdclef.train.fold import train_fold
from birdclef.train.settings import settings_from_config
from birdclef.train.stage import model_spec_of


def pretrain_classes(index: pd.DataFrame, taxonomy: list[str]) -> list[str]:
    """The pretrain run's classes: the taxonomy's, in its order, then every other label of the
    mel index (primary or secondary), sorted."""
    known = set(taxonomy)
    others: set[str] = set()
    for primary, secondary in zip(index["primary_label"].astype(str), index["secondary_labels"], strict=True):
        others.update(x for x in [primary, *parse_label_list(secondary)] if x not in known)
    return [*taxonomy, *sorted(others)]


def pretrain_stage(
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    tag: str,
    settings: Mapping[str, Any],
    backbone: Mapping[str, Any],
    upstream: Mapping[str, Any],
    mel: Mapping[str, Any],
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """The pretrain stage: train on every cached recording; write ``best.pt``, ``classes.parquet``,
    ``metrics.json`` and the manifest.

    `inputs`: mels, index (the backbone's mel cache) and taxonomy; `outputs`: checkpoint
    (``<dir>/best.pt``), classes, metrics, manifest, in one folder.
    """
    out_dir = Path(outputs["checkpoint"]).parent
    manifest = StageManifest("pretrain", tag, {**settings, "backbone": dict(backbone)}, upstream,
                             list(inputs.values()))
    mels = np.load(inputs["mels"], mmap_mode="r")
    index = pd.read_parquet(inputs["index"])
    taxonomy = read_taxonomy(inputs["taxonomy"])
    classes = pretrain_classes(index, taxonomy)
    folds = pd.DataFrame({"filename": index["filename"].astype(str), "fold": -1})
    metrics = train_fold(
        mels, index, folds, -1, classes, model_spec_of(backbone, classes, mel),
        settings_from_config(settings),
        window_frames=mel_window_frames(mel), frames_per_second=frames_per_second(mel),
        out_dir=out_dir, threads=int(threads), device=device, progress=progress,
        inputs_fingerprint=manifest.data["inputs"],
    )
    pretrain_only = (
        index["pretrain_only"].astype(bool) if "pretrain_only" in index.columns else pd.Series(False, index=index.index)
    )
    write_parquet(outputs["classes"], pd.DataFrame({"primary_label": classes,
                                                    "in_taxonomy": [c in set(taxonomy) for c in classes]}))
    manifest.headline.update({
        "classes": len(classes),
        "taxonomy_classes": len(taxonomy),
        "pretrain_only_classes": len(classes) - len(taxonomy),
        "recordings": int(len(index)),
        "pretrain_only_recordings": int(pretrain_only.sum()),
        "best_epoch": metrics["best_epoch"],
        "final_train_loss": metrics["epochs"][-1]["train_loss"] if metrics["epochs"] else None,
        "device": metrics["device"],
        "samples_per_s": float(np.mean([h["samples_per_s"] for h in metrics["epochs"] if h["samples_per_s"]]))
        if metrics["epochs"] else None,
    })
    manifest.write(outputs["manifest"])
    return metrics

"""The train stage of the workflow: read the caches, run `train_fold`, write the manifest."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.catalog import read_taxonomy, specialist_classes
from birdclef.common.manifest import StageManifest
from birdclef.common.plan_rounds import context_windows
from birdclef.pseudo import recording_soft_labels, soundscape_folds
from birdclef.runtime.features import frames_per_second
from birdclef.runtime.features import window_frames as mel_window_frames
from birdclef.soundscapes import window_positions
from birdclef.train.data import RowView
from birdclef.train.distill import TeacherCache
from birdclef.train.fold import train_fold
from birdclef.train.model import MODEL_DEFAULTS
from birdclef.train.settings import SPECIALIST_UPSAMPLE, settings_from_config
from birdclef.train.wave_augment import WaveSources, load_wave_sources


def _output_dir(outputs: Mapping[str, str]) -> Path:
    """The folder of the outputs, checked to carry the names `train_fold` writes."""
    out_dir = Path(outputs["checkpoint"]).parent
    expected = {"checkpoint": "best.pt", "oof": "oof.parquet",
                "soundscape_preds": "soundscape_preds.parquet", "metrics": "metrics.json"}
    for key, name in expected.items():
        if key in outputs and Path(outputs[key]) != out_dir / name:
            raise ValueError(f"train output {key} must be {out_dir / name}, got {outputs[key]}")
    return out_dir


def model_spec_of(backbone: Mapping[str, Any], classes: list[str],
                mel: Mapping[str, Any]) -> dict[str, Any]:
    """The model spec of a ``train.backbones`` entry (missing keys: `MODEL_DEFAULTS`)."""
    return {
        "backbone": backbone["name"],
        "n_classes": len(classes),
        "in_chans": int(backbone.get("in_chans", MODEL_DEFAULTS["in_chans"])),
        "pretrained": bool(backbone.get("pretrained", MODEL_DEFAULTS["pretrained"])),
        "checkpoint": backbone.get("checkpoint"),
        "drop_rate": float(backbone.get("drop_rate", MODEL_DEFAULTS["drop_rate"])),
        "drop_path_rate": float(backbone.get("drop_path_rate", MODEL_DEFAULTS["drop_path_rate"])),
        # checked by build_model
        "normalization": mel.get("normalization") or MODEL_DEFAULTS["normalization"],
        "context_windows": context_windows(backbone, mel["window_seconds"]),
    }



def _specialist(backbone: Mapping[str, Any], classes: list[str], taxonomy_csv: str,
                manifest: StageManifest) -> tuple[list[int], float] | None:
    """A taxon specialist's (class indices, upsample), recorded in the manifest; None for a generalist."""
    spec = backbone.get("specialist")
    labels = specialist_classes(taxonomy_csv, spec, f"train.backbones {backbone.get('label', backbone['name'])!r} "
                                "specialist")
    if labels is None:
        return None
    upsample = float(spec.get("upsample", SPECIALIST_UPSAMPLE))
    manifest.headline["specialist"] = {"classes": labels, "upsample": upsample}
    position = {label: i for i, label in enumerate(classes)}
    return [position[label] for label in labels], upsample


def _pseudo_windows(inputs: Mapping[str, str], settings: Mapping[str, Any], fold: int,
                    classes: list[str], soundscape_mels: np.ndarray,
                    soundscape_index: pd.DataFrame, manifest: StageManifest):
    """(pseudo windows, their labels, the soundscapes they come from) of ``inputs["pseudo_labels"]``."""
    labels = pd.read_parquet(inputs["pseudo_labels"])
    if settings.get("oof_by_soundscape"):
        # Out of fold by soundscape: this fold's soundscapes are left for this
        # model to label in the next round, so it trains on the others only.
        assignment = soundscape_folds(soundscape_index["soundscape"].astype(str),
                                      settings["soundscape_folds"],
                                      settings["soundscape_fold_seed"])
        held_out = labels["soundscape"].astype(str).map(assignment) == int(fold)
        labels = labels[~held_out].reset_index(drop=True)
        manifest.headline["pseudo_soundscapes_held_out"] = sorted(
            s for s, f in assignment.items() if f == int(fold))
    seen_soundscapes = sorted(labels["soundscape"].astype(str).unique())
    rows = window_positions(soundscape_index, labels["row_id"], inputs["soundscape_index"])
    pseudo_mels = RowView(soundscape_mels, rows)
    pseudo_labels = labels[classes].to_numpy(dtype=np.float32)
    return pseudo_mels, pseudo_labels, seen_soundscapes


def _recording_pseudo(inputs: Mapping[str, Any], settings: Mapping[str, Any],
                      classes: list[str]) -> pd.DataFrame | None:
    """The power-scaled OOF soft labels of the training recordings (self-distillation), or None.

    ``inputs["recording_oof"]``: the previous round's ``oof.parquet`` files, given when the
    round's ``recordings`` is on (the ``self_distill_*`` settings).
    """
    paths = _paths(inputs.get("recording_oof"))
    if not paths:
        if "self_distill_power" in settings:
            raise ValueError("the round self-distils on the recordings (pseudo.rounds[].recordings) but "
                             "no previous-round oof.parquet was given: expected input recording_oof")
        return None
    return recording_soft_labels([pd.read_parquet(p) for p in paths], classes,
                                 float(settings["self_distill_power"]),
                                 settings.get("self_distill_normalize") or "sum", names=paths)


def _paths(value: Any) -> list[str]:
    """An input entry (one path, a list of paths, or None) as a list of paths."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]
def _wave_sources(inputs: Mapping[str, str], settings, mel: Mapping[str, Any], classes: list[str],
                  labelled: pd.DataFrame | None) -> WaveSources | None:
    """The waveform augmentation's sources (None when ``wave_augment.prob`` is 0); its noise
    comes from the teacher's empty windows when the rule passes the teacher's artifact."""
    wave = settings.wave_augment
    if wave.prob <= 0:
        return None
    teacher_index = teacher_logits = None
    if wave.noise_source == "soundscapes" and inputs.get("teacher_index"):
        teacher_index = pd.read_parquet(inputs["teacher_index"])
        teacher_logits = np.load(inputs["teacher_logits"], mmap_mode="r")
    return load_wave_sources(wave, inputs, mel, classes, labelled, teacher_index, teacher_logits)


def _headline(manifest: StageManifest, metrics: Mapping[str, Any]) -> None:
    """Copy the run's main numbers into the manifest's headline."""
    manifest.headline.update({
        key: metrics[key] for key in ("oof_auc", "soundscape_auc", "soundscape_windows_scored",
                                      "best_epoch", "device", "amp", "n_train", "n_val",
                                      "n_pseudo", "n_labelled", "resumed_from_epoch",
                                      "teacher_coverage", "self_distill")
    })
    manifest.headline["epochs_run"] = len(metrics["epochs"])
    manifest.headline["samples_per_s"] = (
        float(np.mean([h["samples_per_s"] for h in metrics["epochs"] if h["samples_per_s"]]))
        if metrics["epochs"] else None
    )


def train_stage(
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    fold: int,
    tag: str,
    settings: Mapping[str, Any],
    backbone: Mapping[str, Any],
    upstream: Mapping[str, Any],
    mel: Mapping[str, Any],
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """The train stage: read the caches, run `train_fold`, write the manifest.

    `inputs`: mels, index, folds, soundscape_mels, soundscape_index, taxonomy and,
    from round 1, pseudo_labels (row_id, soundscape, end_s, one column per class);
    with distillation teacher_embeddings, teacher_logits and teacher_index; with
    train.pretrain on, pretrain (the pretrain stage's ``best.pt``: the backbone's
    initial weights); with
    self-distillation on the recordings recording_oof (the previous round's oof.parquet files).
    `outputs`: checkpoint (``<dir>/best.pt``), oof, soundscape_preds, metrics,
    curve, manifest; every output but the manifest must lie in one folder with
    the names `train_fold` writes. ``last.pt`` (for resuming) is written there too
    and is deliberately not a declared output, so that Snakemake keeps it when a
    job fails; it resumes only on the same input files (the manifest's ``inputs``).
    """
    out_dir = _output_dir(outputs)
    manifest = StageManifest("train", tag, {**settings, "backbone": dict(backbone), "fold": fold},
                             upstream, [p for value in inputs.values() for p in _paths(value)])
    classes = read_taxonomy(inputs["taxonomy"])
    model_spec = model_spec_of(backbone, classes, mel)
    specialist = _specialist(backbone, classes, inputs["taxonomy"], manifest)
    train_settings = settings_from_config(settings)
    mels = np.load(inputs["mels"], mmap_mode="r")
    mel_index = pd.read_parquet(inputs["index"])
    folds = pd.read_parquet(inputs["folds"])
    soundscape_mels = np.load(inputs["soundscape_mels"], mmap_mode="r")
    soundscape_index = pd.read_parquet(inputs["soundscape_index"])
    pseudo_mels = pseudo_labels = None
    seen_soundscapes: list[str] = []
    labelled = None
    if inputs.get("soundscape_labels"):
        labelled = pd.read_parquet(inputs["soundscape_labels"])
        labelled["row_id"] = labelled["row_id"].astype(str)
    if inputs.get("pseudo_labels"):
        pseudo_mels, pseudo_labels, seen_soundscapes = _pseudo_windows(
            inputs, settings, fold, classes, soundscape_mels, soundscape_index, manifest)
    recording_pseudo = _recording_pseudo(inputs, settings, classes)
    wave = _wave_sources(inputs, train_settings, mel, classes, labelled)
    if wave is not None:
        manifest.headline["wave_augment"] = wave.stats
    metrics = train_fold(
        mels, mel_index, folds, int(fold), classes, model_spec, train_settings,
        window_frames=mel_window_frames(mel),
        frames_per_second=frames_per_second(mel),
        out_dir=out_dir, threads=int(threads), device=device,
        soundscape_mels=soundscape_mels, soundscape_index=soundscape_index,
        pseudo_mels=pseudo_mels, pseudo_labels=pseudo_labels, progress=progress,
        seen_soundscapes=seen_soundscapes, labelled_windows=labelled,
        teacher=TeacherCache.load(inputs) if train_settings.distills else None,
        init_from=inputs.get("pretrain"),
        specialist=specialist,
        recording_pseudo=recording_pseudo,
        label_mass_cap=bool(settings.get("self_distill_mass_cap", False)),
        wave=wave,
        inputs_fingerprint=manifest.data["inputs"],
    )
    _headline(manifest, metrics)
    manifest.write(outputs["manifest"])
    return metrics

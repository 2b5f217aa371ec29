"""SED model: a timm backbone with an attention head giving clip- and frame-wise outputs.

As in the public BirdCLEF SED notebooks: the backbone's feature map is averaged
over frequency, a 1-d attention head weighs the time steps, and the clip score is
the attention-weighted sum of the frame scores. The forward pass has no Python
branching on tensor values, so `openvino.convert_model` traces it as is.

Input: raw log-mel dB, shape (batch, 1, n_mels, frames). The input scaling
(`normalization`, from config ``mels.normalization``) happens inside the model,
so every caller (training, the exported IR, Kaggle inference) feeds the same
thing and a checkpoint carries its own scaling:

- ``per_example`` (default): standardise each example (mean 0, std 1);
- ``minmax``: map each example's range onto [0, 1];
- ``none``: the backbone sees the dB values as they are.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from birdclef.common.io import atomic_path
from birdclef.common.plan_rounds import CONTEXT_WINDOWS

NORMALIZATIONS = ("per_example", "minmax", "none")


def normalize_input(mel_db: torch.Tensor, normalization: str) -> torch.Tensor:
    """Scale a (B, C, F, T) log-mel batch per `normalization` (a Python string, not a tensor)."""
    if normalization == "per_example":
        mean = mel_db.mean(dim=(1, 2, 3), keepdim=True)
        std = mel_db.std(dim=(1, 2, 3), keepdim=True) + 1e-5
        return (mel_db - mean) / std
    if normalization == "minmax":
        low = mel_db.amin(dim=(1, 2, 3), keepdim=True)
        high = mel_db.amax(dim=(1, 2, 3), keepdim=True)
        return (mel_db - low) / (high - low + 1e-5)
    if normalization == "none":
        return mel_db
    raise ValueError(f"mels.normalization is {normalization!r}; expected one of {list(NORMALIZATIONS)}")


class AttentionHead(nn.Module):
    """Attention pooling over time: clip logits = sum_t softmax(att)_t * frame logits_t."""

    def __init__(self, in_features: int, n_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Conv1d(in_features, in_features, kernel_size=1)
        self.att = nn.Conv1d(in_features, n_classes, kernel_size=1)
        self.cla = nn.Conv1d(in_features, n_classes, kernel_size=1)
        # Start from the prior (about one class present per clip), not from
        # p = 0.5 for every class: the first hundred steps then learn calls
        # instead of the base rate (the RetinaNet initialisation).
        nn.init.constant_(self.cla.bias, -math.log(max(n_classes - 1, 1)))

    def _attention_and_frames(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, T) -> (attention scores before the softmax, frame logits), both (B, K, T)."""
        hidden = torch.relu(self.fc(self.dropout(features)))
        hidden = self.dropout(hidden)
        return torch.tanh(self.att(hidden)), self.cla(hidden)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, T) -> (clip logits (B, K), frame logits (B, K, T))."""
        attention, frame_logits = self._attention_and_frames(features)
        weights = torch.softmax(attention, dim=-1)
        clip_logits = (weights * frame_logits).sum(dim=-1)
        return clip_logits, frame_logits

    def forward_segments(self, features: torch.Tensor, n_segments: int) -> torch.Tensor:
        """features (B, C, T) -> segment logits (B, n_segments, K): the attention pooling of
        `forward` restricted to each of `n_segments` consecutive, near-equal spans of the T
        steps (span s: steps floor(s T / n) .. floor((s + 1) T / n) - 1). One segment is `forward`'s
        clip logits."""
        attention, frame_logits = self._attention_and_frames(features)
        steps = int(features.shape[-1])
        if steps < n_segments:
            raise ValueError(f"{steps} feature steps cannot be split into {n_segments} segments: "
                             "the backbone downsamples time too much for this context")
        segments = []
        for s in range(n_segments):
            begin, end = s * steps // n_segments, (s + 1) * steps // n_segments
            weights = torch.softmax(attention[..., begin:end], dim=-1)
            segments.append((weights * frame_logits[..., begin:end]).sum(dim=-1))
        return torch.stack(segments, dim=1)


def join_rows(mel_db: torch.Tensor, m: int) -> torch.Tensor:
    """(N, C, F, T) row windows, N a multiple of `m` -> (N / m, C, F, m T): each run of `m`
    consecutive rows joined along time (the input of a model with ``context_windows`` m)."""
    _, channels, n_mels, frames = mel_db.shape
    chunks = mel_db.reshape(-1, m, channels, n_mels, frames).permute(0, 2, 3, 1, 4)
    return chunks.reshape(-1, channels, n_mels, m * frames)


class SEDModel(nn.Module):
    """timm backbone + frequency pooling + attention head."""

    def __init__(
        self,
        backbone: str,
        n_classes: int,
        in_chans: int = 1,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
        normalization: str = "per_example",
        context_windows: int = 1,
    ) -> None:
        super().__init__()
        if int(context_windows) not in CONTEXT_WINDOWS:
            raise ValueError(f"context_windows is {context_windows!r}; expected one of {list(CONTEXT_WINDOWS)} "
                             "(train.backbones[].context_seconds / mels.window_seconds)")
        self.context_windows = int(context_windows)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"mels.normalization is {normalization!r}; expected one of {list(NORMALIZATIONS)}"
            )
        self.in_chans = in_chans
        self.normalization = normalization
        kwargs: dict[str, Any] = {}
        if checkpoint_path:
            if not Path(checkpoint_path).exists():
                raise FileNotFoundError(
                    f"backbone checkpoint {checkpoint_path!r} (train.backbones[].checkpoint) "
                    "does not exist: expected a local timm/PyTorch weights file"
                )
            kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(checkpoint_path)}
            pretrained = True
        self.backbone = timm.create_model(
            backbone,
            pretrained=pretrained,
            in_chans=in_chans,
            num_classes=0,
            global_pool="",
            drop_path_rate=drop_path_rate,
            **kwargs,
        )
        n_features = self.backbone.num_features
        self.head = AttentionHead(n_features, n_classes, dropout=drop_rate)

    @property
    def num_features(self) -> int:
        """Channels of the pooled features (`forward_with_features`)."""
        return int(self.backbone.num_features)

    def _features(self, mel_db: torch.Tensor) -> torch.Tensor:
        """Log-mel dB (B, 1, F, T) -> backbone features averaged over frequency (B, C, T')."""
        x = normalize_input(mel_db, self.normalization)
        if self.in_chans != 1:
            x = x.expand(-1, self.in_chans, -1, -1)
        features = self.backbone.forward_features(x)  # (B, C, F', T')
        return features.mean(dim=2)

    def forward_logits(self, mel_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel dB (B, 1, F, T) -> (clip logits (B, K), frame logits (B, K, T'))."""
        return self.head(self._features(mel_db))

    def forward_with_features(self, mel_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clip logits, frame logits, pooled features (B, C): the time average) for distillation."""
        features = self._features(mel_db)
        clip_logits, frame_logits = self.head(features)
        return clip_logits, frame_logits, features.mean(dim=-1)

    def forward(self, mel_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel dB -> (clip logits, frame logits)."""
        return self.forward_logits(mel_db)

    def forward_rows(self, mel_db: torch.Tensor) -> torch.Tensor:
        """Row windows (N, 1, F, T) -> row logits (N, K): how every caller predicts rows.

        One row per example when ``context_windows`` is 1 (the clip logits). Otherwise each
        run of ``context_windows`` = m consecutive rows (N must be a multiple of m, the rows of
        one recording in order: `runtime.features.chunk_positions` pads them) is joined along
        time into one (1, F, m T) example, the model's training input, and row j of the run
        gets the attention pooling over the j-th m-th of its frames
        (`AttentionHead.forward_segments`): the prediction spread back to the rows.
        """
        m = self.context_windows
        if m == 1:
            return self.forward_logits(mel_db)[0]
        segments = self.head.forward_segments(self._features(join_rows(mel_db, m)), m)
        return segments.reshape(-1, segments.shape[-1])


class InferenceWrapper(nn.Module):
    """The exported graph: log-mel dB row windows in, row probabilities out (`SEDModel.forward_rows`)."""

    def __init__(self, model: SEDModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel_db: torch.Tensor) -> torch.Tensor:
        """(N, 1, F, T) -> row probabilities (N, K); N a multiple of the model's ``context_windows``."""
        return torch.sigmoid(self.model.forward_rows(mel_db))


# SEDModel's keyword defaults: the one place a spec's missing keys are filled from
# (tests/test_defaults.py checks them against the config schema).
MODEL_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(SEDModel.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def build_model(spec: Mapping[str, Any]) -> SEDModel:
    """Build an `SEDModel` from a model spec (as stored in checkpoints); missing keys: `MODEL_DEFAULTS`."""
    return SEDModel(
        backbone=spec["backbone"],
        n_classes=int(spec["n_classes"]),
        in_chans=int(spec.get("in_chans", MODEL_DEFAULTS["in_chans"])),
        pretrained=bool(spec.get("pretrained", MODEL_DEFAULTS["pretrained"])),
        checkpoint_path=spec.get("checkpoint"),
        drop_rate=float(spec.get("drop_rate", MODEL_DEFAULTS["drop_rate"])),
        drop_path_rate=float(spec.get("drop_path_rate", MODEL_DEFAULTS["drop_path_rate"])),
        normalization=str(spec.get("normalization") or MODEL_DEFAULTS["normalization"]),
        context_windows=int(spec.get("context_windows", MODEL_DEFAULTS["context_windows"])),
    )


def init_backbone_from(model: SEDModel, path: str | os.PathLike) -> dict[str, Any]:
    """Load the backbone weights of a `save_checkpoint` file (the pretrain stage's ``best.pt``)
    into `model`; the head keeps its fresh initialisation (its classes differ).

    The checkpoint must hold the same backbone (name and in_chans); returns its spec.
    Raises ValueError naming the file otherwise.
    """
    payload = torch.load(path, map_location="cpu", weights_only=False)
    spec = dict(payload["spec"])
    mine = {"backbone": model.backbone.default_cfg.get("architecture"), "in_chans": model.in_chans}
    theirs = {"backbone": spec.get("backbone"), "in_chans": int(spec.get("in_chans", MODEL_DEFAULTS["in_chans"]))}
    if mine["in_chans"] != theirs["in_chans"] or (mine["backbone"] and mine["backbone"] != theirs["backbone"]):
        raise ValueError(
            f"pretrain checkpoint {path} holds backbone {theirs}, expected {mine}: "
            "the pretrain run of a train.backbones entry initialises that entry only"
        )
    prefix = "backbone."
    weights = {k[len(prefix):]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    model.backbone.load_state_dict(weights, strict=True)
    return spec


def save_checkpoint(path: str | os.PathLike, model: SEDModel, spec: Mapping[str, Any], **extra: Any) -> None:
    """Save weights plus the spec needed to rebuild the model, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"spec": dict(spec), "state_dict": model.state_dict(), **extra}, tmp)


def checkpoint_context(path: str | os.PathLike) -> int:
    """The ``context_windows`` of a `save_checkpoint` file's model (1 for checkpoints without it)."""
    # mmap: the spec without reading the weights (the export and the soup load them later)
    spec = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["spec"]
    return int(spec.get("context_windows", MODEL_DEFAULTS["context_windows"]))


def load_model(path: str | os.PathLike, map_location: str = "cpu") -> tuple[SEDModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by `save_checkpoint`; eval mode.

    Pretrained weights are never fetched here: the state dict carries them.
    """
    payload = torch.load(path, map_location=map_location, weights_only=False)
    spec = dict(payload["spec"])
    model = build_model({**spec, "pretrained": False, "checkpoint": None})
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload

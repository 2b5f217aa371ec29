"""A Perch-sized stand-in for Perch v2: its interface, front end and EfficientNet-B3 body, random weights.

`teacher_standin.build_perch_standin` builds a ~1 MB model with Perch v2's
interface for the tests; this one also has Perch v2's size, for speed
measurements (bench/bench_inference.py --teacher): one float32 input `inputs`
[batch, 160000] (5 s at 32 kHz), outputs `embedding` [batch, 1536] and `label`
[batch, 14795].

The network, as Perch 2.0 is described (the weights are not):

- front end as the competitors' `no_dft` ONNX conversion has it, with no DFT
  op: the STFT is a Conv1d whose fixed kernels are the Hann-windowed cos/sin
  rows of a 1024-point DFT over a 640-sample (20 ms) frame, stride 320 (10 ms),
  so 500 frames (or, `matmul_path`, the same numbers as framing by reshape +
  one MatMul); power = re^2 + im^2; a Slaney mel filterbank as a matmul
  (`birdclef.runtime.features.mel_filterbank`, 128 mels, 60-16000 Hz); log;
- timm `efficientnet_b3` (random init, `pretrained=False`, one input channel)
  on the [1, 128, 500] log-mel, average-pooled to its 1536 features ->
  `embedding`; a Linear(1536, 14795) -> `label` (logits).

Random weights give near-constant activations deep in the network unless the
BatchNorm statistics fit the data, so they are set from `windows` (real audio,
as bench_inference.build_models does for the students): running statistics
reset, momentum None (a plain average), one forward pass in train mode.

Keyword arguments scale it down for a fast test (same code, smaller backbone
or fewer mels); the interface stays Perch v2's.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import timm
import torch

from birdclef.runtime.features import mel_filterbank

PERCH_RATE = 32000
PERCH_WINDOW = 160000
PERCH_EMBEDDING_DIM = 1536
PERCH_CLASSES = 14795
FRONT_END = {"n_fft": 1024, "frame": 640, "hop": 320, "n_mels": 128, "fmin": 60, "fmax": 16000}
LOG_FLOOR = 1e-5
STFT_KINDS = ("conv", "matmul")


class ConvFrontEnd(torch.nn.Module):
    """Waveform [batch, samples] -> log-mel [batch, 1, n_mels, frames], the STFT without a DFT op.

    `stft`: "conv", a Conv1d (kernel = frame, stride = hop) whose kernels are
    the DFT rows; or "matmul", the same numbers as framing by reshape (the
    frame a whole number of hops) and one MatMul with the DFT matrix.
    """

    def __init__(self, n_fft: int, frame: int, hop: int, n_mels: int, fmin: float, fmax: float,
                 stft: str = "conv") -> None:
        super().__init__()
        if frame > n_fft or frame % hop:
            raise ValueError(f"front end: frame {frame} must be a multiple of hop {hop} and <= n_fft {n_fft}")
        if stft not in STFT_KINDS:
            raise ValueError(f"front end: stft {stft!r}, expected one of {STFT_KINDS}")
        self.kind, self.frame, self.hop = stft, frame, hop
        self.bins = n_fft // 2 + 1
        n = np.arange(frame)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / frame)  # periodic Hann
        angle = 2 * np.pi * np.outer(np.arange(self.bins), n) / n_fft  # frame zero-padded to n_fft
        kernels = np.concatenate([np.cos(angle), -np.sin(angle)]) * window  # [2 * bins, frame]
        # padding (frame - hop) / 2 on each side: samples / hop frames (500 for 5 s)
        self.stft = torch.nn.Conv1d(1, 2 * self.bins, frame, stride=hop, padding=(frame - hop) // 2, bias=False)
        with torch.no_grad():
            self.stft.weight.copy_(torch.from_numpy(kernels[:, None, :].astype(np.float32)))
        self.stft.weight.requires_grad_(False)
        settings = {"sample_rate": PERCH_RATE, "n_fft": n_fft, "n_mels": n_mels, "fmin": fmin, "fmax": fmax}
        self.register_buffer("filterbank", torch.from_numpy(mel_filterbank(settings)))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            spectrum = self.stft(inputs.unsqueeze(1))  # [batch, 2 * bins, frames]
            real, imag = spectrum[:, : self.bins], spectrum[:, self.bins :]
            mel = torch.matmul(self.filterbank, real * real + imag * imag)  # [batch, n_mels, frames]
        else:
            pad = self.stft.padding[0]
            hops = torch.nn.functional.pad(inputs, (pad, pad)).reshape(inputs.shape[0], -1, self.hop)
            parts = self.frame // self.hop
            count = hops.shape[1] - parts + 1
            frames = torch.cat([hops[:, k : k + count] for k in range(parts)], dim=2)  # [batch, frames, frame]
            spectrum = torch.matmul(frames, self.stft.weight[:, 0].t())  # [batch, frames, 2 * bins]
            real, imag = spectrum[..., : self.bins], spectrum[..., self.bins :]
            mel = torch.matmul(real * real + imag * imag, self.filterbank.t()).transpose(1, 2)
        return torch.log(torch.clamp(mel, min=LOG_FLOOR)).unsqueeze(1)


class PerchSizedStandIn(torch.nn.Module):
    """Front end -> timm EfficientNet (pooled features = `embedding`) -> Linear -> `label`."""

    def __init__(self, backbone: str, n_mels: int, embedding_dim: int, n_labels: int) -> None:
        super().__init__()
        self.frontend = ConvFrontEnd(**{**FRONT_END, "n_mels": n_mels})  # stft: switch with .kind
        self.backbone = timm.create_model(backbone, pretrained=False, in_chans=1, num_classes=0)
        if self.backbone.num_features != embedding_dim:
            raise ValueError(f"backbone {backbone!r}: {self.backbone.num_features} pooled features, "
                             f"expected the embedding's {embedding_dim}")
        self.label = torch.nn.Linear(embedding_dim, n_labels)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.backbone(self.frontend(inputs))
        return embedding, self.label(embedding)


def set_batchnorm_statistics(model: torch.nn.Module, windows: np.ndarray, batch: int = 8) -> None:
    """BatchNorm running statistics = the plain average of batch statistics over `windows`.

    The windows should span the audio's range of loudness: with random
    weights, statistics from a few quiet windows let louder ones blow up
    (embeddings of ~500 instead of ~1 after 16 windows of one soundscape).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = None  # cumulative average over the batches below
        norm.reset_running_stats()
    model.train()
    with torch.no_grad():
        for begin in range(0, len(windows), batch):
            model(torch.from_numpy(np.ascontiguousarray(windows[begin : begin + batch], np.float32)))
    model.eval()


def build_perch_sized_standin(
    path: str | os.PathLike,
    windows: np.ndarray,
    seed: int = 0,
    *,
    backbone: str = "efficientnet_b3",
    n_mels: int = FRONT_END["n_mels"],
    opset: int = 17,
    matmul_path: str | os.PathLike | None = None,
) -> PerchSizedStandIn:
    """Write the Perch-sized stand-in to `path` (ONNX, dynamic batch); return its torch module (eval).

    `windows`: float32 [n, 160000] audio windows (real audio: n >= 2; several
    soundscapes, loud and quiet) that the BatchNorm statistics are set from,
    in an order shuffled by `seed`. `backbone` (a timm EfficientNet with 1536
    pooled features) and `n_mels` scale the model (a fast test); the
    interface does not change. `path` has the Conv1d STFT; `matmul_path`, if
    given, gets the same model with the framing + MatMul STFT.
    """
    windows = np.asarray(windows, np.float32)
    if windows.ndim != 2 or windows.shape[1] != PERCH_WINDOW or len(windows) < 2:
        raise ValueError(f"windows: expected float32 [n >= 2, {PERCH_WINDOW}] audio, got shape {windows.shape}")
    torch.manual_seed(seed)
    model = PerchSizedStandIn(backbone, n_mels, PERCH_EMBEDDING_DIM, PERCH_CLASSES)
    set_batchnorm_statistics(model, windows[np.random.default_rng(seed).permutation(len(windows))])
    names = ["inputs", "embedding", "label"]
    for kind, target in (("matmul", matmul_path), ("conv", path)):
        if target is None:
            continue
        model.frontend.kind = kind
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(model, (torch.from_numpy(windows[:2]),), str(Path(target)), input_names=names[:1],
                              output_names=names[1:], dynamic_axes={name: {0: "batch"} for name in names},
                              opset_version=opset, dynamo=False)
    return model


def parameter_count(model: torch.nn.Module) -> int:
    """Weights of the module (the front end's fixed DFT kernels and filterbank not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

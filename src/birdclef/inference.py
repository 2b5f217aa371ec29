"""Soundscape inference with an exported OpenVINO bundle: the Kaggle-side code path.

Imports only numpy, pandas, soundfile (through `birdclef.audio`), openvino and
the package's torch-free `audio` and `features` modules, so it runs in a Kaggle
notebook without torch, timm or librosa: the mel filterbank comes from the
bundle's ``mel_filterbank.npy``.

A soundscape is decoded once (mono, resampled to the bundle's rate), cut into
consecutive windows (5 s in the competition), turned into log-mel windows with
`features.log_mel` (the function the mel cache uses), and every member runs on
that one batch. The ensemble's probability is the weighted mean of the members'
clip probabilities. Row ids are ``<file stem>_<end second>``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pandas as pd

from .audio import BadAudioError, read_audio
from .features import frames_for, log_mel, window_waves

logger = logging.getLogger("birdclef.inference")

DEFAULT_WINDOWS = 12  # a 60 s soundscape in 5 s windows: used for unreadable files
MAX_BATCH = 64
PRECISION_HINTS = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}


@dataclass
class Member:
    """One compiled ensemble member."""

    name: str
    weight: float
    ir: Path
    compiled: Any
    request: Any = field(repr=False)


@dataclass
class Bundle:
    """An exported ensemble ready to run: compiled members, classes, mel settings."""

    root: Path
    classes: list[str]
    window_seconds: float
    mel: dict[str, Any]
    filterbank: np.ndarray = field(repr=False)
    members: list[Member]
    precision: str
    precision_hint: str
    threads: int
    definition: dict[str, Any] = field(repr=False)

    @property
    def sample_rate(self) -> int:
        """Sample rate the models were trained at."""
        return int(self.mel["sample_rate"])

    @property
    def window_samples(self) -> int:
        """Samples in one window."""
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Mel frames in one window (313 for 5 s at 32 kHz, hop 512)."""
        return frames_for(self.window_samples, int(self.mel["hop_length"]))

    def predict(self, mels: np.ndarray) -> np.ndarray:
        """Ensemble clip probabilities (n_windows, n_classes) for log-mel windows.

        `mels` is (n_windows, 1, n_mels, frames) float32 log-mel dB; each member
        runs on the whole batch (in chunks of at most 64 windows) and the result
        is the weighted mean of the members' probabilities.
        """
        mels = np.ascontiguousarray(mels, dtype=np.float32)
        expected = (1, int(self.mel["n_mels"]), self.frames)
        if mels.ndim != 4 or mels.shape[1:] != expected:
            raise ValueError(
                f"mels must have shape (N, {', '.join(map(str, expected))}), got {mels.shape}"
            )
        total = sum(member.weight for member in self.members)
        out = np.zeros((len(mels), len(self.classes)), dtype=np.float64)
        for member in self.members:
            for begin in range(0, len(mels), MAX_BATCH):
                chunk = mels[begin : begin + MAX_BATCH]
                member.request.infer({0: chunk})
                probs = member.request.get_output_tensor(0).data
                out[begin : begin + len(chunk)] += probs * (member.weight / total)
        return out.astype(np.float32)


def load_bundle(
    bundle_dir: str | os.PathLike, threads: int = 2, precision_hint: str = "f32"
) -> Bundle:
    """Read ``bundle.json`` from `bundle_dir` and compile every member on the CPU.

    Each member is compiled with INFERENCE_NUM_THREADS=`threads`, the latency
    performance hint and INFERENCE_PRECISION_HINT=`precision_hint` ("f32" is
    the precision the export gate measured; "bf16" is faster on CPUs with bf16
    units but was not gated). IR paths in the bundle are relative to
    `bundle_dir`, so the bundle works from any working directory.
    """
    if precision_hint not in PRECISION_HINTS:
        raise ValueError(
            f"precision_hint must be one of {sorted(PRECISION_HINTS)}, got {precision_hint!r}"
        )
    root = Path(bundle_dir).resolve()
    definition = json.loads((root / "bundle.json").read_text())
    mel = dict(definition["mel"])
    filterbank = np.load(root / definition.get("mel_filterbank", "mel_filterbank.npy"))
    expected_fb = (int(mel["n_mels"]), int(mel["n_fft"]) // 2 + 1)
    if filterbank.shape != expected_fb:
        raise ValueError(
            f"{root}/mel_filterbank.npy has shape {filterbank.shape}, "
            f"expected {expected_fb} for the bundle's mel settings"
        )
    core = ov.Core()
    config = {
        ov.properties.inference_num_threads: int(threads),
        ov.properties.hint.inference_precision: PRECISION_HINTS[precision_hint],
        ov.properties.hint.performance_mode: ov.properties.hint.PerformanceMode.LATENCY,
    }
    classes = list(definition["classes"])
    window_samples = int(round(float(definition["window_seconds"]) * int(mel["sample_rate"])))
    expected_input = [1, int(mel["n_mels"]), frames_for(window_samples, int(mel["hop_length"]))]
    members = []
    for entry in definition["members"]:
        if float(entry.get("weight", 1.0)) == 0.0:
            logger.info("skipping member %r: weight 0", entry.get("name"))
            continue
        ir = root / entry["ir"]
        if Path(entry["ir"]).is_absolute() or not ir.exists():
            raise FileNotFoundError(
                f"member {entry.get('name')!r}: IR {entry['ir']!r} not found "
                f"relative to the bundle folder {root}"
            )
        compiled = core.compile_model(ir, "CPU", config)
        shape = compiled.inputs[0].get_partial_shape()
        dims = [dim.get_length() if dim.is_static else None for dim in shape]
        if len(dims) != 4 or dims[1:] != expected_input:
            raise ValueError(
                f"member {entry.get('name')!r} takes input {shape}, the bundle's mel settings "
                f"give (batch, {', '.join(map(str, expected_input))})"
            )
        n_out = compiled.outputs[0].get_partial_shape()[1]
        if n_out.is_static and n_out.get_length() != len(classes):
            raise ValueError(
                f"member {entry.get('name')!r} outputs {n_out.get_length()} classes, "
                f"the bundle lists {len(classes)}"
            )
        members.append(
            Member(
                name=str(entry.get("name", ir.parent.name)),
                weight=float(entry.get("weight", 1.0)),
                ir=ir,
                compiled=compiled,
                request=compiled.create_infer_request(),
            )
        )
    if not members or sum(member.weight for member in members) <= 0:
        raise ValueError(f"{root}/bundle.json has no members with positive weight")
    bundle = Bundle(
        root=root,
        classes=classes,
        window_seconds=float(definition["window_seconds"]),
        mel=mel,
        filterbank=filterbank.astype(np.float32),
        members=members,
        precision=str(definition.get("precision", "unknown")),
        precision_hint=precision_hint,
        threads=int(threads),
        definition=definition,
    )
    logger.info(
        "loaded bundle %s: %d members, %s IR, hint %s, %d threads",
        root,
        len(members),
        bundle.precision,
        precision_hint,
        threads,
    )
    return bundle


def _end_label(seconds: float) -> str:
    return str(int(round(seconds))) if abs(seconds - round(seconds)) < 1e-6 else f"{seconds:g}"


def soundscape_mels(
    path: str | os.PathLike, bundle: Bundle, default_windows: int = DEFAULT_WINDOWS
) -> tuple[np.ndarray, list[str]]:
    """Log-mel windows of one soundscape and their row ids.

    Decodes `path` (mono, resampled to the bundle's sample rate), cuts it into
    ceil(duration / window_seconds) windows (at least 1, the last one
    zero-padded; the count the soundscape mel cache uses) and computes `features.log_mel`
    per window. Returns ((n_windows, 1, n_mels, frames) float32, row ids
    ``"<stem>_<end second>"``, e.g. ``soundscape_1_5`` ... ``soundscape_1_60``).
    A corrupt or empty file is logged as a warning and gives `default_windows`
    windows of silence (12 = a 60 s soundscape), so the submission keeps its rows.
    """
    stem = Path(path).stem
    try:
        wave = read_audio(path, bundle.sample_rate)
        # the same count as the soundscape mel cache (mels.py), so row ids agree
        n_windows = max(1, math.ceil(wave.size / bundle.sample_rate / bundle.window_seconds - 1e-6))
    except BadAudioError as error:
        logger.warning("%s; predicting %d silent windows for it", error, default_windows)
        wave = np.zeros(0, dtype=np.float32)
        n_windows = int(default_windows)
    windows = window_waves(wave, bundle.sample_rate, bundle.window_seconds, n_windows)
    n_fft, hop = int(bundle.mel["n_fft"]), int(bundle.mel["hop_length"])
    top_db = bundle.mel.get("top_db", 80.0)
    mels = np.empty((n_windows, 1, int(bundle.mel["n_mels"]), bundle.frames), dtype=np.float32)
    for index, window in enumerate(windows):
        mels[index, 0] = log_mel(window, bundle.filterbank, n_fft, hop, top_db)
    row_ids = [f"{stem}_{_end_label((i + 1) * bundle.window_seconds)}" for i in range(n_windows)]
    return mels, row_ids


def predict_soundscapes(
    paths: Iterable[str | os.PathLike],
    bundle: Bundle,
    progress: bool = True,
    default_windows: int = DEFAULT_WINDOWS,
) -> pd.DataFrame:
    """Ensemble probabilities for every window of every soundscape in `paths`.

    Returns a DataFrame with ``row_id`` followed by one column per class (the
    bundle's class order), probabilities in [0, 1] as float32: the weighted
    mean over members. Decoding and log-mel of the next file overlap with the
    current file's inference (one helper thread). With `progress`, logs the
    rate and remaining time about every 5 % of the files.
    """
    paths: Sequence[str | os.PathLike] = list(paths)
    row_ids: list[str] = []
    blocks: list[np.ndarray] = []
    start = time.perf_counter()
    step = max(1, len(paths) // 20)
    windows = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(soundscape_mels, paths[0], bundle, default_windows) if paths else None
        for index in range(len(paths)):
            mels, ids = pending.result()
            if index + 1 < len(paths):
                pending = pool.submit(soundscape_mels, paths[index + 1], bundle, default_windows)
            blocks.append(bundle.predict(mels))
            row_ids.extend(ids)
            windows += len(ids)
            if progress and ((index + 1) % step == 0 or index + 1 == len(paths)):
                elapsed = time.perf_counter() - start
                rate = (index + 1) / elapsed
                logger.info(
                    "%d/%d soundscapes, %.2f files/s, %.1f windows/s, ~%.0f s left",
                    index + 1,
                    len(paths),
                    rate,
                    windows / elapsed,
                    (len(paths) - index - 1) / rate,
                )
    probs = np.concatenate(blocks) if blocks else np.zeros((0, len(bundle.classes)), np.float32)
    frame = pd.DataFrame(probs, columns=bundle.classes)
    frame.insert(0, "row_id", row_ids)
    return frame

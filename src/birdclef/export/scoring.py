"""Running IRs (compiled with INFERENCE_PRECISION_HINT=f32) and torch wrappers on windows, and their AUC."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from birdclef.common.io import read_json
from birdclef.common.metrics import macro_roc_auc
from birdclef.runtime.postprocess import combine_members, member_class_weights

INFERENCE_PRECISION_HINT = "f32"
EVAL_BATCH = 64  # a multiple of every context_windows (1, 2, 4): batches hold whole runs


def _compile(core, model_or_path, threads: int):
    config = {
        ov.properties.inference_num_threads: int(threads),
        ov.properties.hint.inference_precision: ov.Type.f32,
        ov.properties.hint.performance_mode: ov.properties.hint.PerformanceMode.LATENCY,
    }
    return core.compile_model(model_or_path, "CPU", config)


def _run_openvino(compiled, mels: np.ndarray) -> tuple[np.ndarray, float]:
    """Probabilities for `mels` in batches, and the throughput in windows per second."""
    request = compiled.create_infer_request()
    request.infer({0: mels[:EVAL_BATCH]})  # warm-up, not timed (whole runs of a context member's windows)
    outputs = []
    start = time.perf_counter()
    for begin in range(0, len(mels), EVAL_BATCH):
        request.infer({0: mels[begin : begin + EVAL_BATCH]})
        outputs.append(request.get_output_tensor(0).data.copy())
    seconds = time.perf_counter() - start
    return np.concatenate(outputs).astype(np.float32), len(mels) / max(seconds, 1e-9)


def _run_torch(wrapper, mels: np.ndarray) -> tuple[np.ndarray, float]:
    outputs = []
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(mels), EVAL_BATCH):
            outputs.append(wrapper(torch.from_numpy(mels[begin : begin + EVAL_BATCH])).numpy())
    seconds = time.perf_counter() - start
    return np.concatenate(outputs).astype(np.float32), len(mels) / max(seconds, 1e-9)


def _weighted_mean(probabilities: list[np.ndarray], weights: list[float] | np.ndarray) -> np.ndarray:
    """The weighted mean of the members' probabilities: one weight per member, or per member and
    class (taxon specialists, `birdclef.runtime.postprocess.member_class_weights`)."""
    return combine_members(probabilities, weights, "mean")


def member_weights(ensemble: dict) -> np.ndarray:
    """The (n_members, n_classes) combining weights of an ensemble definition or bundle: the
    members' weights, taxon specialists (``specialist_classes``) replacing the others on their classes."""
    return member_class_weights([float(member.get("weight", 1.0)) for member in ensemble["members"]],
                                [member.get("specialist_classes") for member in ensemble["members"]],
                                ensemble["classes"])


def _auc(targets: np.ndarray, probabilities: np.ndarray) -> float | None:
    value = macro_roc_auc(targets, probabilities)
    return None if math.isnan(value) else round(float(value), 6)


def score_bundle_windows(
    bundle_dir: str | os.PathLike, mels: Sequence[np.ndarray], targets: np.ndarray, threads: int = 2,
    keep: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Macro ROC-AUC of the exported ensemble on windows `mels` (one array per mel group).

    Runs each member's f32 IR and the IR the bundle uses (OpenVINO,
    INFERENCE_PRECISION_HINT=f32), combines by the weighted mean (as the gate
    does) and scores against `targets`. Returns ``{"openvino_f32": auc,
    "openvino_<precision>": auc}``. With `keep` (a bool mask over the windows: padding runs
    for members that join windows) only the kept windows are scored; `targets` has their rows.
    """
    bundle_dir = Path(bundle_dir)
    bundle = read_json(bundle_dir / "bundle.json")
    core = ov.Core()
    runs = {"openvino_f32": "ir_f32", f"openvino_{bundle['precision']}": "ir"}
    weights = member_weights(bundle)
    scores: dict[str, float | None] = {}
    for name, key in runs.items():
        probabilities = []
        for member in bundle["members"]:
            compiled = _compile(core, bundle_dir / member[key], threads)
            probabilities.append(_run_openvino(compiled, mels[int(member["mel_group"])])[0])
        combined = _weighted_mean(probabilities, weights)
        scores[name] = _auc(targets, combined if keep is None else combined[keep])
    return scores

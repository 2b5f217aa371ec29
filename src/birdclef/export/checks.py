"""Checks of the export's inputs: options, the ensemble definition, window arrays, member checkpoints."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from birdclef.runtime.features import check_mel_groups, frames_per_second

PRECISIONS = ("f32", "fp16", "int8")
PRESETS = ("performance", "mixed")
GATE_ACTIONS = ("fail", "fp16", "warn")


def _check_options(precision: str, preset: str, on_gate_fail: str, eval_mels, eval_targets) -> None:
    """`export_ensemble`'s choices: known precision, preset and gate action; eval data both or neither."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if on_gate_fail not in GATE_ACTIONS:
        raise ValueError(f"on_gate_fail must be one of {GATE_ACTIONS}, got {on_gate_fail!r}")
    if (eval_mels is None) != (eval_targets is None):
        raise ValueError("eval_mels and eval_targets must be given together")


def _per_group(name: str, value: Any, n_groups: int) -> list[np.ndarray]:
    """`value` as one array per mel group: a list/tuple of `n_groups` arrays, or one array when `n_groups` is 1."""
    if isinstance(value, np.ndarray):
        if n_groups != 1:
            raise ValueError(
                f"{name} must be a list of {n_groups} arrays, one per mel group (ensemble "
                "mel_groups order); a single array is only accepted for one mel group"
            )
        return [value]
    values = list(value)
    if len(values) != n_groups:
        raise ValueError(
            f"{name} has {len(values)} arrays, expected {n_groups}: one per mel group "
            "(ensemble mel_groups order)"
        )
    return values


def _check_mels(name: str, mels: np.ndarray, n_mels: int, frames: int) -> np.ndarray:
    mels = np.asarray(mels)
    if mels.ndim != 4 or mels.shape[1:] != (1, n_mels, frames):
        raise ValueError(
            f"{name} must have shape (N, 1, {n_mels}, {frames}) (n_mels, window frames from "
            f"its mel group's settings), got {mels.shape}"
        )
    if mels.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one window")
    if not np.all(np.isfinite(mels)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(mels, dtype=np.float32)


def _check_group_windows(
    name: str, value: Any, n_mels: Sequence[int], frames: Sequence[int]
) -> list[np.ndarray]:
    """`value` (named `name`) as checked float32 windows, one array per mel group."""
    return [
        _check_mels(f"{name}[{g}]", mels, n_mels[g], frames[g])
        for g, mels in enumerate(_per_group(name, value, len(n_mels)))
    ]


def _check_eval(
    eval_mels: Any, eval_targets: Any, n_mels: Sequence[int], frames: Sequence[int], n_classes: int
) -> tuple[list[np.ndarray], np.ndarray, int]:
    """The gate's windows (one array per mel group, the same N in each) and (N, n_classes) targets."""
    eval_mels = _check_group_windows("eval_mels", eval_mels, n_mels, frames)
    n_eval = len(eval_mels[0])
    if any(len(mels) != n_eval for mels in eval_mels):
        raise ValueError(
            f"eval_mels have {[len(m) for m in eval_mels]} windows per mel group; every "
            "group needs the same windows (window i: one recording, one span of time)"
        )
    eval_targets = np.asarray(eval_targets)
    if eval_targets.shape != (n_eval, n_classes):
        raise ValueError(
            f"eval_targets must have shape ({n_eval}, {n_classes}), got {eval_targets.shape}"
        )
    return eval_mels, eval_targets, n_eval


def _check_ensemble(ensemble: Mapping[str, Any]) -> None:
    for key in ("classes", "window_seconds", "mel_groups", "members"):
        if key not in ensemble:
            hint = " (an ensemble.json from before mel groups: rerun the ensemble stage)" if (
                key == "mel_groups" and "mel" in ensemble) else ""
            raise ValueError(f"ensemble definition lacks {key!r}{hint}")
    if not ensemble["members"]:
        raise ValueError("ensemble definition has no members")
    check_mel_groups(ensemble["mel_groups"], ensemble["members"])
    weights = [float(member.get("weight", 1.0)) for member in ensemble["members"]]
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"member weights must be finite, >= 0 and not all 0, got {weights}")


def _check_member_classes(
    member: Mapping[str, Any], payload: Mapping[str, Any], classes: list[str]
) -> None:
    """The checkpoint's outputs (and class list, when it records one) must be the ensemble's."""
    n_classes = len(classes)
    spec_classes = int(payload["spec"]["n_classes"])
    if spec_classes != n_classes:
        raise ValueError(
            f"member {member['name']!r} ({member['checkpoint']}) has {spec_classes} "
            f"outputs but the ensemble lists {n_classes} classes"
        )
    if "classes" in payload and list(payload["classes"]) != classes:
        raise ValueError(
            f"member {member['name']!r} was trained on a different class list or "
            "order than the ensemble's"
        )


def _check_member_windows(member: Mapping[str, Any], payload: Mapping[str, Any],
                          group: Mapping[str, Any], frames: int) -> None:
    """The checkpoint's training windows (when it records them) must match its mel group's."""
    where = f"member {member['name']!r} ({member['checkpoint']}), mel_group {member['mel_group']}"
    trained = payload.get("window_frames")
    if trained is not None and int(trained) != frames:
        raise ValueError(
            f"{where}: trained on {int(trained)}-frame windows, but its mel group "
            f"{group.get('tag', '')!r} gives {frames}-frame windows"
        )
    per_second = payload.get("frames_per_second")
    expected = frames_per_second(group)
    if per_second is not None and not math.isclose(float(per_second), expected, rel_tol=1e-6):
        raise ValueError(
            f"{where}: trained at {float(per_second):g} frames per second, but its mel group "
            f"{group.get('tag', '')!r} (sample_rate / hop_length) gives {expected:g}"
        )

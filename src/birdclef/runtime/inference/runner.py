"""Asynchronous inference of a bundle's ensemble model: batches of windows through its infer requests.

`_Runner` sends batches (one array per mel group, and the teacher's audio
windows when the teacher is compiled into the model) to the bundle's
``ov.AsyncInferQueue`` without waiting; `_Job` is one batch on its way, and
when its request is done it reduces the (n_members, rows, n_classes) output
to one array per file of the batch (TTA views averaged; members combined by
weighted mean, or kept for the rank combine) and splits the teacher's
(teacher rows, n_classes) output per file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Windows per infer call: one one-minute soundscape (compare other sizes with
# bench/bench_inference.py --batch-windows N).
BATCH_WINDOWS = 12


class _Job:
    """One batch of windows on its way through the ensemble model.

    `segments` are (first row, windows) of the files in the batch, each with
    `views` TTA views of its windows (view-major). When the request is done,
    `parts` holds one array per segment, the views averaged: the weighted mean
    over members (n_windows, n_classes), or with `keep_members` every member's
    probabilities (n_members, n_windows, n_classes). With `teacher_segments`
    ((first row, windows) per file in the teacher's input), `teacher_parts`
    holds each file's (n_windows, n_classes) teacher probabilities.
    """

    def __init__(
        self,
        batch: list[np.ndarray],
        segments: Sequence[tuple[int, int]],
        views: int,
        weights: np.ndarray,
        keep_members: bool,
        teacher_segments: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.batch = batch  # one array per input, kept alive: the request reads them in place
        self.segments = list(segments)
        self.views = views
        self.weights = weights
        self.keep_members = keep_members
        self.teacher_segments = None if teacher_segments is None else list(teacher_segments)
        self.parts: list[np.ndarray] | None = None
        self.teacher_parts: list[np.ndarray] | None = None

    def finish(self, output: np.ndarray, teacher: np.ndarray | None = None) -> None:
        """Reduce the request's (n_members, rows, n_classes) output (and split the teacher's
        (teacher rows, n_classes) output); they are only valid during the call."""
        views = self.views
        if self.keep_members:
            n_members, n_classes = output.shape[0], output.shape[2]
            self.parts = [
                output[:, first : first + views * n].reshape(n_members, views, n, n_classes).mean(axis=1)
                for first, n in self.segments
            ]
        else:
            mean = np.einsum("mc,mnc->nc", self.weights, output).astype(np.float32)  # per-class weights
            self.parts = [
                mean[first : first + views * n].reshape(views, n, -1).mean(axis=0)
                for first, n in self.segments
            ]
        if self.teacher_segments is not None:
            self.teacher_parts = [np.array(teacher[first : first + n], dtype=np.float32)
                                  for first, n in self.teacher_segments]
        self.batch = None


class _Runner:
    """Asynchronous inference of the ensemble model through the bundle's infer requests.

    `bundle` is a loaded `birdclef.runtime.inference.bundle.Bundle` (not
    imported here: that module imports this one); the runner uses its
    `weights` and `requests` (or the `requests` given: `Bundle.student_requests`
    for students-only calls). With `teacher` (the teacher compiled into the
    model) every batch also carries the teacher's audio windows.
    """

    def __init__(self, bundle: Any, keep_members: bool, requests: Any = None, teacher: bool = False) -> None:
        self.bundle = bundle
        self.keep_members = keep_members
        self.weights = bundle.weights
        self.requests = bundle.requests if requests is None else requests
        self.teacher = teacher
        self.errors: list[BaseException] = []
        self.requests.set_callback(self._done)

    def _done(self, request, job: _Job) -> None:
        try:
            teacher = request.get_output_tensor(1).data if job.teacher_segments is not None else None
            job.finish(request.get_output_tensor(0).data, teacher)
        except BaseException as error:  # noqa: BLE001 - re-raised by wait()
            self.errors.append(error)

    def submit(
        self,
        batch: Sequence[np.ndarray],
        segments: Sequence[tuple[int, int]] | None = None,
        views: int = 1,
        teacher_audio: np.ndarray | None = None,
        teacher_segments: Sequence[tuple[int, int]] | None = None,
    ) -> _Job:
        """Start the ensemble on `batch`; returns the pending job.

        `batch` holds one (N, 1, n_mels, frames) array per mel group (the same
        N windows in every group; the caller checks the shapes). `segments`
        ((first row, windows) per file, default: the whole batch as one) and
        `views` say how `_Job.finish` splits and reduces the rows. A runner
        with `teacher` needs `teacher_audio` (N_t, window samples), the
        teacher input's last position, and `teacher_segments` ((first row,
        windows) per file of it). Blocks while every infer request is busy.
        """
        if self.errors:
            raise RuntimeError("OpenVINO inference failed") from self.errors[0]
        if self.teacher != (teacher_audio is not None) or (teacher_audio is None) != (teacher_segments is None):
            raise ValueError("a runner of a compiled teacher takes teacher_audio and teacher_segments with "
                             "every batch, and only such a runner does")
        batch = [np.ascontiguousarray(group, dtype=np.float32) for group in batch]
        segments = [(0, len(batch[0]))] if segments is None else segments
        if teacher_audio is not None:
            batch.append(np.ascontiguousarray(teacher_audio, dtype=np.float32))
        job = _Job(batch, segments, views, self.weights, self.keep_members, teacher_segments)
        self.requests.start_async(dict(enumerate(batch)), job, share_inputs=True)
        return job

    def wait(self) -> None:
        """Block until every submitted job is done; raise the first inference error."""
        self.requests.wait_all()
        if self.errors:
            raise RuntimeError("OpenVINO inference failed") from self.errors[0]

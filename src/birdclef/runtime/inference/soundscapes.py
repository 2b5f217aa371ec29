"""Ensemble probabilities for whole soundscapes (`predict_soundscapes`): the submission's predictions.

A soundscape is decoded once per distinct sample rate of the groups (once in
the usual case; `audio.decode_audio`: mono, resampled to that rate), cut into
consecutive windows (5 s in the competition), and turned into each group's
log-mel windows with `features.log_mel` (the function the mel cache uses);
every member then runs on its group's windows. Members are combined as the
bundle definition's ``combine`` says (weighted mean of probabilities, or of
per-class ranks over the run), followed by its per-soundscape post-processing
(``postprocess``: TTA shifts, smoothing, power adjustment; see
`birdclef.runtime.postprocess`). With a teacher in the bundle
(`birdclef.runtime.inference.teacher`) the students' combined probabilities
are first rank-blended with the teacher's over the run
(`birdclef.runtime.postprocess.blend_teacher`): a teacher compiled into the
ensemble model (an ONNX Perch's IR) runs in the same infer request as the
students, on each file's unshifted windows at 32 kHz (the students' decode
when a mel group reads 32 kHz); a teacher on another runtime (LiteRT) runs in
this thread while the students' requests run. Row ids are ``<file stem>_<end second>``; a file
gets ceil(duration / 5 s) rows (12 for one minute, 4 for 20 s, 13 for 62 s),
and a file that cannot be decoded gets its rows with every probability 0
(listed in the frame's ``attrs["undecodable"]``).

How it is fast (`predict_soundscapes`): decode + log-mel run in a pool of
worker threads (numpy, libsndfile and OpenVINO release the GIL), several files
ahead of the model; whole soundscapes go into infer calls of at least
`BATCH_WINDOWS` rows (by default one one-minute soundscape per call). All
members are wired into one OpenVINO model
(`birdclef.runtime.inference.ensemble.ensemble_model`: one input per
mel group, each member on its group's input) and compiled once with the
THROUGHPUT hint, one thread per stream, two infer requests per stream: one
request runs every member (of every group) on a batch, each stream
works on its own core, and a stream that finishes a batch starts the next
queued one without waiting for Python. (With one compiled model per member,
OpenVINO pins stream k of every compiled model to core k while it runs: two
requests of two different members both went to their model's first free
stream, so ~80 % of the time both ran on the same core and the other idled;
10 members kept the cores only ~60 % busy.) The log-mel's BLAS call is held
to one thread while this runs (`features.blas_threads`, threadpoolctl):
multi-threaded BLAS inside parallel workers made it 3-4x slower.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.runtime.features import blas_threads
from birdclef.runtime.inference.bundle import Bundle
from birdclef.runtime.inference.runner import BATCH_WINDOWS, _Job, _Runner
from birdclef.runtime.inference.windows import iter_soundscape_windows
from birdclef.runtime.postprocess import (
    POSTPROCESS_DEFAULTS,
    blend_teacher,
    combine_members,
    pool_sonotypes,
    postprocess_soundscape,
)

logger = logging.getLogger(__name__)


def predict_soundscapes(
    paths: Iterable[str | os.PathLike],
    bundle: Bundle,
    progress: bool = True,
    workers: int | None = None,
    batch_windows: int = BATCH_WINDOWS,
) -> pd.DataFrame:
    """Ensemble probabilities for every window of every soundscape in `paths`.

    Returns a DataFrame with ``row_id`` followed by one column per class (the
    bundle's class order), probabilities as float32, the files in `paths`
    order, each with `window_count` rows (ceil(duration / window_seconds):
    12 for a one-minute file; see `soundscape_windows` for short, long,
    stereo, resampled, silent and corrupt files). Each member's
    probabilities are averaged over the TTA views (``tta_shift_seconds``);
    the members are combined by the bundle's ``combine`` method: the weighted
    mean (accumulated per batch), or ``"rank"``: every member's probabilities
    are kept for all windows of the run and replaced by their per-class ranks
    over those windows before the weighted mean
    (`birdclef.runtime.postprocess.combine_members`), so a run's numbers depend on
    which files it predicts together. Then each soundscape is post-processed
    (`birdclef.runtime.postprocess.pool_sonotypes` with ``sonotype_max_pool``, then
    `birdclef.runtime.postprocess.postprocess_soundscape`: smoothing, then the power
    adjustment; skipped when both are off).

    With a teacher in the bundle (`Bundle.teacher`, from ``bundle.json``'s
    ``"teacher"``), each decoded file is also read at the teacher's rate and
    cut into the same windows (no TTA views); a teacher compiled into the
    ensemble model reads them in the same infer call as the students (input
    ``teacher_audio``, output ``teacher_probabilities``, split per file), any
    other runs in this thread (`TeacherBranch.probabilities`); before the post-processing the
    students' combined probabilities and the teacher's are rank-normalised per
    class over every decoded window of the run and blended with the teacher's
    weight; a class the teacher does not know keeps the students' ranks
    (`birdclef.runtime.postprocess.blend_teacher`).

    A file that cannot be decoded gets its rows (`soundscape_windows` says
    how many) with every probability exactly 0; it takes no part in the model
    run, the rank combine or the post-processing. The file names of such
    files are in ``frame.attrs["undecodable"]`` (a list, empty when all
    decoded).

    Decode + log-mel run in `workers` threads (default `bundle.threads`)
    ahead of the model. Files go whole into infer calls, in order: a call is
    sent once it holds at least `batch_windows` rows (a file's windows times
    its `Bundle.tta_views`), so it holds one or more whole files and can
    exceed `batch_windows` by less than one file's rows (with the default 12
    and 12-window files: one file per call, 36 rows with TTA); the last call
    takes what is left. With `progress`, logs the rate and remaining time
    about every 5 % of the files.
    """
    paths = list(paths)
    workers = bundle.threads if workers is None else max(1, int(workers))
    keep_members = bundle.combine != "mean"
    runner = _Runner(bundle, keep_members=keep_members, teacher=bundle.teacher_compiled)
    files = _run_files(paths, bundle, runner, workers, batch_windows, progress)
    per_file = _file_probabilities(files, bundle, keep_members)
    if bundle.teacher is not None:
        per_file = _blend_teacher(files, per_file, bundle)
    return _frame(paths, files, per_file, bundle)


@dataclass
class _File:
    """One soundscape of a `predict_soundscapes` run: its rows and where its predictions are."""

    row_ids: list[str]
    job: _Job | None = None  # None: undecodable (rows written as 0) or not yet submitted
    part: int = 0
    undecodable: bool = False
    teacher: np.ndarray | None = None  # the teacher's (n_windows, n_classes) probabilities, run beside


class _Batch:
    """Whole files' windows gathered for one infer call of `predict_soundscapes`."""

    def __init__(self, runner: _Runner, views: int) -> None:
        self.runner = runner
        self.views = views
        self.mels: list[list[np.ndarray]] = []  # per file: its windows of every mel group
        self.teacher: list[np.ndarray] = []  # per file: its teacher windows (a compiled teacher)
        self.rows = 0
        self.waiting: list[tuple[_File, int]] = []  # (file, first row in the batch)

    def add(self, file: _File, mels: list[np.ndarray], teacher: np.ndarray | None = None) -> None:
        self.waiting.append((file, self.rows))
        self.mels.append(mels)
        if teacher is not None:
            self.teacher.append(teacher)
        self.rows += len(mels[0])

    def flush(self) -> None:
        """Submit the gathered files (if any) as one job; each file learns its job and part."""
        if self.mels:  # a file's windows per view: its rows, or more (`SoundscapeWindows.mels`)
            segments = [(first, len(mels[0]) // self.views) for (_, first), mels in
                        zip(self.waiting, self.mels, strict=True)]
            mels = [np.concatenate(group) if len(group) > 1 else group[0] for group in zip(*self.mels, strict=True)]
            teacher, teacher_segments = None, None
            if self.teacher:
                teacher = np.concatenate(self.teacher) if len(self.teacher) > 1 else self.teacher[0]
                bounds = np.cumsum([0] + [len(windows) for windows in self.teacher])
                teacher_segments = [(int(bounds[i]), len(windows)) for i, windows in enumerate(self.teacher)]
            job = self.runner.submit(mels, segments, self.views, teacher, teacher_segments)
            for part, (file, _) in enumerate(self.waiting):
                file.job, file.part = job, part
        self.mels, self.teacher, self.rows, self.waiting = [], [], 0, []


def _run_files(
    paths: list[str | os.PathLike],
    bundle: Bundle,
    runner: _Runner,
    workers: int,
    batch_windows: int,
    progress: bool,
) -> list[_File]:
    """Every file of `paths` windowed (in `workers` threads) and sent to `runner`; all jobs done."""
    files: list[_File] = []
    batch = _Batch(runner, bundle.tta_views)
    start = time.perf_counter()
    step = max(1, len(paths) // 20)
    windows = 0
    with blas_threads(1, user_api="blas"):
        for index, item in enumerate(iter_soundscape_windows(paths, bundle, workers)):
            file = _File(item.row_ids, undecodable=item.error is not None)
            files.append(file)
            windows += len(item.row_ids)
            if not file.undecodable:
                batch.add(file, item.mels, bundle.teacher.teacher_audio(item.teacher) if bundle.teacher_compiled else None)
                if batch.rows >= batch_windows:
                    batch.flush()
                if bundle.teacher is not None and not bundle.teacher_compiled:  # while the requests run
                    file.teacher = bundle.teacher.probabilities(item.teacher)
            if progress and ((index + 1) % step == 0 or index + 1 == len(paths)):
                _log_progress(index + 1, len(paths), windows, start)
        batch.flush()
        runner.wait()
    return files


def _log_progress(done: int, total: int, windows: int, start: float) -> None:
    elapsed = max(time.perf_counter() - start, 1e-9)
    rate = done / elapsed
    logger.info(
        "%d/%d soundscapes, %.2f files/s, %.1f windows/s, ~%.0f s left",
        done,
        total,
        rate,
        windows / elapsed,
        (total - done) / rate,
    )


def _file_probabilities(files: list[_File], bundle: Bundle, keep_members: bool) -> list[np.ndarray]:
    """Each decoded file's (n_windows, n_classes) probabilities, the members combined."""
    decoded = [file for file in files if not file.undecodable]
    if keep_members and decoded:  # ranks over the decoded files' windows only
        members = np.concatenate([file.job.parts[file.part][:, : len(file.row_ids)] for file in decoded],
                                 axis=1)
        combined = combine_members(list(members), bundle.weights, bundle.combine)
        first = 0
        per_file = []
        for file in decoded:
            per_file.append(combined[first : first + len(file.row_ids)])
            first += len(file.row_ids)
    else:
        per_file = [file.job.parts[file.part][: len(file.row_ids)] for file in decoded]
    return per_file


def _blend_teacher(files: list[_File], per_file: list[np.ndarray], bundle: Bundle) -> list[np.ndarray]:
    """Each decoded file's students' probabilities rank-blended with the teacher's over the run."""
    decoded = [file for file in files if not file.undecodable]
    if not decoded:
        return per_file
    branch = bundle.teacher
    samples = int(round(bundle.window_seconds * branch.sample_rate))  # a window at the teacher's rate
    teacher = [file.teacher if file.teacher is not None
               else branch.window_probabilities(file.job.teacher_parts[file.part], samples) for file in decoded]
    blended = blend_teacher(np.concatenate(per_file), np.concatenate(teacher), branch.weight, branch.known)
    bounds = np.cumsum([0] + [len(file.row_ids) for file in decoded])
    return [blended[begin:end] for begin, end in zip(bounds[:-1], bounds[1:], strict=True)]


def _frame(
    paths: list[str | os.PathLike], files: list[_File], per_file: list[np.ndarray], bundle: Bundle
) -> pd.DataFrame:
    """The run's DataFrame: decoded files post-processed, undecodable ones 0 (and listed in attrs)."""
    n_classes = len(bundle.classes)
    postprocess = _postprocessing_on(bundle.postprocess)
    blocks = []
    results = iter(per_file)
    for file in files:
        if file.undecodable:
            blocks.append(np.zeros((len(file.row_ids), n_classes), np.float32))
            continue
        block = next(results)
        block = pool_sonotypes(block, bundle.classes, bundle.postprocess)
        blocks.append(postprocess_soundscape(block, bundle.postprocess) if postprocess else block)
    probs = np.concatenate(blocks) if blocks else np.zeros((0, n_classes), np.float32)
    frame = pd.DataFrame(probs.astype(np.float32, copy=False), columns=bundle.classes)
    frame.insert(0, "row_id", [row for file in files for row in file.row_ids])
    frame.attrs["undecodable"] = [
        Path(path).name for path, file in zip(paths, files, strict=True) if file.undecodable
    ]
    if frame.attrs["undecodable"]:
        logger.warning(
            "%d of %d soundscapes could not be decoded; their rows are 0: %s",
            len(frame.attrs["undecodable"]), len(paths), frame.attrs["undecodable"][:10],
        )
    return frame


def _postprocessing_on(settings: dict[str, Any]) -> bool:
    """Whether `settings` (``postprocess``) turn on smoothing or the power adjustment."""
    keys = ("smoothing", "power_adjust_top_k", "power_adjust_exponent")
    return any(settings.get(key, POSTPROCESS_DEFAULTS[key]) != POSTPROCESS_DEFAULTS[key] for key in keys)

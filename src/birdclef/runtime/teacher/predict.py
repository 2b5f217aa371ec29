"""The teacher alone (zero-shot): a submission-shaped table from its mapped logits.

One row per `window_seconds` window of every soundscape (files in name order,
``<stem>_<end second>``, as `birdclef.runtime.submission` writes them), one
column per taxonomy class: the sigmoid of the class's mapped logit, 0 for a class
the teacher does not know (`birdclef.runtime.teacher.mapping`). A file that cannot be
decoded keeps its rows, all 0 (its length from the header, else 12 windows), as
the submission does. This is the reference the students are measured against
and the teacher's branch of a blend.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.common.progress import progress_bar
from birdclef.runtime.audio import BadAudioError, audio_seconds
from birdclef.runtime.inference.windows import window_count
from birdclef.runtime.teacher.base import Teacher
from birdclef.runtime.teacher.mapping import mapped_logits, probabilities
from birdclef.runtime.teacher.windows import file_windows, window_outputs

log = logging.getLogger(__name__)

UNDECODABLE_WINDOWS = 12


def _undecodable_windows(path: str | os.PathLike, window_seconds: float) -> int:
    try:
        return window_count(audio_seconds(path), window_seconds)
    except BadAudioError:
        return UNDECODABLE_WINDOWS


def teacher_submission(
    paths: Sequence[str | os.PathLike],
    teacher: Teacher,
    mapping: pd.DataFrame,
    window_seconds: float = 5.0,
    progress: bool = True,
) -> pd.DataFrame:
    """The teacher's predictions of every window of `paths` (sorted by name): row_id, then one
    column per `mapping` class (taxonomy order). ``frame.attrs['undecodable']`` lists the
    files written as 0."""
    classes = mapping["primary_label"].astype(str).tolist()
    row_ids, blocks, undecodable = [], [], []
    for path in progress_bar(sorted(paths, key=lambda p: Path(p).name), desc="teacher", unit="file",
                             disable=not progress):
        stem = Path(path).stem
        try:
            windows = file_windows(path, teacher.sample_rate, window_seconds)
            _, logits = window_outputs(teacher, windows)
            block = probabilities(mapped_logits(logits, mapping))
        except BadAudioError as error:
            log.warning("teacher: %s cannot be decoded (%s): its rows are 0", path, error.reason)
            undecodable.append(Path(path).name)
            block = np.zeros((_undecodable_windows(path, window_seconds), len(classes)), np.float32)
        blocks.append(block)
        row_ids += [f"{stem}_{int(round((k + 1) * window_seconds))}" for k in range(len(block))]
    values = np.concatenate(blocks) if blocks else np.zeros((0, len(classes)), np.float32)
    frame = pd.concat([pd.DataFrame({"row_id": row_ids}), pd.DataFrame(values, columns=classes)], axis=1)
    frame.attrs["undecodable"] = undecodable
    return frame

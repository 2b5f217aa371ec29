"""Label contracts, in one place: list cells and the targets of recordings.

`parse_label_list` reads a train.csv list cell (``"['a', 'b']"``, empty, or a
list/array from parquet); `build_targets` gives a recording table's soft
targets (primary 1, secondary `secondary_weight`) and binary ones (what every
recording-level score is computed against); `targets_of` looks the binary
targets of some recordings up by file name. Catalog, training, the ensemble,
export and the report all use these. `PRETRAIN_ONLY_FOLD` is the fold of a
recording only the pretrain stage trains on (a species outside the main
taxonomy, or a `use: pretrain` data root). Torch-free.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from birdclef.common.errors import DataError

log = logging.getLogger(__name__)

# The folds table's fold of a pretrain-only recording: no fold trains or validates on it.
PRETRAIN_ONLY_FOLD = -2


def parse_label_list(value: object, where: str = "label list") -> list[str]:
    """A list cell such as "['a', 'b']" (or empty, or a list/array) as a list of str.

    Raises `DataError` naming `where` for text that is not a list of labels.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    text = str(value).strip()
    if text in ("", "[]", "['']"):
        return []
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise DataError(f"{where}: cannot parse {text!r}; expected a list like ['abc1', 'xyz2']") from error
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, (list, tuple)):
        raise DataError(f"{where}: expected a list of labels, got {text!r}")
    return [str(v) for v in parsed if str(v)]


def build_targets(
    index: pd.DataFrame, classes: Sequence[str], secondary_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Targets of each recording: (soft float32 (n, K), binary int8 (n, K)).

    Soft: primary = 1, each secondary = `secondary_weight`; binary: primary or
    secondary = 1 (what the OOF AUC is scored against). Labels outside `classes`
    are ignored (logged once).
    """
    position = {name: k for k, name in enumerate(classes)}
    soft = np.zeros((len(index), len(classes)), dtype=np.float32)
    binary = np.zeros((len(index), len(classes)), dtype=np.int8)
    unknown: set[str] = set()
    for row, (primary, secondary) in enumerate(
        zip(index["primary_label"].astype(str), index["secondary_labels"], strict=True)
    ):
        for label in parse_label_list(secondary, f"secondary_labels of row {row}"):
            k = position.get(label)
            if k is None:
                unknown.add(label)
                continue
            soft[row, k] = max(soft[row, k], secondary_weight)
            binary[row, k] = 1
        k = position.get(primary)
        if k is None:
            unknown.add(primary)
            continue
        soft[row, k] = 1.0
        binary[row, k] = 1
    if unknown:
        log.warning("%d labels are not in the class list and are ignored: %s",
                    len(unknown), sorted(unknown)[:10])
    return soft, binary


def targets_of(index: pd.DataFrame, filenames: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Binary float32 targets (primary and secondary labels) of `filenames`, rows of `index`."""
    rows = index.set_index("filename").loc[list(filenames)].reset_index()
    return build_targets(rows, classes, 1.0)[1].astype(np.float32)

"""A teacher's classes mapped onto the competition's taxonomy, by scientific name.

A teacher (BirdNET 2.4: 6,522 classes; Perch v2: 14,795) names its classes by
scientific name; `taxonomy.csv` gives each competition class one
(``scientific_name``). A class is ``matched`` when some teacher class has the
same binomial (genus and species, case and spacing ignored; subspecies and
trailing words dropped); with the genus fallback, a class with no species match
takes the teacher classes of its genus (``genus``, their maximum logit);
otherwise it is ``unmatched`` (insect sonotypes, species the teacher never
learned) and its mapped logit is NaN. The mapping table is written with the
teacher artifact and counted in its manifest and the report.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd

from birdclef.common.errors import DataError

log = logging.getLogger(__name__)

STATUSES = ("matched", "genus", "unmatched")
MAPPING_COLUMNS = ("primary_label", "scientific_name", "status", "teacher_indices", "teacher_names")


def binomial(name: str) -> str:
    """The lower-case ``genus species`` of a scientific name ('' when it has fewer than two words)."""
    words = re.sub(r"[^a-z\s-]", " ", str(name).lower()).split()
    return " ".join(words[:2]) if len(words) >= 2 else ""


def genus(name: str) -> str:
    """The lower-case genus of a scientific name ('' for an empty name)."""
    words = re.sub(r"[^a-z\s-]", " ", str(name).lower()).split()
    return words[0] if words else ""


def read_taxonomy_names(taxonomy_csv: str | os.PathLike) -> pd.DataFrame:
    """taxonomy.csv's primary_label and scientific_name columns (strings, file order)."""
    frame = pd.read_csv(taxonomy_csv, dtype=str, keep_default_na=False)
    missing = [c for c in ("primary_label", "scientific_name") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{taxonomy_csv}: no column {missing}: a teacher maps its classes by taxonomy.csv's "
            "scientific_name (expected the BirdCLEF columns primary_label, scientific_name, ...)"
        )
    return frame[["primary_label", "scientific_name"]].reset_index(drop=True)


def map_taxonomy(taxonomy: pd.DataFrame, teacher_names: Sequence[str], genus_fallback: bool) -> pd.DataFrame:
    """One row per taxonomy class: its status and the teacher class indices it takes.

    `taxonomy` has primary_label and scientific_name; `teacher_names` are the
    teacher's scientific names in logit order. Columns: `MAPPING_COLUMNS`
    (teacher_indices a list of ints, teacher_names the teacher's names for them).
    """
    by_binomial: dict[str, list[int]] = defaultdict(list)
    by_genus: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(teacher_names):
        if binomial(name):
            by_binomial[binomial(name)].append(index)
            by_genus[genus(name)].append(index)
    rows = []
    for label, name in zip(taxonomy["primary_label"], taxonomy["scientific_name"], strict=True):
        indices, status = by_binomial.get(binomial(name), []), "matched"
        if not indices and genus_fallback and genus(name):
            indices, status = by_genus.get(genus(name), []), "genus"
        if not indices:
            status = "unmatched"
        rows.append((str(label), str(name), status, list(indices), [str(teacher_names[i]) for i in indices]))
    return pd.DataFrame(rows, columns=list(MAPPING_COLUMNS))


def mapping_counts(mapping: pd.DataFrame) -> dict[str, int]:
    """How many taxonomy classes are matched, matched by genus and unmatched."""
    counts = mapping["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def mapped_logits(logits: np.ndarray, mapping: pd.DataFrame) -> np.ndarray:
    """(n, teacher classes) logits -> (n, taxonomy classes) float32: each class's maximum logit over
    its teacher classes; NaN for an unmatched class."""
    logits = np.asarray(logits, dtype=np.float32)
    out = np.full((logits.shape[0], len(mapping)), np.nan, dtype=np.float32)
    for k, indices in enumerate(mapping["teacher_indices"]):
        indices = list(indices)
        if indices:
            out[:, k] = logits[:, indices].max(axis=1)
    return out


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Sigmoid of mapped logits; an unmapped (NaN) class gets 0."""
    out = 1.0 / (1.0 + np.exp(-np.clip(np.nan_to_num(logits, nan=-np.inf), -60.0, 60.0)))
    return np.where(np.isnan(logits), 0.0, out).astype(np.float32)


def log_mapping(mapping: pd.DataFrame, where: str) -> dict[str, int]:
    """Log the mapping's counts (a warning when no class maps: logit distillation is then skipped)."""
    counts = mapping_counts(mapping)
    if counts["matched"] + counts["genus"] == 0:
        log.warning(
            "%s: no taxonomy class maps onto the teacher's classes by scientific name "
            "(%d classes): the teacher's logits are all NaN, logit distillation is skipped; "
            "its embeddings are still used", where, len(mapping),
        )
    else:
        log.info("%s: %d classes matched, %d by genus, %d unmatched", where, counts["matched"],
                 counts["genus"], counts["unmatched"])
    return counts

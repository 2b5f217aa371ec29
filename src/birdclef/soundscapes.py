"""Soundscape data contracts: file-name metadata and the labelled train soundscapes.

BirdCLEF+ 2026 names soundscapes ``BC2026_(Train|Test)_<n>_<site>_<YYYYMMDD>_<HHMMSS>``
(`parse_soundscape_name`); 2025 names are anonymous and carry no metadata.
It also ships ``train_soundscapes_labels.csv`` (``filename, start, end,
primary_label``; times ``HH:MM:SS``; several labels joined by ``;``; every row
twice). `read_soundscape_labels` reads, de-duplicates (union of labels per
window) and validates it; `label_windows` turns it into one 0/1 row per 5 s
window of every labelled soundscape (windows absent from the file are windows
without a call: all zeros) and `site_split` deals the labelled soundscapes into
``train`` and ``validation`` by site (a site's soundscapes never straddle the
split; soundscapes without a site code are their own group).

Torch-free: pandas, numpy and the standard library only.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.catalog import read_taxonomy
from birdclef.common.errors import DataError
from birdclef.common.io import write_parquet
from birdclef.common.manifest import StageManifest
from birdclef.common.metrics import macro_roc_auc

log = logging.getLogger(__name__)

SOUNDSCAPE_NAME = re.compile(
    r"^BC(?P<year>\d{4})_(?P<split>Train|Test)_(?P<number>\d+)_(?P<site>S\d+)_"
    r"(?P<date>\d{8})_(?P<time>\d{6})$"
)
LABEL_COLUMNS = ("filename", "start", "end", "primary_label")
LABEL_SEPARATOR = ";"
SPLITS = ("train", "validation")
METADATA_COLUMNS = ("site", "date", "hour")


def parse_soundscape_name(stem: str) -> dict[str, Any] | None:
    """Site, date and hour of a 2026-style soundscape stem (or file name), or None for other names.

    ``BC2026_Train_0001_S05_20250227_010002`` -> ``{"site": "S05", "date":
    "2025-02-27", "hour": 1}``; an anonymous 2025 name (``H02_20230420_074000``
    has no ``BC`` prefix) or a date that does not exist gives None.
    """
    match = SOUNDSCAPE_NAME.match(Path(str(stem)).stem)  # a file name works too
    if match is None:
        return None
    try:
        day = pd.Timestamp(match["date"])
    except ValueError:
        return None
    hour = int(match["time"][:2])
    if hour > 23:
        return None
    return {"site": match["site"], "date": day.strftime("%Y-%m-%d"), "hour": hour}


def soundscape_metadata(stems: Iterable[str]) -> pd.DataFrame:
    """One row per stem: ``site`` (str or None), ``date`` (str or None), ``hour`` (Int64)."""
    rows = [parse_soundscape_name(stem) or {} for stem in stems]
    frame = pd.DataFrame({
        "site": pd.Series([row.get("site") for row in rows], dtype="string"),
        "date": pd.Series([row.get("date") for row in rows], dtype="string"),
        "hour": pd.Series([row.get("hour") for row in rows], dtype="Int64"),
    })
    return frame


def parse_time(value: object, where: str) -> float:
    """Seconds from ``HH:MM:SS`` (or ``MM:SS``, or a plain number of seconds)."""
    text = str(value).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) > 3 or any(p < 0 for p in parts) or any(p >= 60 for p in parts[1:]):
                raise ValueError(text)
            seconds = 0.0
            for part in parts:
                seconds = seconds * 60 + part
            return seconds
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not np.isfinite(seconds) or seconds < 0:
        raise DataError(f"{where}: cannot read time {text!r}; expected HH:MM:SS such as 00:00:05")
    return seconds


def split_labels(value: object) -> list[str]:
    """The labels of a ``;``-separated cell (empty cell: none), each stripped."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [part.strip() for part in str(value).split(LABEL_SEPARATOR) if part.strip()]


def read_soundscape_labels(
    labels_csv: str | os.PathLike,
    classes: Sequence[str],
    soundscape_stems: Iterable[str],
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The labelled windows of ``train_soundscapes_labels.csv``, de-duplicated and checked.

    Returns (frame, stats). The frame has one row per (soundscape, start, end):
    ``soundscape`` (file stem), ``start_s``, ``end_s``, ``row_id``
    (``<stem>_<end second>``) and ``labels`` (the union of the labels of every
    copy of that window, sorted). Raises `DataError` naming the file and row
    (1-based line number) for a missing column, a time that is not
    ``HH:MM:SS``, ``end`` not after ``start``, a label not in `classes`
    (taxonomy.csv) or a file not among `soundscape_stems` (train_soundscapes/).
    """
    path = Path(labels_csv)
    if not path.is_file():
        raise DataError(f"{path}: file not found (soundscape_labels.file); expected the BirdCLEF+ "
                        "2026 train_soundscapes_labels.csv, or set soundscape_labels.file: null")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({error})") from error
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(LABEL_COLUMNS)} "
                        f"(found {list(frame.columns)})")
    known = set(map(str, classes))
    stems = set(map(str, soundscape_stems))
    windows: dict[tuple[str, float, float], set[str]] = {}
    for row, record in enumerate(frame[list(LABEL_COLUMNS)].itertuples(index=False), start=2):
        where = f"{path} row {row}"
        stem = Path(str(record.filename).strip()).stem
        if stem not in stems:
            raise DataError(f"{where}: file {record.filename!r} is not in train_soundscapes/ "
                            f"({len(stems)} soundscapes there); expected a train soundscape's file name")
        start = parse_time(record.start, f"{where} column start")
        end = parse_time(record.end, f"{where} column end")
        if end <= start:
            raise DataError(f"{where}: end {record.end!r} is not after start {record.start!r}; "
                            "expected a window such as 00:00:00 - 00:00:05")
        labels = split_labels(record.primary_label)
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise DataError(f"{where}: label {unknown[0]!r} is not in taxonomy.csv; expected "
                            "taxonomy primary_label values joined by ';'")
        windows.setdefault((stem, start, end), set()).update(labels)
    rows = [
        {"soundscape": stem, "start_s": start, "end_s": end, "row_id": f"{stem}_{_second(end)}",
         "labels": sorted(labels)}
        for (stem, start, end), labels in sorted(windows.items())
    ]
    out = pd.DataFrame(rows, columns=["soundscape", "start_s", "end_s", "row_id", "labels"])
    stats = {"rows": int(len(frame)), "windows": int(len(out)),
             "duplicate_rows": int(len(frame) - len(out)),
             "soundscapes": int(out["soundscape"].nunique())}
    return out, stats


def _second(seconds: float) -> str:
    return str(int(round(seconds))) if abs(seconds - round(seconds)) < 1e-6 else f"{seconds:g}"


def soundscape_group(stem: str) -> str:
    """The group a soundscape is held out with: its site code, or its own stem when it has none."""
    return (parse_soundscape_name(stem) or {}).get("site") or str(stem)


def site_split(
    soundscapes: Sequence[str],
    validation_share: float,
    validation_sites: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """``train`` or ``validation`` for each labelled soundscape, held out by site.

    The group of a soundscape is its site code (`parse_soundscape_name`); a name
    without one is its own group. `validation_sites` (site codes or stems)
    names the held-out groups; otherwise ``round(validation_share x groups)``
    groups are drawn with `seed` (at least one, and at least one left for
    training when there are two or more and the share is below 1).
    """
    if not 0.0 <= float(validation_share) <= 1.0:
        raise ValueError(f"soundscape_labels.validation_share {validation_share} must lie in [0, 1]")
    groups = {stem: soundscape_group(stem) for stem in soundscapes}
    names = sorted(set(groups.values()))
    if validation_sites is not None:
        unknown = sorted(set(validation_sites) - set(names))
        if unknown:
            raise ValueError(f"soundscape_labels.validation_sites names {unknown}, which label no "
                             f"soundscape; labelled sites: {names}")
        held = set(validation_sites)
    else:
        count = int(round(float(validation_share) * len(names)))
        if validation_share > 0 and names:
            count = max(1, count)
        if validation_share < 1 and len(names) >= 2:
            count = min(count, len(names) - 1)
        order = np.random.default_rng(int(seed)).permutation(len(names))
        held = {names[i] for i in order[:count]}
    return {stem: ("validation" if group in held else "train") for stem, group in groups.items()}


def label_windows(
    labels: pd.DataFrame,
    soundscape_index: pd.DataFrame,
    classes: Sequence[str],
    split: Mapping[str, str],
) -> pd.DataFrame:
    """0/1 targets of every window of every labelled soundscape, with its split and site.

    `soundscape_index` is a soundscape mel cache index (row_id, soundscape,
    end_s); every window of a soundscape that `labels` names is a labelled
    window, positive for the labels of the file's row with the same end
    second and negative for every class when the file has no row (no call).
    Returns row_id, soundscape, end_s, split, site, then one column per class
    (float32). A labelled window that the cache does not hold (a time past the
    file's end) raises `DataError`.
    """
    classes = [str(c) for c in classes]
    labelled = sorted(set(labels["soundscape"]))
    windows = soundscape_index[soundscape_index["soundscape"].astype(str).isin(labelled)]
    windows = windows[["row_id", "soundscape", "end_s"]].reset_index(drop=True)
    outside = ~labels["row_id"].isin(set(windows["row_id"].astype(str)))
    if outside.any():
        first = labels[outside].iloc[0]
        raise DataError(f"train_soundscapes_labels.csv: window {first['start_s']:g}-{first['end_s']:g} s "
                        f"of {first['soundscape']!r} lies outside the soundscape's audio "
                        f"({int(outside.sum())} windows like this); expected 5 s windows inside the file")
    position = {label: k for k, label in enumerate(classes)}
    targets = np.zeros((len(windows), len(classes)), dtype=np.float32)
    row_of = pd.Series(np.arange(len(windows)), index=windows["row_id"].astype(str))
    for row_id, names in zip(labels["row_id"], labels["labels"], strict=True):
        for name in names:
            targets[row_of[row_id], position[name]] = 1.0
    out = windows.copy()
    out["split"] = out["soundscape"].astype(str).map(split).fillna("train")
    out["site"] = soundscape_metadata(out["soundscape"].astype(str))["site"].to_numpy()
    return pd.concat([out, pd.DataFrame(targets, columns=classes)], axis=1)


def window_positions(soundscape_index: pd.DataFrame, row_ids: Iterable[str], where: str) -> np.ndarray:
    """Rows of a soundscape cache index (row_id, ...) holding the windows `row_ids`, in order.

    Raises ValueError naming `where` (the cache) and a window it lacks.
    """
    row_ids = pd.Series(list(row_ids), dtype=str)
    position = pd.Series(np.arange(len(soundscape_index)), index=soundscape_index["row_id"].astype(str))
    missing = ~row_ids.isin(position.index)
    if missing.any():
        raise ValueError(f"{where}: {int(missing.sum())} soundscape windows are not in this cache, "
                         f"e.g. {row_ids[missing].iloc[0]!r}")
    return position.loc[row_ids].to_numpy()


def validation_windows(labelled: pd.DataFrame | None) -> pd.DataFrame:
    """The held-out (``split == "validation"``) rows of a labelled-windows table (empty if None)."""
    if labelled is None:
        return pd.DataFrame(columns=["row_id"])
    return labelled[labelled["split"] == "validation"].reset_index(drop=True)


def soundscape_score(predictions: pd.DataFrame, labelled: pd.DataFrame | None,
                     classes: Sequence[str]) -> tuple[float | None, int]:
    """Macro ROC-AUC of `predictions` (row_id + classes) on the held-out labelled windows.

    Returns (score or None when nothing can be scored, windows scored). Windows
    the predictions lack are left out.
    """
    held = validation_windows(labelled)
    if held.empty:
        return None, 0
    frame = predictions.assign(row_id=predictions["row_id"].astype(str))
    by_row = frame.drop_duplicates("row_id").set_index("row_id")
    rows = held["row_id"].astype(str)
    rows = rows[rows.isin(by_row.index)]
    if rows.empty:
        return None, 0
    truth = held.set_index("row_id").loc[rows, list(classes)].to_numpy()
    score = macro_roc_auc(truth, by_row.loc[rows, list(classes)].to_numpy(dtype=np.float64))
    return (None if not np.isfinite(score) else float(score)), int(len(rows))


def soundscape_labels_stage(
    labels_csv: str,
    taxonomy_csv: str,
    soundscape_index_path: str,
    out_labels: str,
    out_manifest: str,
    settings: Mapping[str, Any],
    tag: str,
    upstream: Mapping[str, Any],
) -> dict[str, Any]:
    """The soundscape_labels stage: labelled windows with their train/validation split."""
    manifest = StageManifest("soundscape_labels", tag, settings, upstream, [labels_csv, taxonomy_csv])
    classes = read_taxonomy(taxonomy_csv)
    index = pd.read_parquet(soundscape_index_path)
    labels, stats = read_soundscape_labels(labels_csv, classes, index["soundscape"].astype(str).unique())
    split = site_split(sorted(set(labels["soundscape"])), float(settings["validation_share"]),
                       settings.get("validation_sites"), int(settings["seed"]))
    table = label_windows(labels, index, classes, split)
    write_parquet(out_labels, table)
    held = table["split"] == "validation"
    positives = table[classes].to_numpy() > 0
    stats.update({
        "labelled_windows": int(len(table)),
        "windows_without_call": int((~positives.any(axis=1)).sum()),
        "train_windows": int((~held).sum()),
        "validation_windows": int(held.sum()),
        "validation_soundscapes": sorted(s for s, v in split.items() if v == "validation"),
        "validation_groups": sorted({soundscape_group(s) for s, v in split.items() if v == "validation"}),
        "validation_classes_with_positives": int(positives[held.to_numpy()].any(axis=0).sum()),
        "classes_with_positives": int(positives.any(axis=0).sum()),
    })
    manifest.headline.update(stats)
    manifest.write(out_manifest)
    log.info("soundscape labels: %d windows of %d soundscapes (%d duplicate rows merged); "
             "%d validation windows (%s), %d for training", len(table), stats["soundscapes"],
             stats["duplicate_rows"], stats["validation_windows"],
             ", ".join(stats["validation_groups"]), stats["train_windows"])
    return stats

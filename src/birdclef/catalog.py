"""Catalog: one table of every labelled recording, in train.csv's schema.

Reads the competition's `train.csv` (and, when the xeno-canto stage is on, its
extra rows; and the train.csv of every `data.extra_roots` folder, its labels
mapped onto the main taxonomy by scientific name: `birdclef.data_roots`), checks
them against `taxonomy.csv` and the audio folder, and writes `catalog.parquet`
with a resolved `path` and the duration of each recording. `pretrain_only` marks
the recordings that only the `pretrain` stage trains on (species outside the
main taxonomy, and every recording of a `use: pretrain` root); `source_label`
is the primary_label as the recording's own root wrote it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.errors import DataError
from birdclef.common.io import write_parquet
from birdclef.common.labels import parse_label_list
from birdclef.common.manifest import StageManifest
from birdclef.data_roots import (
    LabelMapping,
    check_extra_roots,
    label_mapping,
    normalize_scientific_name,
)
from birdclef.runtime.audio import BadAudioError, audio_seconds

log = logging.getLogger(__name__)

TRAIN_COLUMNS = (
    "primary_label",
    "secondary_labels",
    "type",
    "filename",
    "collection",
    "rating",
    "url",
    "latitude",
    "longitude",
    "scientific_name",
    "common_name",
    "author",
    "license",
)
REQUIRED_TRAIN_COLUMNS = ("primary_label", "secondary_labels", "filename")
REQUIRED_TAXONOMY_COLUMNS = ("primary_label",)
# Labels are strings everywhere: 2026 has numeric iNaturalist ids (1139490) and
# sonotypes (47158son01) beside eBird codes; pandas would read the first as int.
LABEL_DTYPES = {"primary_label": str, "secondary_labels": str, "filename": str, "inat_taxon_id": str}


def read_taxonomy(taxonomy_csv: str | os.PathLike) -> list[str]:
    """The class list (taxonomy.csv's primary_label column, file order)."""
    frame = _read_csv(taxonomy_csv, dtype=LABEL_DTYPES)
    _require_columns(frame, REQUIRED_TAXONOMY_COLUMNS, taxonomy_csv, "taxonomy.csv")
    labels = frame["primary_label"].astype(str).tolist()
    duplicated = sorted({x for x in labels if labels.count(x) > 1})
    if duplicated:
        raise DataError(f"{taxonomy_csv}: primary_label values repeat: {duplicated[:10]}")
    return labels


def specialist_classes(taxonomy_csv: str | os.PathLike, specialist: Mapping[str, Any] | None,
                       where: str) -> list[str] | None:
    """The classes of a taxon specialist (``train.backbones[].specialist``), in taxonomy order.

    ``specialist["classes"]`` maps taxonomy.csv columns to allowed values
    (``{class_name: [Amphibia, Insecta]}``): a class is the specialist's when, in every
    named column, its value is one of the listed ones (values compared as strings).
    None for a generalist (no `specialist`). Raises DataError naming `where` (the
    setting) when a column is not in taxonomy.csv or when the filter matches no class.
    """
    if not specialist:
        return None
    frame = _read_csv(taxonomy_csv, dtype=LABEL_DTYPES)
    _require_columns(frame, REQUIRED_TAXONOMY_COLUMNS, taxonomy_csv, "taxonomy.csv")
    keep = pd.Series(True, index=frame.index)
    for column, values in dict(specialist["classes"]).items():
        if column not in frame.columns:
            raise DataError(f"{where}.classes filters on column {column!r}, which {taxonomy_csv} does not "
                            f"have; expected one of {list(frame.columns)}")
        keep &= frame[column].astype(str).isin([str(v) for v in values])
    labels = frame.loc[keep, "primary_label"].astype(str).tolist()
    if not labels:
        raise DataError(f"{where}.classes {dict(specialist['classes'])} matches no class of {taxonomy_csv}; "
                        "expected values that occur in those columns (e.g. class_name: [Amphibia, Insecta])")
    return labels


def load_train_table(
    train_csv: str | os.PathLike,
    audio_dir: str | os.PathLike,
    classes: Sequence[str],
    source: str,
    label_map: dict[str, str] | None = None,
    allow_outside: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Read and check one train.csv-style table; returns rows with `path` and stats.

    `label_map` (an extra root's labels -> catalog labels) replaces `classes` as
    the known labels and renames them; `source_label` keeps the row's own label.
    `allow_outside` (xeno-canto query mode with pretraining) accepts primary labels
    outside `classes` (pretrain-only species, labelled by scientific name).
    Raises `DataError` naming the file, row and column for a missing column, a
    label not in the taxonomy, an unparsable list or a missing audio file.
    """
    frame = _read_csv(train_csv, dtype=LABEL_DTYPES)
    _require_columns(frame, REQUIRED_TRAIN_COLUMNS, train_csv, "train.csv")
    for column in TRAIN_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    known = set(classes) if label_map is None else set(label_map)
    stats = {"rows": int(len(frame)), "unknown_secondary_labels": 0}
    unknown_primary = frame.index[~frame["primary_label"].astype(str).isin(known)]
    if len(unknown_primary) and not allow_outside:
        row = unknown_primary[0]
        raise DataError(
            f"{train_csv} row {row + 2}: primary_label {frame.at[row, 'primary_label']!r} is not in "
            f"taxonomy.csv ({len(unknown_primary)} rows like this); expected one of the taxonomy's labels"
        )
    secondary = []
    for row, value in frame["secondary_labels"].items():
        labels = parse_label_list(value, f"{train_csv} row {row + 2} column secondary_labels")
        kept = [x for x in labels if x in known and x != frame.at[row, "primary_label"]]
        stats["unknown_secondary_labels"] += len(labels) - len(kept)
        secondary.append(kept)
    frame["primary_label"] = frame["primary_label"].astype(str)
    frame["source_label"] = frame["primary_label"]
    if label_map is not None:
        frame["primary_label"] = frame["primary_label"].map(label_map)
        secondary = [
            list(dict.fromkeys(label_map[x] for x in labels if label_map[x] != primary))
            for labels, primary in zip(secondary, frame["primary_label"], strict=True)
        ]
    frame["secondary_labels"] = secondary
    frame["filename"] = frame["filename"].astype(str)
    frame["path"] = [str(Path(audio_dir) / name) for name in frame["filename"]]
    exists = np.array([os.path.isfile(p) for p in frame["path"]])
    if not exists.all():
        missing = frame.index[~exists]
        shown = ", ".join(f"row {r + 2}: {frame.at[r, 'filename']!r}" for r in missing[:5])
        raise DataError(
            f"{train_csv}: {len(missing)} filename(s) not found under {audio_dir} ({shown}); "
            "expected train_audio/<primary_label>/<file>.ogg as in BirdCLEF 2025"
        )
    frame["source"] = source
    return frame, stats


def probe_durations(
    frame: pd.DataFrame, on_bad_audio: str, threads: int = 4
) -> tuple[pd.DataFrame, list[dict]]:
    """Add `duration_s` from each file's header; skip (or raise on) unreadable files.

    Returns the kept rows and a list of {filename, reason} for the skipped ones.
    """
    if on_bad_audio not in ("skip", "fail"):
        raise ValueError(f"data.on_bad_audio must be 'skip' or 'fail', got {on_bad_audio!r}")

    def probe(path: str) -> float | str:
        try:
            return audio_seconds(path)
        except BadAudioError as error:
            return error.reason

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(probe, frame["path"]))
    bad = [i for i, r in enumerate(results) if isinstance(r, str)]
    bad_files = [
        {"filename": frame["filename"].iat[i], "path": frame["path"].iat[i], "reason": results[i]}
        for i in bad
    ]
    if bad_files and on_bad_audio == "fail":
        first = bad_files[0]
        raise BadAudioError(
            first["path"],
            f"{first['reason']} ({len(bad_files)} bad file(s); set data.on_bad_audio: skip to skip them)",
        )
    for item in bad_files:
        log.warning("skipping bad audio %s: %s", item["path"], item["reason"])
    kept = frame.drop(index=frame.index[bad]).copy()
    kept["duration_s"] = [r for r in results if not isinstance(r, str)]
    return kept.reset_index(drop=True), bad_files


def build_catalog(
    train_csv: str | os.PathLike,
    taxonomy_csv: str | os.PathLike,
    audio_dir: str | os.PathLike,
    on_bad_audio: str = "skip",
    extra_csv: str | os.PathLike | None = None,
    extra_audio_dir: str | os.PathLike | None = None,
    threads: int = 4,
    extra_roots: Sequence[dict] = (),
    keep_pretrain_only: bool = False,
    extra_outside_taxonomy: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """The catalog of every labelled recording, and its stats.

    `extra_csv` (scraped xeno-canto rows in train.csv's schema, with audio under
    `extra_audio_dir`) joins the competition's rows; a recording present in both
    (same filename) is kept once, from train.csv. `extra_roots` (`{root, use}`
    each, `data.extra_roots`) join next, their labels mapped onto the main
    taxonomy by scientific name (`birdclef.data_roots.label_mapping`); a
    recording whose file name (without its folder) is already in the catalog is
    kept once, from the first root. `extra_outside_taxonomy` (xeno-canto query
    mode with pretraining) lets `extra_csv` hold species outside the taxonomy
    (pretrain-only, mapped onto an extra root's label of the same scientific
    name when there is one). Pretrain-only rows are kept when
    `keep_pretrain_only` (the pretrain stage is on) and dropped (and counted)
    otherwise.
    """
    classes = read_taxonomy(taxonomy_csv)
    frame, stats = load_train_table(train_csv, audio_dir, classes, source="train")
    if extra_csv is not None:
        extra, extra_stats = load_train_table(
            extra_csv, extra_audio_dir, classes, source="xeno_canto", allow_outside=extra_outside_taxonomy
        )
        extra = extra[~extra["filename"].isin(set(frame["filename"]))]
        stats["extra_rows"] = int(len(extra))
        stats["extra_unknown_secondary_labels"] = extra_stats["unknown_secondary_labels"]
        frame = pd.concat([frame, extra], ignore_index=True)
    frame["pretrain_only"] = ~frame["primary_label"].isin(set(classes))
    if extra_roots or frame["pretrain_only"].any():
        frame, stats["extra_roots"], stats["pretrain_classes"] = _join_extra_roots(
            frame, taxonomy_csv, extra_roots
        )
        pretrain_rows = int(frame["pretrain_only"].sum())
        stats["pretrain_only_rows"] = pretrain_rows
        stats["pretrain_only_xeno_canto_rows"] = int((frame["pretrain_only"] & (frame["source"] == "xeno_canto")).sum())
        if not keep_pretrain_only:
            frame = frame[~frame["pretrain_only"]].reset_index(drop=True)
            stats["pretrain_only_dropped"] = pretrain_rows
    catalog, bad_files = probe_durations(frame, on_bad_audio, threads=threads)
    columns = [*TRAIN_COLUMNS, "path", "duration_s", "source", "source_label", "pretrain_only"]
    catalog = catalog[columns]
    for column in ("type", "collection", "url", "scientific_name", "common_name", "author", "license"):
        catalog[column] = catalog[column].astype("string")
    for column in ("rating", "latitude", "longitude"):
        catalog[column] = pd.to_numeric(catalog[column], errors="coerce")
    catalog["pretrain_only"] = catalog["pretrain_only"].astype(bool)
    stats.update(
        {
            "recordings": int(len(catalog)),
            "classes": len(classes),
            "classes_with_recordings": int(catalog.loc[~catalog["pretrain_only"], "primary_label"].nunique()),
            "bad_audio": len(bad_files),
            "bad_audio_files": bad_files,
            "audio_seconds": float(catalog["duration_s"].sum()),
            "recordings_per_collection": {
                str(k): int(v) for k, v in catalog["collection"].fillna("unknown").value_counts().items()
            },
        }
    )
    return catalog, stats


def extra_root_source(position: int, root: str | os.PathLike) -> str:
    """The catalog's `source` of extra root `position` (0-based): ``extra<i>:<folder name>``."""
    return f"extra{position}:{Path(root).name}"


def _join_extra_roots(
    frame: pd.DataFrame, taxonomy_csv: str | os.PathLike, extra_roots: Sequence[dict]
) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    """The catalog rows with every extra root's rows joined; per-root stats; the pretrain classes."""
    check_extra_roots(extra_roots)
    roots = [Path(entry["root"]) for entry in extra_roots]
    mapping: LabelMapping = label_mapping(taxonomy_csv, [root / "taxonomy.csv" for root in roots])
    # Scraped species outside the taxonomy (labelled by scientific name) take a root's label for that name.
    outside = frame["pretrain_only"].to_numpy(bool)
    frame.loc[outside, "primary_label"] = [
        mapping.by_name.get(normalize_scientific_name(label), label) for label in frame.loc[outside, "primary_label"]
    ]
    seen = {Path(name).name for name in frame["filename"]}
    root_stats = []
    parts = [frame]
    for position, (entry, root) in enumerate(zip(extra_roots, roots, strict=True)):
        rows, stats = load_train_table(
            root / "train.csv", root / "train_audio", (), extra_root_source(position, root),
            label_map=mapping.maps[position + 1],
        )
        duplicate = rows["filename"].map(lambda name: Path(name).name in seen).to_numpy(bool)
        rows = rows[~duplicate].copy()
        seen.update(Path(name).name for name in rows["filename"])
        in_taxonomy = rows["primary_label"].map(mapping.in_taxonomy).astype(bool)
        rows["pretrain_only"] = (~in_taxonomy) | (entry.get("use", "train") == "pretrain")
        root_stats.append(
            {
                "root": str(root),
                "use": entry.get("use", "train"),
                "rows": stats["rows"],
                "duplicates_skipped": int(duplicate.sum()),
                "kept": int(len(rows)),
                "mapped_to_taxonomy": int(in_taxonomy.sum()),
                "relabelled": int((rows["primary_label"] != rows["source_label"]).sum()),
                "outside_taxonomy": int((~in_taxonomy).sum()),
                "unknown_secondary_labels": stats["unknown_secondary_labels"],
            }
        )
        parts.append(rows)
    return pd.concat(parts, ignore_index=True), root_stats, mapping.extra_classes


def _read_csv(path: str | os.PathLike, dtype: dict | None = None) -> pd.DataFrame:
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({error})") from error


def _require_columns(frame: pd.DataFrame, required: Sequence[str], path, kind: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing required column(s) {missing}; a BirdCLEF {kind} has "
            f"{list(required)} (found {list(frame.columns)})"
        )


def catalog_stage(
    train_csv: str,
    taxonomy_csv: str,
    audio_dir: str,
    out_catalog: str,
    out_manifest: str,
    settings: dict,
    tag: str,
    upstream: dict,
    extra_csv: str | None = None,
    extra_audio_dir: str | None = None,
    threads: int = 4,
) -> dict:
    """The catalog stage: build the table, write it and its manifest.

    `settings` may name `extra_roots` (data.extra_roots), `keep_pretrain_only`
    (train.pretrain.enabled) and `xc_outside_taxonomy` (xeno-canto query mode with
    pretraining); all are absent with a single root and no query mode.
    """
    extra_roots = settings.get("extra_roots", [])
    inputs = (
        [train_csv, taxonomy_csv]
        + ([extra_csv] if extra_csv else [])
        + [str(Path(entry["root"]) / name) for entry in extra_roots for name in ("train.csv", "taxonomy.csv")]
    )
    manifest = StageManifest("catalog", tag, settings, upstream, inputs)
    catalog, stats = build_catalog(
        train_csv,
        taxonomy_csv,
        audio_dir,
        on_bad_audio=settings["on_bad_audio"],
        extra_csv=extra_csv,
        extra_audio_dir=extra_audio_dir,
        threads=threads,
        extra_roots=extra_roots,
        keep_pretrain_only=bool(settings.get("keep_pretrain_only", False)),
        extra_outside_taxonomy=bool(settings.get("xc_outside_taxonomy", False)),
    )
    write_parquet(out_catalog, catalog)
    manifest.headline.update(stats)
    manifest.write(out_manifest)
    log.info("catalog: %d recordings, %d bad audio skipped", stats["recordings"], stats["bad_audio"])
    return stats

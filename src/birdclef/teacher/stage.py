"""The teacher stage: a foundation model's embedding and mapped logits for every window.

Windows: every `window_seconds` window of each training recording the VAD
stage kept (its cleaned audio, the first seconds the mel cache holds:
`birdclef.mels.recording_seconds`), and of every train soundscape. Work is
scattered over shards (`teacher_shard_stage`: file j goes to shard j mod n, so
a cluster runs the shards in parallel and a killed shard leaves nothing behind:
each writes its folder atomically) and gathered by `teacher_stage` into one
artifact whose rows are sorted by (source, file, window), so the result does
not depend on the number of shards:

- ``embeddings.npy`` (n, D) float16: the teacher's embedding;
- ``logits.npy`` (n, K) float32: its logits mapped onto taxonomy.csv (NaN for
  an unmatched class, `birdclef.runtime.teacher.mapping`);
- ``index.parquet``: source (``recording`` | ``soundscape``), filename
  (train.csv's relative name, or the soundscape's file name), row_id
  (``<stem>_<end second>`` for soundscapes; ``<filename>_<end second>`` for
  recordings), window, start_s, end_s;
- ``mapping.parquet``: each taxonomy class's status and teacher classes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.io import atomic_dir, atomic_path, read_json, write_json, write_parquet
from birdclef.common.manifest import StageManifest
from birdclef.common.progress import progress_bar
from birdclef.mels import recording_seconds
from birdclef.runtime.audio import AUDIO_SUFFIXES, BadAudioError
from birdclef.runtime.teacher.load import load_teacher
from birdclef.runtime.teacher.mapping import (
    log_mapping,
    map_taxonomy,
    mapped_logits,
    read_taxonomy_names,
)
from birdclef.runtime.teacher.windows import file_windows, window_outputs

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("source", "filename", "row_id", "window", "start_s", "end_s")
SOURCES = ("recording", "soundscape")


def teacher_files(
    catalog: pd.DataFrame, soundscape_dir: str | os.PathLike, mel_settings: Mapping[str, Any]
) -> list[tuple[str, str, str, float | None]]:
    """(source, filename, audio path, max seconds or None) of every file the teacher reads, in order.

    Recordings: the VAD catalog's kept rows (`audio_path`, else `path`), each cut at the
    seconds the base mel cache holds (pretrain-only recordings are left out: the students
    distil on the main taxonomy's recordings only); soundscapes: every audio file of
    `soundscape_dir`, whole.
    """
    if "vad_dropped" in catalog.columns:
        catalog = catalog[~catalog["vad_dropped"].astype(bool)]
    seconds, _ = recording_seconds(catalog, mel_settings)  # as the mel cache counts them
    if "pretrain_only" in catalog.columns:
        keep = ~catalog["pretrain_only"].astype(bool).to_numpy()
        catalog, seconds = catalog[keep], seconds[keep]
    paths = catalog["audio_path"] if "audio_path" in catalog.columns else catalog["path"]
    files = [
        ("recording", str(name), str(path), None if np.isinf(limit) else float(limit))
        for name, path, limit in zip(catalog["filename"], paths, seconds, strict=True)
    ]
    folder = Path(soundscape_dir)
    if folder.is_dir():
        files += [
            ("soundscape", p.name, str(p), None)
            for p in sorted(folder.iterdir())
            if p.suffix.lower() in AUDIO_SUFFIXES
        ]
    return files


def _row_id(source: str, filename: str, end_s: int) -> str:
    stem = Path(filename).stem if source == "soundscape" else filename
    return f"{stem}_{end_s}"


def _file_rows(source: str, filename: str, n_windows: int, window_seconds: float) -> list[tuple]:
    rows = []
    for k in range(n_windows):
        start, end = k * window_seconds, (k + 1) * window_seconds
        rows.append((source, filename, _row_id(source, filename, int(round(end))), k, start, end))
    return rows


def teacher_shard_stage(
    catalog_path: str,
    soundscape_dir: str,
    taxonomy_csv: str,
    out_dir: str,
    settings: Mapping[str, Any],
    mel_settings: Mapping[str, Any],
    shard: int,
    shards: int,
    threads: int = 1,
    on_bad_audio: str = "skip",
) -> dict[str, Any]:
    """One shard of the teacher stage: files j with j mod `shards` == `shard`, written to `out_dir`.

    `settings` are the teacher settings (`birdclef.runtime.teacher.load.load_teacher`,
    plus ``genus_fallback``); `mel_settings` the base mels (window_seconds and
    the seconds cached per recording). Writes ``embeddings.npy``, ``logits.npy``,
    ``index.parquet`` and ``shard.json`` (counts, seconds) into `out_dir` atomically.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"teacher shard {shard} is not in 0..{shards - 1} (teacher.shards is {shards})")
    files = teacher_files(pd.read_parquet(catalog_path), soundscape_dir, mel_settings)[shard::shards]
    teacher = load_teacher(settings, threads)
    mapping = map_taxonomy(read_taxonomy_names(taxonomy_csv), teacher.scientific_names,
                           bool(settings["genus_fallback"]))
    if shard == 0:
        log_mapping(mapping, "teacher")
    window_seconds = float(mel_settings["window_seconds"])
    start = time.perf_counter()
    embeddings, logits, rows, bad = [], [], [], []
    for source, filename, path, max_seconds in progress_bar(files, desc=f"teacher shard {shard}", unit="file"):
        try:
            windows = file_windows(path, teacher.sample_rate, window_seconds, max_seconds)
        except BadAudioError as error:
            if on_bad_audio == "fail":
                raise
            log.warning("teacher: skipping %s: %s", path, error.reason)
            bad.append({"path": path, "reason": error.reason})
            continue
        embedding, logit = window_outputs(teacher, windows)
        embeddings.append(embedding.astype(np.float16))
        logits.append(mapped_logits(logit, mapping))
        rows += _file_rows(source, filename, len(windows), window_seconds)
    seconds = time.perf_counter() - start
    stats = _write_shard(out_dir, embeddings, logits, rows, teacher, mapping, {
        "shard": shard, "shards": shards, "files": len(files) - len(bad), "bad_audio": len(bad),
        "bad_audio_files": bad, "seconds": round(seconds, 3), "threads": threads,
        "runtime": teacher.runtime, "model": teacher.kind,
        "audio_seconds_per_core_second": round(
            len(rows) * window_seconds / max(seconds, 1e-9) / max(1, threads), 1),
    })
    log.info("teacher shard %d/%d: %d windows of %d files in %.1f s (%s on %s, %d threads)",
             shard, shards, stats["windows"], stats["files"], seconds, teacher.kind, teacher.runtime, threads)
    return stats


def _write_shard(out_dir, embeddings, logits, rows, teacher, mapping, stats) -> dict[str, Any]:
    """Write one shard's arrays, index, mapping and stats into `out_dir`, atomically."""
    n_classes = len(mapping)
    embedding = np.concatenate(embeddings) if embeddings else np.zeros((0, teacher.embedding_dim), np.float16)
    logit = np.concatenate(logits) if logits else np.zeros((0, n_classes), np.float32)
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    stats = {**stats, "windows": int(len(index)), "embedding_dim": int(embedding.shape[1])}
    with atomic_dir(out_dir) as tmp:
        np.save(Path(tmp) / "embeddings.npy", embedding)
        np.save(Path(tmp) / "logits.npy", logit)
        index.to_parquet(Path(tmp) / "index.parquet", index=False)
        mapping.to_parquet(Path(tmp) / "mapping.parquet", index=False)
        write_json(Path(tmp) / "shard.json", stats)
    return stats


def read_shard(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict[str, Any]]:
    """(embeddings, logits, index, shard.json) of one shard folder."""
    folder = Path(folder)
    return (np.load(folder / "embeddings.npy"), np.load(folder / "logits.npy"),
            pd.read_parquet(folder / "index.parquet"), read_json(folder / "shard.json"))


def gather_order(index: pd.DataFrame) -> np.ndarray:
    """The row order of the gathered artifact: source (recordings first), filename, window."""
    source = index["source"].map({s: k for k, s in enumerate(SOURCES)}).to_numpy()
    return np.lexsort((index["window"].to_numpy(), index["filename"].astype(str).to_numpy(), source))


def teacher_stage(
    shard_dirs: Sequence[str],
    out: Mapping[str, str],
    settings: Mapping[str, Any],
    tag: str,
    upstream: Mapping[str, Any],
) -> dict[str, Any]:
    """Gather the shards into the teacher artifact; returns the manifest headline.

    `out` names the paths ``embeddings``, ``logits``, ``index``, ``mapping`` and
    ``manifest``. Rows are sorted by `gather_order`; every shard must carry the same mapping.
    """
    manifest = StageManifest("teacher", tag, settings, upstream, [])
    parts = [read_shard(folder) for folder in shard_dirs]
    mappings = [pd.read_parquet(Path(folder) / "mapping.parquet") for folder in shard_dirs]
    for folder, other in zip(shard_dirs[1:], mappings[1:], strict=True):
        if not other[["primary_label", "status"]].equals(mappings[0][["primary_label", "status"]]):
            raise ValueError(f"{folder}: its class mapping differs from {shard_dirs[0]}'s: "
                             "expected every shard of one tag to use the same teacher and taxonomy")
    index = pd.concat([part[2] for part in parts], ignore_index=True)
    order = gather_order(index)
    embeddings = np.concatenate([part[0] for part in parts])[order]
    logits = np.concatenate([part[1] for part in parts])[order]
    index = index.iloc[order].reset_index(drop=True)
    counts = log_mapping(mappings[0], "teacher")
    for key, array in (("embeddings", embeddings), ("logits", logits)):
        with atomic_path(out[key]) as tmp:
            np.save(tmp, array)
    write_parquet(out["index"], index)
    write_parquet(out["mapping"], mappings[0])
    manifest.headline.update(_headline([part[3] for part in parts], index, embeddings, counts))
    manifest.data["mapping"] = mappings[0][["primary_label", "scientific_name", "status", "teacher_names"]].to_dict(
        "records")
    manifest.write(out["manifest"])
    return manifest.headline


def _headline(stats: list[dict[str, Any]], index: pd.DataFrame, embeddings: np.ndarray,
              counts: dict[str, int]) -> dict[str, Any]:
    core_seconds = sum(float(s["seconds"]) * max(1, int(s["threads"])) for s in stats)
    audio_seconds = float((index["end_s"] - index["start_s"]).sum())
    return {
        "model": stats[0]["model"],
        "runtime": stats[0]["runtime"],
        "windows": int(len(index)),
        "recording_windows": int((index["source"] == "recording").sum()),
        "soundscape_windows": int((index["source"] == "soundscape").sum()),
        "embedding_dim": int(embeddings.shape[1]),
        "classes": counts,
        # with no class mapped, the logits are all NaN: logit distillation is skipped
        "logit_distillation_possible": counts["matched"] + counts["genus"] > 0,
        "bad_audio": sum(int(s["bad_audio"]) for s in stats),
        "bad_audio_files": [f for s in stats for f in s["bad_audio_files"]],
        "shards": len(stats),
        "core_seconds": round(core_seconds, 1),
        "audio_seconds_per_core_second": round(audio_seconds / max(core_seconds, 1e-9), 1),
    }

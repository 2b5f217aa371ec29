"""The vad stage: settings from the config, the run, its tables and manifest written."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import pandas as pd

from birdclef.common.io import write_parquet
from birdclef.common.manifest import StageManifest
from birdclef.vad.run import run_vad
from birdclef.vad.settings import VadSettings

log = logging.getLogger(__name__)


def vad_stage(
    catalog_path: str,
    out_spans: str,
    out_catalog: str,
    out_clean: str,
    out_manifest: str,
    settings: dict,
    tag: str,
    upstream: dict,
    threads: int = 1,
) -> dict:
    """The vad stage: speech spans, cleaned recordings and the catalog the mel stage reads.

    With `settings["enabled"]` false nothing is scanned: every row keeps its
    original audio (status not_scanned) and `out_clean` is an empty folder.
    """
    manifest = StageManifest("vad", tag, settings, upstream, [catalog_path])
    catalog = pd.read_parquet(catalog_path)
    enabled = settings.get("enabled", True)
    vad_settings = _vad_settings(settings)
    if not enabled:
        # An empty scan list: no row is scanned, all keep their audio.
        vad_settings = replace(vad_settings, collections=())
    spans, cleaned, stats = run_vad(
        catalog,
        "path",
        os.path.dirname(out_clean),
        vad_settings,
        threads=threads,
        on_bad_audio=settings["on_bad_audio"],
    )
    write_parquet(out_spans, spans)
    write_parquet(out_catalog, cleaned)
    manifest.headline.update({k: v for k, v in stats.items() if k != "settings"})
    manifest.write(out_manifest)
    log.info(
        "vad: %d files scanned, %d with speech, %d cleaned, %d dropped, %d bad",
        stats["files_scanned"],
        stats["files_with_speech"],
        stats["files_cleaned"],
        stats["files_dropped"],
        stats["files_bad"],
    )
    return stats


def _vad_settings(settings: dict) -> VadSettings:
    """The stage config's VAD settings (`enabled` is handled by the caller)."""
    return VadSettings(
        threshold=settings["threshold"],
        min_speech_seconds=settings["min_speech_seconds"],
        min_silence_seconds=settings["min_silence_seconds"],
        pad_seconds=settings["pad_seconds"],
        max_speech_fraction=settings["max_speech_fraction"],
        crossfade_seconds=settings["crossfade_seconds"],
        collections=tuple(settings["collections"])
        if settings.get("collections") is not None
        else None,
    )

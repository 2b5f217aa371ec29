"""Recordings' audio: the resume cache, one download converted to 32 kHz mono Ogg Vorbis."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from birdclef.common.io import read_json, write_json
from birdclef.runtime.audio import BadAudioError, read_audio, write_ogg
from birdclef.xeno_canto.client import DownloadFailedError, XenoCantoClient

SAMPLE_RATE = 32000


def _clean_temporaries(folders: Iterable[Path]) -> None:
    """Remove temporary files a killed run left behind (atomic_path's `.name.*.tmp*`)."""
    for folder in folders:
        if folder.is_dir():
            for path in folder.glob(".*.tmp*"):
                if path.is_file():
                    path.unlink(missing_ok=True)


def _verified_ogg(path: Path) -> bool:
    try:
        return path.is_file() and sf.info(str(path)).frames > 0
    except (sf.LibsndfileError, RuntimeError, OSError):
        return False


@dataclass
class _AudioCache:
    root: Path

    def __post_init__(self) -> None:
        self.audio = self.root / "audio"
        self.raw = self.root / "raw"
        self.failed = self.root / "failed"
        for folder in (self.audio, self.raw, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
        _clean_temporaries([self.audio, self.raw, self.failed, self.root / "pages", self.root])

    def ogg(self, xc_id: int) -> Path:
        """The converted 32 kHz ogg of a recording."""
        return self.audio / f"XC{xc_id}.ogg"

    def failure(self, xc_id: int) -> Path:
        """The marker of a recording whose download could not be decoded."""
        return self.failed / f"XC{xc_id}.json"


def _fetch_audio(
    client: XenoCantoClient, cache: _AudioCache, xc_id: int, url: str, ext: str
) -> dict:
    """Download and convert one recording (or reuse the cache); returns its outcome."""
    ogg = cache.ogg(xc_id)
    if _verified_ogg(ogg):
        return {"status": "cached", "bytes": 0}
    ogg.unlink(missing_ok=True)
    failure = cache.failure(xc_id)
    if failure.is_file():
        return {"status": "failed", **read_json(failure), "bytes": 0, "cached": True}
    raw = cache.raw / f"XC{xc_id}{ext}"
    size = 0
    if not raw.is_file():
        try:
            size = client.download(url, raw)
        except DownloadFailedError as error:
            # Not remembered: the next run tries again.
            return {
                "status": "failed",
                "reason": "download_failed",
                "detail": client.mask(error),
                "bytes": 0,
            }
    try:
        wave = read_audio(raw, SAMPLE_RATE)
        write_ogg(ogg, wave, SAMPLE_RATE)
    except BadAudioError as error:
        outcome = {
            "reason": "corrupt_audio",
            "detail": error.reason,
            "raw_bytes": raw.stat().st_size,
        }
        write_json(failure, outcome)
        raw.unlink(missing_ok=True)
        return {"status": "failed", **outcome, "bytes": size}
    raw.unlink(missing_ok=True)
    return {"status": "downloaded", "bytes": size}


def _raw_extension(record: Mapping[str, Any]) -> str:
    suffix = Path(str(record.get("file-name") or "")).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix or "") else ".audio"

"""`manifest.json`: what made an artifact, written beside it.

Each artifact folder gets one: stage, tag, exact settings, upstream tags, input
files with sizes (and checksums for small files), package versions, git commit,
start and end time, and the stage's headline numbers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from birdclef.common.io import write_json

PACKAGES = (
    "birdclef-pipeline",
    "numpy",
    "pandas",
    "pyarrow",
    "soundfile",
    "soxr",
    "librosa",
    "scikit-learn",
    "torch",
    "torchvision",
    "timm",
    "silero-vad",
    "onnxruntime",
    "openvino",
    "nncf",
    "snakemake",
)

# Files up to this size get a sha256; larger ones are described by size and mtime.
CHECKSUM_MAX_BYTES = 64 * 1024 * 1024


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of `names` (None where a package is absent)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(cwd: str | os.PathLike = ".") -> str | None:
    """The workflow's git commit (suffixed `-dirty` with local changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """Size, and sha256 for files small enough, of one input file or folder."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return {"path": str(path), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    info: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    if info["bytes"] <= CHECKSUM_MAX_BYTES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        info["sha256"] = digest.hexdigest()
    else:
        info["mtime"] = path.stat().st_mtime
    return info


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class StageManifest:
    """Collects a stage's provenance while it runs and writes `manifest.json` at the end.

    Create it first thing in a stage (the start time is taken then), add
    headline numbers to `headline` as they become known and call `write`.
    """

    def __init__(
        self,
        stage: str,
        tag: str,
        settings: Mapping[str, Any],
        upstream: Mapping[str, Any] | None = None,
        inputs: Iterable[str | os.PathLike] = (),
    ) -> None:
        self.data: dict[str, Any] = {
            "stage": stage,
            "tag": tag,
            "settings": dict(settings),
            "upstream": dict(upstream or {}),
            "inputs": [describe_file(p) for p in inputs if Path(p).exists()],
            "packages": package_versions(),
            "python": platform.python_version(),
            "host": platform.node(),
            "git_commit": git_commit(),
            "started": now_iso(),
        }
        self.headline: dict[str, Any] = {}

    def write(self, path: str | os.PathLike) -> dict[str, Any]:
        """Write the manifest to `path` atomically and return it."""
        self.data["finished"] = now_iso()
        self.data["headline"] = self.headline
        write_json(path, self.data)
        return self.data

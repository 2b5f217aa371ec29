"""Stage tags: the short hash that names each versioned artifact folder.

A stage's tag covers its own effective settings, the tags of the stages it
reads and a per-stage format version. The workflow computes every tag through
`stage_tag`, and nothing else decides where an artifact lives.

This module is imported by the Snakefile at parse time, so it must stay light:
standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

# Bump a stage's number when its output format or algorithm changes in a way
# that makes old artifacts wrong for the new code.
FORMAT_VERSIONS: dict[str, int] = {
    "demo": 1,
    "xc_scrape": 1,
    "catalog": 2,
    "vad": 1,
    "mels": 1,
    "soundscape_mels": 2,
    "soundscape_labels": 1,
    "teacher": 1,
    "folds": 1,
    "train": 2,
    "pretrain": 1,
    "pseudo": 2,
    "ensemble": 3,
    "export": 3,
    "submission": 2,
}

TAG_LENGTH = 10


def canonical_json(value: Any) -> str:
    """Serialise `value` deterministically (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stage_tag(
    stage: str,
    settings: Mapping[str, Any],
    upstream: Mapping[str, str] | Sequence[str] = (),
    prefix: str | None = None,
) -> str:
    """Return the tag of `stage` for `settings` and the `upstream` tags it reads.

    `upstream` maps an upstream stage name to its tag (a list of tags is also
    accepted, order kept). `prefix`, when given, is prepended to the hash to make
    folder names readable (for example a backbone name); it never replaces it.
    """
    if stage not in FORMAT_VERSIONS:
        raise KeyError(f"unknown stage {stage!r}: expected one of {sorted(FORMAT_VERSIONS)}")
    payload = {
        "stage": stage,
        "format": FORMAT_VERSIONS[stage],
        "settings": settings,
        "upstream": dict(upstream) if isinstance(upstream, Mapping) else list(upstream),
    }
    digest = hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:TAG_LENGTH]
    if prefix:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in prefix)
        return f"{safe}-{digest}"
    return digest

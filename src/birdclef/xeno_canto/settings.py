"""The stage's settings (the config's `xeno_canto` section): defaults and validation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from birdclef.xeno_canto.query import check_extra_query, query_strings

DEFAULT_SETTINGS: dict[str, Any] = {
    "base_url": "https://xeno-canto.org/api/3/recordings",
    "per_page": 500,
    "requests_per_second": 1.0,
    "quality": ["A", "B", "C"],
    "exclude_licenses": ["nd"],
    "max_seconds": 600,
    "max_records_per_species": None,
    "only_species_below": None,
    "extra_query": "",
    "grp_by_class": {},
    "species": None,
    "query": None,
    "snapshot": None,
    "download_workers": 1,
    "timeout_seconds": 60.0,
    "max_retries": 6,
    "backoff_seconds": 1.0,
}


def resolve_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The stage settings with defaults filled in; unknown keys are errors."""
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS) - {"enabled", "key_env"})
    if unknown:
        raise ValueError(
            f"unknown xeno_canto setting(s) {unknown}; expected {sorted(DEFAULT_SETTINGS)}"
        )
    resolved = {**DEFAULT_SETTINGS, **{k: v for k, v in settings.items() if k in DEFAULT_SETTINGS}}
    if not 50 <= int(resolved["per_page"]) <= 500:
        raise ValueError(
            f"xeno_canto.per_page must be between 50 and 500, got {resolved['per_page']}"
        )
    check_extra_query(resolved["extra_query"])
    query_strings(resolved["query"], resolved["extra_query"])
    if resolved["query"] is not None and (resolved["species"] is not None or resolved["only_species_below"] is not None):
        raise ValueError(
            "xeno_canto.query (query mode: country or group filters instead of the taxonomy's species) "
            "cannot be combined with xeno_canto.species or only_species_below: expected one of the two modes"
        )
    if not re.match(r"^https?://", str(resolved["base_url"])):
        raise ValueError(
            f"xeno_canto.base_url must start with http:// or https://, got {resolved['base_url']!r}"
        )
    return resolved

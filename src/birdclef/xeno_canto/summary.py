"""The stage's summary: the manifest's headline and the closing log lines."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef.xeno_canto.client import XenoCantoClient
from birdclef.xeno_canto.query import SpeciesCrawl
from birdclef.xeno_canto.selection import SKIP_REASONS
from birdclef.xeno_canto.species import _Species

log = logging.getLogger(__name__)


def _headline(
    crawl_started: str,
    species: list[_Species],
    queried: list[_Species],
    skipped_species: Mapping[str, list[str]],
    crawls: list[SpeciesCrawl],
    rows: pd.DataFrame,
    out_audio: Path,
    client: XenoCantoClient,
    s: Mapping[str, Any],
    result: Mapping[str, Any],
) -> dict:
    """The manifest's headline: crawl dates, species, pages, requests, records, downloads, bytes."""
    fetched = [t for c in crawls for t in c.fetched_at]
    audio_bytes = sum((out_audio / f).stat().st_size for f in rows["filename"])
    skipped = {reason: int(result["skipped"].get(reason, 0)) for reason in SKIP_REASONS}
    return {
        "crawl_date": {
            "started": crawl_started,
            "first_page": min(fetched) if fetched else None,
            "last_page": max(fetched) if fetched else None,
        },
        "species": {
            "taxonomy": len(species),
            "queried": len(queried),
            "skipped": {k: len(v) for k, v in skipped_species.items()},
            "with_records": sum(1 for c in crawls if c.records),
            "with_kept": int(rows["primary_label"].nunique()),
        },
        "pages": {
            "total": sum(c.num_pages for c in crawls),
            "fetched": sum(c.pages_fetched for c in crawls),
            "from_cache": sum(c.pages_cached for c in crawls),
        },
        "requests": _request_counts(client, s),
        "records": {
            "declared": sum(c.declared for c in crawls),
            "found": result["found"],
            "duplicates_across_pages": result["duplicates_pages"],
            "duplicates_across_species": result["duplicates_species"],
            "kept": int(len(rows)),
            "skipped": skipped,
        },
        "count_changes": [
            {"primary_label": c.label, "query": c.query, "totals": c.totals}
            for c in crawls
            if c.count_changed
        ],
        "count_mismatches": result["mismatches"],
        "downloads": {
            "fetched": result["downloads"]["downloaded"],
            "from_cache": result["downloads"]["cached"],
            "failed_cached": result["downloads"]["failed_cached"],
        },
        "bytes": {"downloaded": client.stats["bytes_downloaded"], "audio": int(audio_bytes)},
    }


def _request_counts(client: XenoCantoClient, s: Mapping[str, Any]) -> dict:
    """The headline's `requests`: what the client sent, retried and got, and the rate limit."""
    return {
        "total": client.stats["requests"],
        "api": client.stats["api_requests"],
        "download": client.stats["download_requests"],
        "retries": client.stats["retries"],
        "timeouts": client.stats["timeouts"],
        "redirects": client.stats["redirects"],
        "by_status": dict(sorted(client.status_counts.items())),
        "requests_per_second_limit": s["requests_per_second"],
    }


def _log_summary(
    headline: Mapping[str, Any],
    queried: list[_Species],
    result: Mapping[str, Any],
    rows: pd.DataFrame,
) -> None:
    """Warn about counts that changed during the crawl; log the stage's one-line summary."""
    for change in headline["count_changes"]:
        log.warning(
            "numRecordings of %s changed during the crawl: %s",
            change["primary_label"],
            change["totals"],
        )
    skipped = headline["records"]["skipped"]
    log.info(
        "xc_scrape: %d species, %d pages (%d fetched), %d records found, %d kept, skipped %s",
        len(queried),
        headline["pages"]["total"],
        headline["pages"]["fetched"],
        result["found"],
        len(rows),
        {k: v for k, v in skipped.items() if v},
    )

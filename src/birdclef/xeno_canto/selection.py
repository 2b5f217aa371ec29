"""Which recordings: de-duplication across pages and species, the filters, the per-species cap."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from birdclef.xeno_canto.parsers import RATINGS, license_excluded, parse_length
from birdclef.xeno_canto.query import SpeciesCrawl
from birdclef.xeno_canto.species import _map_name, outside_label

log = logging.getLogger(__name__)

# Skip reasons, in the order the filters apply.
SKIP_REASONS = (
    "unknown_species",
    "in_train",
    "restricted",
    "license",
    "quality",
    "too_long",
    "species_cap",
    "download_failed",
    "corrupt_audio",
)


@dataclass
class _Selection:
    """The records of every crawl: one entry per id, the skips, the candidates per label."""

    quality: set[str]
    seen: dict[int, dict] = field(default_factory=dict)
    entries: list[dict] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    duplicates_pages: int = 0
    duplicates_species: int = 0
    mismatches: list[dict] = field(default_factory=list)
    per_species: dict[str, dict] = field(default_factory=dict)
    candidates: dict[str, list[dict]] = field(default_factory=dict)


def _select_records(
    crawls: list[SpeciesCrawl],
    names: Mapping[str, str],
    in_train: set[int],
    s: Mapping[str, Any],
    keep_outside: bool = False,
) -> _Selection:
    """Every crawl's records de-duplicated and filtered (in `SKIP_REASONS` order, cap aside).

    `keep_outside` (query mode with train.pretrain on): a record of a species outside the
    taxonomy is labelled by its scientific name (`outside_label`) instead of skipped.
    """
    selection = _Selection({str(q).strip().lower() for q in s["quality"]})
    for crawl in crawls:
        _select_crawl(selection, crawl, names, in_train, s, keep_outside)
    return selection


def _select_crawl(
    selection: _Selection,
    crawl: SpeciesCrawl,
    names: Mapping[str, str],
    in_train: set[int],
    s: Mapping[str, Any],
    keep_outside: bool = False,
) -> None:
    """Add one crawl's records to `selection`, then its count mismatch and per-species summary."""
    ids_in_query: set[int] = set()
    for page, record in crawl.records:
        try:
            xc_id = int(str(record.get("id")).strip())
        except ValueError:
            log.warning(
                "record without a numeric id in %r page %d: %r",
                crawl.query,
                page,
                record.get("id"),
            )
            continue
        if xc_id in ids_in_query:
            selection.duplicates_pages += 1
            continue
        ids_in_query.add(xc_id)
        if xc_id in selection.seen:
            selection.duplicates_species += 1
            continue
        _add_record(selection, crawl, page, record, xc_id, names, in_train, s, keep_outside)
    if len(ids_in_query) != crawl.declared:
        selection.mismatches.append(
            {
                "primary_label": crawl.label,
                "declared": crawl.declared,
                "found": len(ids_in_query),
            }
        )
    selection.per_species[crawl.label] = {
        "query": crawl.query,
        "pages": crawl.num_pages,
        "declared": crawl.declared,
        "totals_seen": sorted(set(crawl.totals)),
        "found": len(ids_in_query),
    }


def _add_record(
    selection: _Selection,
    crawl: SpeciesCrawl,
    page: int,
    record: dict,
    xc_id: int,
    names: Mapping[str, str],
    in_train: set[int],
    s: Mapping[str, Any],
    keep_outside: bool = False,
) -> None:
    """One new record's entry: a candidate of its label, or skipped with its reason."""
    entry = {
        "xc_id": xc_id,
        "query_label": crawl.label,
        "query": crawl.query,
        "page": page,
        "record": record,
        "status": None,
    }
    selection.seen[xc_id] = entry
    selection.entries.append(entry)
    name = " ".join(str(record.get(k) or "") for k in ("gen", "sp", "ssp")).strip()
    label = _map_name(names, name)
    if label is None and keep_outside:
        label = outside_label(record)
    reason = _skip_reason(record, xc_id, label, in_train, selection.quality, s)
    entry["primary_label"] = label
    if reason is None:
        selection.candidates.setdefault(label, []).append(entry)
    else:
        entry["status"] = reason
        selection.skipped[reason] += 1


def _skip_reason(
    record: Mapping[str, Any],
    xc_id: int,
    label: str | None,
    in_train: set[int],
    quality: set[str],
    s: Mapping[str, Any],
) -> str | None:
    """The first filter a record fails (None: it is a candidate)."""
    q = str(record.get("q") or "").strip().lower() or "no score"
    length = parse_length(record.get("length"))
    if label is None:
        reason = "unknown_species"
    elif xc_id in in_train:
        reason = "in_train"
    elif not str(record.get("file") or "").strip():
        reason = "restricted"
    elif license_excluded(record.get("lic"), s["exclude_licenses"]):
        reason = "license"
    elif q not in quality:
        reason = "quality"
    elif s["max_seconds"] is not None and length is not None and length > s["max_seconds"]:
        reason = "too_long"
    else:
        reason = None
    return reason


def _apply_species_cap(selection: _Selection, cap: int | None) -> list[dict]:
    """The candidates to download, by id; those past `cap` of a species are skipped."""
    # -- per-species cap: best rating first, then oldest id
    to_fetch: list[dict] = []
    for label in sorted(selection.candidates):
        ranked = sorted(
            selection.candidates[label],
            key=lambda e: (-RATINGS.get(str(e["record"].get("q") or "").upper(), 0.0), e["xc_id"]),
        )
        for rank, entry in enumerate(ranked):
            if cap is not None and rank >= cap:
                entry["status"] = "species_cap"
                selection.skipped["species_cap"] += 1
            else:
                to_fetch.append(entry)
    to_fetch.sort(key=lambda e: e["xc_id"])
    return to_fetch

"""The xc_scrape stage: crawl, filter, download and convert; write rows, metadata, audio, manifest."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef.catalog import TRAIN_COLUMNS
from birdclef.common.io import atomic_dir, atomic_path, read_json, write_json, write_parquet
from birdclef.common.manifest import StageManifest, now_iso
from birdclef.common.progress import progress_bar
from birdclef.xeno_canto.client import XenoCantoClient
from birdclef.xeno_canto.download import _AudioCache, _fetch_audio, _raw_extension
from birdclef.xeno_canto.parsers import _https, train_xc_ids, xc_id_of
from birdclef.xeno_canto.query import (
    PageCache,
    SpeciesCrawl,
    build_query,
    crawl_species,
    query_strings,
)
from birdclef.xeno_canto.selection import _apply_species_cap, _select_records
from birdclef.xeno_canto.settings import resolve_settings
from birdclef.xeno_canto.species import (
    _choose_species,
    _name_index,
    _read_species,
    _Species,
    outside_species,
)
from birdclef.xeno_canto.summary import _headline, _log_summary
from birdclef.xeno_canto.tables import _metadata_frame, _row

log = logging.getLogger(__name__)


def scrape_stage(
    train_csv: str | os.PathLike,
    taxonomy_csv: str | os.PathLike,
    out_rows: str | os.PathLike,
    out_metadata: str | os.PathLike,
    out_audio: str | os.PathLike,
    out_manifest: str | os.PathLike,
    settings: Mapping[str, Any],
    key_env: str,
    tag: str,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """The xc_scrape stage: crawl, filter, download and convert; write rows, metadata, audio, manifest.

    `settings` is the config's `xeno_canto` section without `enabled`/`key_env`
    (missing keys take `DEFAULT_SETTINGS`). The API key is read from the
    environment variable `key_env`, only when a page must be fetched. The
    resume cache defaults to `<dirname(out_rows)>/cache` (outside the declared
    outputs). Writes `out_rows` (train.csv schema), `out_metadata` (raw API
    records with their status), `out_audio/<primary_label>/XC<id>.ogg` and the
    manifest; returns the manifest's headline.

    Query mode (`settings["query"]` set): one crawl per query (country or group filters,
    `birdclef.xeno_canto.query.query_strings`) instead of one per taxonomy species, with
    the same rate limiter, paging and filters; records of taxonomy species get their
    labels, and with `settings["keep_outside_taxonomy"]` (the plan sets it from
    train.pretrain.enabled) the others are kept under their scientific name (the catalog
    makes them pretrain-only classes) instead of skipped as `unknown_species`.
    """
    keep_outside = bool(settings.get("keep_outside_taxonomy", False))
    s = resolve_settings({k: v for k, v in settings.items() if k != "keep_outside_taxonomy"})
    manifest = StageManifest("xc_scrape", tag, {**s, "keep_outside_taxonomy": keep_outside}, {},
                             [train_csv, taxonomy_csv])
    manifest.data["key_env"] = key_env
    cache_root = Path(cache_dir) if cache_dir is not None else Path(out_rows).parent / "cache"
    out_audio = Path(out_audio)
    audio_cache, crawl_started = _prepare_cache(cache_root, out_audio)

    # -- species to query
    species = _read_species(taxonomy_csv)
    names = _name_index(species)
    by_label = {sp.label: sp for sp in species}
    train = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    in_train = train_xc_ids(train)
    train_counts = (
        train["primary_label"].value_counts().to_dict() if "primary_label" in train else {}
    )
    queries = query_strings(s["query"], s["extra_query"])
    if queries:
        queried = [_Species(f"query{i}", "", "", "") for i in range(len(queries))]
        skipped_species: dict[str, list[str]] = {}
    else:
        queried, skipped_species = _choose_species(species, by_label, train_counts, s, taxonomy_csv)

    client = _client(s, key_env)
    pages = PageCache(cache_root / "pages", s["base_url"], s["snapshot"])
    try:
        crawls = _crawl_all(client, pages, queried, s, progress, queries)
        result = _select_and_fetch(
            client, audio_cache, crawls, names, by_label, in_train, s, progress, keep_outside,
            bool(queries),
        )
    finally:
        client.close()

    # -- outputs
    rows = _write_outputs(result, audio_cache, out_audio, out_rows, out_metadata)
    headline = _headline(
        crawl_started, species, queried, skipped_species, crawls, rows, out_audio, client, s, result
    )
    manifest.data["crawl_date"] = headline["crawl_date"]
    manifest.data["species"] = result["per_species"]
    manifest.data["skipped_species"] = skipped_species
    manifest.data["user_agent"] = client.user_agent
    manifest.headline.update(headline)
    manifest.write(out_manifest)
    _log_summary(headline, queried, result, rows)
    return headline


def _prepare_cache(cache_root: Path, out_audio: Path) -> tuple[_AudioCache, str]:
    """The resume cache (temporaries of a killed run removed) and the crawl's start time."""
    cache_root.mkdir(parents=True, exist_ok=True)
    audio_cache = _AudioCache(cache_root)
    for stale in out_audio.parent.glob(f".{out_audio.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    crawl_file = cache_root / "crawl.json"
    if not crawl_file.is_file():
        write_json(crawl_file, {"started": now_iso()})
    crawl_started = read_json(crawl_file)["started"]
    return audio_cache, crawl_started


def _client(s: Mapping[str, Any], key_env: str) -> XenoCantoClient:
    """The stage's client, with the key read from the environment variable `key_env`."""
    key = os.environ.get(key_env) or None
    return XenoCantoClient(
        s["base_url"],
        key,
        requests_per_second=s["requests_per_second"],
        timeout_seconds=s["timeout_seconds"],
        max_retries=s["max_retries"],
        backoff_seconds=s["backoff_seconds"],
        key_env=key_env,
    )


def _progress(progress: bool, **kwargs: Any):
    """A tqdm bar on a terminal, log lines otherwise (birdclef.common.progress); silent when off."""
    return progress_bar(disable=not progress, mininterval=1.0, dynamic_ncols=True, **kwargs)


def _crawl_all(
    client: XenoCantoClient,
    pages: PageCache,
    queried: list[_Species],
    s: Mapping[str, Any],
    progress: bool,
    queries: list[str] | None = None,
) -> list[SpeciesCrawl]:
    """Every page of each species' query, or in query mode of each of `queries` (one per
    `queried` entry, labelled ``query<i>``)."""
    crawls: list[SpeciesCrawl] = []
    totals = {"pages": 0, "records": 0}
    with _progress(progress, total=len(queried), desc="xc species", unit="sp") as bar:

        def on_page(crawl: SpeciesCrawl) -> None:
            totals["pages"] += 1
            bar.set_postfix(
                sp=crawl.label,
                page=f"{len(crawl.totals)}/{crawl.num_pages}",
                pages=totals["pages"],
                records=totals["records"] + len(crawl.records),
                refresh=False,
            )

        for position, sp in enumerate(queried):
            if queries:
                query = queries[position]
            else:
                group = (s["grp_by_class"] or {}).get(sp.class_name)
                query = build_query(sp.scientific_name, group, s["extra_query"])
            crawl = crawl_species(
                client, pages, sp.label, sp.scientific_name, query, s["per_page"], on_page
            )
            totals["records"] += len(crawl.records)
            crawls.append(crawl)
            bar.update(1)
    return crawls


def _select_and_fetch(
    client: XenoCantoClient,
    cache: _AudioCache,
    crawls: list[SpeciesCrawl],
    names: Mapping[str, str],
    by_label: Mapping[str, _Species],
    in_train: set[int],
    s: Mapping[str, Any],
    progress: bool,
    keep_outside: bool = False,
    query_mode: bool = False,
) -> dict:
    selection = _select_records(crawls, names, in_train, s, keep_outside)
    to_fetch = _apply_species_cap(selection, s["max_records_per_species"])
    rows, downloads = _fetch_all(
        client, cache, to_fetch, names, by_label, selection.skipped, s, progress
    )
    kept_per_label = Counter(row["primary_label"] for row in rows)
    if query_mode:  # a crawl is a query: count what it brought, whatever the species
        kept_per_label = Counter(entry["query_label"] for entry in selection.entries if entry["status"] == "kept")
    for crawl in crawls:
        selection.per_species[crawl.label]["kept"] = kept_per_label.get(crawl.label, 0)
    return {
        "rows": rows,
        "entries": selection.entries,
        "skipped": selection.skipped,
        "found": len(selection.seen),
        "duplicates_pages": selection.duplicates_pages,
        "duplicates_species": selection.duplicates_species,
        "mismatches": selection.mismatches,
        "per_species": selection.per_species,
        "downloads": {
            k: int(downloads.get(k, 0)) for k in ("downloaded", "cached", "failed", "failed_cached")
        },
    }


def _fetch_all(
    client: XenoCantoClient,
    cache: _AudioCache,
    to_fetch: list[dict],
    names: Mapping[str, str],
    by_label: Mapping[str, _Species],
    skipped: Counter[str],
    s: Mapping[str, Any],
    progress: bool,
) -> tuple[list[dict], Counter[str]]:
    """Download and convert every selected recording; its train.csv rows and download counts."""
    # -- downloads
    downloads: Counter[str] = Counter()
    rows: list[dict] = []

    def task(entry: dict) -> dict:
        url = _https(entry["record"].get("file"), s["base_url"])
        return _fetch_audio(client, cache, entry["xc_id"], url, _raw_extension(entry["record"]))

    workers = max(1, int(s["download_workers"]))
    with (
        _progress(progress, total=len(to_fetch), desc="xc audio", unit="file") as bar,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        futures = {pool.submit(task, entry): entry for entry in to_fetch}
        for future in as_completed(futures):
            entry = futures[future]
            outcome = future.result()
            if outcome["status"] == "failed":
                entry["status"] = outcome["reason"]
                skipped[outcome["reason"]] += 1
                downloads["failed_cached" if outcome.get("cached") else "failed"] += 1
                log.warning(
                    "skipping XC%d: %s (%s)",
                    entry["xc_id"],
                    outcome["reason"],
                    outcome.get("detail"),
                )
            else:
                downloads[outcome["status"]] += 1
                label = entry["primary_label"]
                sp = by_label[label] if label in by_label else outside_species(label, entry["record"])
                row = _row(entry["record"], entry["xc_id"], sp, names)
                entry["status"] = "kept"
                entry["filename"] = row["filename"]
                rows.append(row)
            bar.set_postfix(mb=f"{client.stats['bytes_downloaded'] / 1e6:.1f}", refresh=False)
            bar.update(1)
    return rows, downloads


def _write_outputs(
    result: Mapping[str, Any],
    audio_cache: _AudioCache,
    out_audio: Path,
    out_rows: str | os.PathLike,
    out_metadata: str | os.PathLike,
) -> pd.DataFrame:
    """Write the kept rows (sorted), their audio (linked from the cache) and the metadata."""
    rows = pd.DataFrame(result["rows"], columns=list(TRAIN_COLUMNS))
    rows["_id"] = [xc_id_of(f) for f in rows["filename"]]
    rows = rows.sort_values(["primary_label", "_id"], kind="stable").drop(columns="_id")
    with atomic_dir(out_audio) as tmp:
        for filename in rows["filename"]:
            target = tmp / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            source = audio_cache.ogg(xc_id_of(filename))
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    with atomic_path(out_rows) as tmp:
        rows.to_csv(tmp, index=False)
    write_parquet(out_metadata, _metadata_frame(result["entries"]))
    return rows

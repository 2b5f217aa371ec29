"""API v3 tag queries and their pages: query building, the page cache, one species' crawl."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from birdclef.common.io import atomic_path
from birdclef.common.manifest import now_iso
from birdclef.xeno_canto.client import XenoCantoClient

log = logging.getLogger(__name__)

TAG_TOKEN = re.compile(r'\s*([A-Za-z][\w-]*):("[^"]*"|[^\s"]+)\s*')


def check_extra_query(extra_query: str) -> str:
    """Validate `extra_query` (tag:value tokens only; API v3 refuses untagged words)."""
    text = (extra_query or "").strip()
    position = 0
    while position < len(text):
        match = TAG_TOKEN.match(text, position)
        if not match:
            raise ValueError(
                f"xeno_canto.extra_query {extra_query!r}: expected tag:value tokens such as "
                "'grp:birds q:A cnt:brazil len:\"<120\"' (API v3 only takes tag queries)"
            )
        position = match.end()
    return text


# Query mode (`xeno_canto.query`): the keys of one query given as a mapping, and their API v3 tags.
QUERY_KEYS = {"country": "cnt", "group": "grp", "genus": "gen"}


def _tag(tag: str, value: object) -> str:
    text = " ".join(str(value).split())
    return f'{tag}:"{text}"' if " " in text or not text else f"{tag}:{text}"


def query_strings(query: object, extra_query: str = "") -> list[str]:
    """The API v3 queries of query mode: `query` is a tag string (``cnt:"Brazil" grp:birds``),
    a mapping (``{country: Brazil, group: birds}``: keys of `QUERY_KEYS`) or a list of either;
    `extra_query` is appended to each. None gives [] (species mode). ValueError names the
    setting for an empty query or an unknown key."""
    if query is None:
        return []
    entries = query if isinstance(query, list) else [query]
    if not entries:
        raise ValueError("xeno_canto.query is an empty list: expected null (species mode) or queries")
    queries = []
    for i, entry in enumerate(entries):
        where = "xeno_canto.query" if not isinstance(query, list) else f"xeno_canto.query[{i}]"
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - set(QUERY_KEYS))
            if unknown:
                raise ValueError(f"{where} has unknown key(s) {unknown}; expected some of {sorted(QUERY_KEYS)}")
            text = " ".join(_tag(QUERY_KEYS[k], v) for k, v in entry.items() if v is not None)
        else:
            text = check_extra_query(str(entry))
        if not text:
            raise ValueError(f"{where} is empty: expected e.g. {{country: Brazil, group: birds}} or 'cnt:brazil grp:birds'")
        extra = check_extra_query(extra_query)
        queries.append(f"{text} {extra}".strip())
    return queries


def build_query(scientific_name: str, group: str | None = None, extra_query: str = "") -> str:
    """The API v3 tag query of one species: `sp:"genus species"` (+ ssp, grp, extra tags)."""
    words = scientific_name.split()
    parts = [f'sp:"{words[0].lower()} {words[1].lower()}"']
    if len(words) > 2:
        parts.append(f'ssp:"{words[2].lower()}"')
    if group:
        parts.append(f'grp:"{group}"' if " " in group else f"grp:{group}")
    extra = check_extra_query(extra_query)
    if extra:
        parts.append(extra)
    return " ".join(parts)


# --------------------------------------------------------------------------- page cache


class PageCache:
    """API pages on disk, keyed by a hash of (base_url, query, page, per_page, snapshot)."""

    def __init__(self, folder: str | os.PathLike, base_url: str, snapshot: str | None = None):
        self.folder = Path(folder)
        self.base_url = base_url
        self.snapshot = snapshot
        self.folder.mkdir(parents=True, exist_ok=True)

    def _request(self, query: str, page: int, per_page: int) -> dict:
        return {
            "base_url": self.base_url,
            "query": query,
            "page": int(page),
            "per_page": int(per_page),
            "snapshot": self.snapshot,
        }

    def path(self, query: str, page: int, per_page: int) -> Path:
        """The cache file of one request."""
        request = json.dumps(self._request(query, page, per_page), sort_keys=True)
        return self.folder / f"{hashlib.sha256(request.encode()).hexdigest()[:32]}.json"

    def get(self, query: str, page: int, per_page: int) -> dict | None:
        """The cached entry ({request, fetched, response}) or None."""
        path = self.path(query, page, per_page)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if entry.get("request") != self._request(query, page, per_page):
            return None
        return entry

    def put(self, query: str, page: int, per_page: int, response: dict) -> dict:
        """Store one response atomically; returns the entry."""
        entry = {
            "request": self._request(query, page, per_page),
            "fetched": now_iso(),
            "response": response,
        }
        # Compact JSON: the C encoder (write_json's indented output is ~30x slower on 500 records).
        with atomic_path(self.path(query, page, per_page)) as tmp:
            tmp.write_text(
                json.dumps(entry, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
            )
        return entry


# --------------------------------------------------------------------------- one species' crawl


@dataclass
class SpeciesCrawl:
    """The pages of one species' query: records (with their page) and the counts seen."""

    label: str
    scientific_name: str
    query: str
    totals: list[int] = field(default_factory=list)
    num_pages: int = 0
    pages_fetched: int = 0
    pages_cached: int = 0
    fetched_at: list[str] = field(default_factory=list)
    records: list[tuple[int, dict]] = field(default_factory=list)

    @property
    def declared(self) -> int:
        """The last `numRecordings` the API gave for this query."""
        return self.totals[-1] if self.totals else 0

    @property
    def count_changed(self) -> bool:
        """Whether `numRecordings` changed between the pages of this crawl."""
        return len(set(self.totals)) > 1


def crawl_species(
    client: XenoCantoClient,
    cache: PageCache,
    label: str,
    scientific_name: str,
    query: str,
    per_page: int,
    on_page: Callable[[SpeciesCrawl], None] | None = None,
) -> SpeciesCrawl:
    """Every page 1..numPages of one query (cached pages are not asked again).

    `numPages` is re-read from every page, so pages added during the crawl are
    fetched too; every page's `numRecordings` is kept in `totals`.
    """
    crawl = SpeciesCrawl(label, scientific_name, query)
    page = 1
    num_pages = 1
    while page <= num_pages:
        entry = cache.get(query, page, per_page)
        if entry is None:
            entry = cache.put(query, page, per_page, client.get_page(query, page, per_page))
            crawl.pages_fetched += 1
        else:
            crawl.pages_cached += 1
        data = entry["response"]
        crawl.fetched_at.append(entry["fetched"])
        crawl.totals.append(int(data.get("numRecordings") or 0))
        num_pages = int(data.get("numPages") or 0)
        recordings = data.get("recordings") or []
        if not recordings and page < num_pages:
            log.warning("%r page %d of %d is empty", query, page, num_pages)
        crawl.records.extend((page, record) for record in recordings)
        crawl.num_pages = max(num_pages, page)
        if on_page is not None:
            on_page(crawl)
        page += 1
    return crawl

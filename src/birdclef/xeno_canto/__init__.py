"""xeno-canto scraper stage: every record of every competition species, politely and resumably.

The `xc_scrape` stage extends the training catalog with recordings from the
xeno-canto API v3 (`GET <base_url>?query=...&key=...&per_page=...&page=...`):

1. one tag query per taxonomy species (`sp:"genus species"`, plus `grp:` from
   `grp_by_class` and the free `extra_query` tags), every page 1..numPages,
   de-duplicated by recording id across pages and species; the collected count
   is compared with `numRecordings` and a total that changed during the crawl
   is recorded in the manifest;
2. one shared rate limiter for every HTTP request of the stage (API pages,
   downloads and each redirect hop), retries with exponential backoff on 429,
   5xx, timeouts and dropped connections, honouring `Retry-After`; 401 and 400
   stop the stage with the API's message. The key is read from an environment
   variable and masked in every log line and error message;
3. filters (in this order, each skip counted under its reason):
   `unknown_species`, `in_train`, `restricted`, `license`, `quality`,
   `too_long`, `species_cap`, then at download time `download_failed` and
   `corrupt_audio`;
4. downloads (redirects followed), converted to 32 kHz mono Ogg Vorbis and
   written as `<primary_label>/XC<id>.ogg` rows in train.csv's schema, plus
   the raw API metadata as parquet.

Resume: everything fetched is cached outside the stage's declared outputs (by
default `<dirname(out_rows)>/cache/`): API pages as JSON keyed by a hash of the
request, each recording converted to Ogg once (written atomically, verified on
reuse), undecodable downloads remembered with their reason. A killed run
restarted asks the server for nothing it already has and ends with the same
table.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urljoin

import pandas as pd
import requests
import soundfile as sf

from birdclef import __version__
from birdclef.catalog import TRAIN_COLUMNS, DataError, read_taxonomy
from birdclef.common.io import atomic_dir, atomic_path, read_json, write_json, write_parquet
from birdclef.common.manifest import StageManifest, now_iso
from birdclef.common.progress import progress_bar
from birdclef.runtime.audio import BadAudioError, read_audio, write_ogg

log = logging.getLogger(__name__)

SAMPLE_RATE = 32000
# Put the project's public URL here once it has one; the User-Agent names it.
PROJECT_URL = ""
USER_AGENT = (
    f"birdclef-pipeline/{__version__} "
    f"({'+' + PROJECT_URL + '; ' if PROJECT_URL else ''}BirdCLEF research scraper; "
    f"python-requests/{requests.__version__})"
)

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
    "snapshot": None,
    "download_workers": 1,
    "timeout_seconds": 60.0,
    "max_retries": 6,
    "backoff_seconds": 1.0,
}

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
RATINGS = {"A": 5.0, "B": 4.0, "C": 3.0, "D": 2.0, "E": 1.0}
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 10
MAX_WAIT_SECONDS = 900.0
TAG_TOKEN = re.compile(r'\s*([A-Za-z][\w-]*):("[^"]*"|[^\s"]+)\s*')
SPECIES_NAME = re.compile(r"^[A-Z][a-z-]+ (?!spp?$|spp? )[a-z-]+( [a-z-]+)?$")


class XenoCantoError(RuntimeError):
    """The API refused a request (bad key, bad query) or kept failing; the key is masked."""


class DownloadFailedError(RuntimeError):
    """An audio file could not be downloaded (HTTP error or retries exhausted)."""


class _TransientError(Exception):
    """A failure worth retrying (429, 5xx, truncated body), with the server's Retry-After."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


# --------------------------------------------------------------------------- small parsers


def parse_length(value: object) -> float | None:
    """Seconds of an xeno-canto `length` ("0:33", "1:02:33", "45"); None when absent."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def license_name(lic: object) -> str:
    """BirdCLEF's licence spelling ("cc-by-nc-sa 4.0") of an xeno-canto `lic` URL."""
    text = str(lic or "").strip()
    match = re.search(r"creativecommons\.org/licenses/([a-z-]+)/([\d.]+)", text, re.IGNORECASE)
    if match:
        return f"cc-{match.group(1).lower()} {match.group(2)}"
    match = re.search(r"creativecommons\.org/publicdomain/zero/([\d.]+)", text, re.IGNORECASE)
    if match:
        return f"cc0 {match.group(1)}"
    return text


def license_excluded(lic: object, exclusions: Iterable[str]) -> bool:
    """Whether a licence matches an exclusion: a component ("nd"), a code ("by-nc-nd") or a name."""
    name = license_name(lic).lower()
    code = name.split(" ")[0].removeprefix("cc-")
    parts = set(code.split("-"))
    for token in exclusions:
        token = str(token).strip().lower()
        if token and (token in parts or token in (code, name, f"cc-{code}")):
            return True
    return False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def xc_id_of(value: object) -> int | None:
    """The xeno-canto id in a train.csv filename ("1139490/XC123456.ogg") or url (".../123456")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    match = re.search(r"XC(\d+)", text, re.IGNORECASE)
    if match:
        return int(match.group(1))
    match = re.search(r"xeno-canto\.org/(\d+)", text, re.IGNORECASE)
    if match:
        return int(match.group(1))
    return None


def train_xc_ids(train: pd.DataFrame) -> set[int]:
    """Every xeno-canto id of the competition's recordings (from filename or url)."""
    ids: set[int] = set()
    for column in ("filename", "url"):
        if column in train.columns:
            ids.update(i for i in map(xc_id_of, train[column]) if i is not None)
    return ids


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


def _float_or_nan(value: object) -> float:
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return result if math.isfinite(result) else float("nan")


def _https(url: object, base: str) -> str:
    text = str(url or "").strip()
    if text.startswith("//"):
        return "https:" + text
    return urljoin(base, text) if text else ""


# --------------------------------------------------------------------------- HTTP


class RateLimiter:
    """At most `requests_per_second` request starts per second across every thread.

    A token bucket of depth one: a request may start once one interval (1%
    longer than 1/rate, a margin for network jitter) has passed since the
    previous start. The slot is claimed when the caller is actually about to
    send (after its sleep), so a thread that wakes late pushes the next slot
    back instead of sending two requests close together. `defer` holds every
    later request (for a 429's Retry-After). A rate of None or 0 lifts the
    limit.
    """

    SAFETY = 1.01

    def __init__(
        self,
        requests_per_second: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        rate = requests_per_second or 0.0
        self.interval = self.SAFETY / rate if rate > 0 and math.isfinite(rate) else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until this caller may send a request; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                if now >= self._next:
                    if self.interval > 0:
                        self._next = now + self.interval
                    return waited
                delay = self._next - now
            self._sleep(delay)
            waited += delay

    def defer(self, seconds: float) -> None:
        """Hold every request for `seconds` from now (the server asked us to wait)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


class _MaskFilter(logging.Filter):
    """Replaces the API key in records of other loggers (urllib3 logs full URLs at DEBUG)."""

    def __init__(self, mask: Callable[[str], str]) -> None:
        super().__init__()
        self._mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the key in the formatted message; never drops a record."""
        record.msg = self._mask(record.getMessage())
        record.args = None
        return True


class XenoCantoClient:
    """A polite xeno-canto API v3 client: shared rate limit, retries, masked key.

    Every request (API page, download, each redirect hop, each retry) waits
    for the shared `RateLimiter`. 429, 5xx, timeouts and dropped connections
    are retried up to `max_retries` times with exponential backoff from
    `backoff_seconds` (or the server's `Retry-After`). Other errors on the API
    stop with the API's message (`XenoCantoError`); on downloads they raise
    `DownloadFailedError`. Thread-safe: each thread gets its own `requests.Session`.
    """

    def __init__(
        self,
        base_url: str,
        key: str | None,
        requests_per_second: float | None = 1.0,
        timeout_seconds: float = 60.0,
        max_retries: int = 6,
        backoff_seconds: float = 1.0,
        key_env: str = "XC_API_KEY",
        user_agent: str = USER_AGENT,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.base_url = base_url
        self._key = key or None
        self.key_env = key_env
        self.timeout = float(timeout_seconds)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff_seconds)
        self.user_agent = user_agent
        self.limiter = limiter or RateLimiter(requests_per_second)
        self.stats: Counter[str] = Counter()
        self.status_counts: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._filter = _MaskFilter(self.mask)
        for name in ("urllib3.connectionpool", "urllib3", "requests"):
            logging.getLogger(name).addFilter(self._filter)

    # -- housekeeping
    def close(self) -> None:
        """Close every session and remove the log filter."""
        for session in self._sessions:
            session.close()
        self._sessions.clear()
        for name in ("urllib3.connectionpool", "urllib3", "requests"):
            logging.getLogger(name).removeFilter(self._filter)

    def __enter__(self) -> XenoCantoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def session(self) -> requests.Session:
        """This thread's session (User-Agent set)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
            with self._stats_lock:
                self._sessions.append(session)
        return session

    def mask(self, text: object) -> str:
        """`text` with the API key (plain or URL-encoded) replaced by ***."""
        text = str(text)
        if self._key:
            for form in {self._key, quote_plus(self._key), quote(self._key, safe="")}:
                text = text.replace(form, "***")
        return text

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += amount

    # -- the request loop
    def _send(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        what: str,
        kind: str,
        consume: Callable[[requests.Response], Any],
    ) -> Any:
        attempt = 0
        hops = 0
        while True:
            # One slot per request actually sent: the first, every redirect hop, every retry
            # (redirects are followed here, never inside requests, so none bypasses the limiter).
            self.limiter.wait()
            try:
                self._count("requests")
                self._count(f"{kind}_requests")
                response = self.session.get(
                    url,
                    params=params,
                    timeout=(self.timeout, self.timeout),
                    stream=True,
                    allow_redirects=False,
                )
                with self._stats_lock:
                    self.status_counts[str(response.status_code)] += 1
                if response.is_redirect:
                    hops += 1
                    location = response.headers["location"]
                    response.close()
                    if hops > MAX_REDIRECTS:
                        message = self.mask(
                            f"{what}: more than {MAX_REDIRECTS} redirects (expected the "
                            f"{'file' if kind == 'download' else 'JSON page'} by then; "
                            f"{response.url} redirects to {location!r})"
                        )
                        if kind == "download":
                            raise DownloadFailedError(message)
                        raise XenoCantoError(message)
                    # Relative Locations are resolved against the URL that answered.
                    url, params = urljoin(response.url, location), None
                    self._count("redirects")
                    continue
                if response.status_code in RETRY_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    response.close()
                    raise _TransientError(
                        f"HTTP {response.status_code}", retry_after, response.status_code
                    )
                try:
                    return consume(response)
                finally:
                    response.close()
            except (
                _TransientError,
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as error:
                if isinstance(error, requests.Timeout):
                    self._count("timeouts")
                if attempt >= self.max_retries:
                    message = f"{what}: gave up after {attempt + 1} tries ({self.mask(error)})"
                    if kind == "download":
                        raise DownloadFailedError(message) from None
                    raise XenoCantoError(message) from None
                retry_after = getattr(error, "retry_after", None)
                delay = min(self.backoff * 2**attempt, MAX_WAIT_SECONDS)
                if retry_after is not None:
                    delay = min(retry_after, MAX_WAIT_SECONDS)
                if getattr(error, "status", None) == 429:
                    # Too many requests: every thread waits, not only this one.
                    self.limiter.defer(delay)
                log.warning(
                    "%s: %s; retry %d/%d in %.2f s%s",
                    what,
                    self.mask(error),
                    attempt + 1,
                    self.max_retries,
                    delay,
                    " (Retry-After)" if retry_after is not None else "",
                )
                self._count("retries")
                time.sleep(delay)
                attempt += 1
            except requests.RequestException as error:
                # Not worth retrying (invalid URL, too many redirects...); the key is masked.
                message = f"{what}: {self.mask(error)}"
                if kind == "download":
                    raise DownloadFailedError(message) from None
                raise XenoCantoError(message) from None

    # -- the API
    def get_page(self, query: str, page: int, per_page: int) -> dict:
        """One page of API results for a tag `query`, as parsed JSON.

        Raises `XenoCantoError` with the API's message on 401 (missing or bad
        key), 400 (bad query) and any other non-retryable answer.
        """
        if not self._key:
            raise XenoCantoError(
                f"no xeno-canto API key: set the environment variable {self.key_env} to your key "
                "(https://xeno-canto.org/account); it is read from the environment only"
            )
        what = f"xeno-canto page {page} of {query!r}"
        params = {"query": query, "key": self._key, "per_page": int(per_page), "page": int(page)}

        def consume(response: requests.Response) -> dict:
            if response.status_code != 200:
                message = _api_message(response)
                hint = ""
                if response.status_code in (401, 403):
                    hint = f"; check the API key in the environment variable {self.key_env}"
                elif response.status_code == 400:
                    hint = (
                        "; check the query (xeno_canto.extra_query, the taxonomy's scientific_name)"
                    )
                raise XenoCantoError(
                    self.mask(f"{what}: HTTP {response.status_code}: {message}{hint}")
                )
            try:
                data = response.json()
            except ValueError as error:
                raise _TransientError(f"answer is not JSON ({error})") from None
            if not isinstance(data, dict) or "recordings" not in data or "numPages" not in data:
                raise XenoCantoError(
                    self.mask(f"{what}: unexpected answer (keys {sorted(data)[:10]})")
                    if isinstance(data, dict)
                    else f"{what}: unexpected answer"
                )
            return data

        data = self._send(self.base_url, params, what, "api", consume)
        self._count("pages")
        return data

    def download(self, url: str, dest: str | os.PathLike) -> int:
        """Download `url` (redirects followed) atomically to `dest`; returns the byte count.

        The key is never sent to download URLs. A body shorter than its
        Content-Length is retried. Raises `DownloadFailedError` on HTTP errors and
        when retries run out.
        """
        what = f"download {url}"

        def consume(response: requests.Response) -> int:
            if response.status_code != 200:
                via = f" from {response.url}" if response.url != url else ""
                raise DownloadFailedError(
                    f"{what}: HTTP {response.status_code}{via} (expected 200 with the audio file)"
                )
            expected = response.headers.get("Content-Length")
            size = 0
            with atomic_path(dest) as tmp:
                with open(tmp, "wb") as handle:
                    for block in response.iter_content(chunk_size=1 << 16):
                        handle.write(block)
                        size += len(block)
                if expected is not None and expected.isdigit() and int(expected) != size:
                    raise _TransientError(f"truncated body ({size} of {expected} bytes)")
                if size == 0:
                    raise DownloadFailedError(f"{what}: empty body")
            return size

        size = self._send(url, None, what, "download", consume)
        self._count("downloads")
        self._count("bytes_downloaded", size)
        return size


def _api_message(response: requests.Response) -> str:
    """The API's error message from a JSON error body (or the start of the text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason or ""
    if isinstance(body, dict):
        error = body.get("error")
        message = body.get("message")
        if isinstance(error, dict):
            message = message or error.get("message")
            error = error.get("code")
        return ": ".join(str(x) for x in (error, message) if x) or json.dumps(body)[:300]
    return json.dumps(body)[:300]


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


# --------------------------------------------------------------------------- the stage


@dataclass
class _Species:
    label: str
    scientific_name: str
    common_name: str
    class_name: str


def _read_species(taxonomy_csv: str | os.PathLike) -> list[_Species]:
    labels = read_taxonomy(taxonomy_csv)
    frame = pd.read_csv(taxonomy_csv, dtype=str, keep_default_na=False)
    if "scientific_name" not in frame.columns:
        raise DataError(
            f"{taxonomy_csv}: no scientific_name column; the xeno-canto stage queries the API by "
            "scientific name (BirdCLEF 2025 taxonomy.csv has primary_label, inat_taxon_id, "
            "scientific_name, common_name, class_name)"
        )
    rows = frame.set_index(frame["primary_label"].astype(str))
    return [
        _Species(
            label,
            " ".join(str(rows.at[label, "scientific_name"]).split()),
            str(rows.at[label, "common_name"]) if "common_name" in rows.columns else "",
            str(rows.at[label, "class_name"]) if "class_name" in rows.columns else "",
        )
        for label in labels
    ]


def _name_index(species: list[_Species]) -> dict[str, str]:
    """Lower-case scientific name (and unambiguous binomial of a trinomial) -> primary_label."""
    index: dict[str, str] = {}
    binomials: dict[str, set[str]] = {}
    for sp in species:
        name = sp.scientific_name.lower()
        index.setdefault(name, sp.label)
        words = name.split()
        if len(words) > 2:
            binomials.setdefault(" ".join(words[:2]), set()).add(sp.label)
    for name, labels in binomials.items():
        if name not in index and len(labels) == 1:
            index[name] = next(iter(labels))
    return index


def _map_name(index: Mapping[str, str], name: str) -> str | None:
    words = " ".join(str(name).split()).lower()
    if words in index:
        return index[words]
    parts = words.split()
    if len(parts) > 2:
        return index.get(" ".join(parts[:2]))
    return None


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
    if not re.match(r"^https?://", str(resolved["base_url"])):
        raise ValueError(
            f"xeno_canto.base_url must start with http:// or https://, got {resolved['base_url']!r}"
        )
    return resolved


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


def _metadata_frame(entries: list[dict]) -> pd.DataFrame:
    """Raw API records as strings (nested values JSON-encoded) plus crawl columns."""
    rows = []
    for entry in entries:
        row: dict[str, Any] = {
            "xc_id": entry["xc_id"],
            "query_label": entry["query_label"],
            "query": entry["query"],
            "page": entry["page"],
            "status": entry["status"],
            "primary_label": entry.get("primary_label"),
            "filename": entry.get("filename"),
        }
        for key, value in entry["record"].items():
            if isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False, sort_keys=True)
            row[f"xc_{key}" if key in row else key] = None if value is None else str(value)
        rows.append(row)
    lead = ["xc_id", "query_label", "query", "page", "status", "primary_label", "filename"]
    raw = sorted({key for row in rows for key in row} - set(lead))
    frame = pd.DataFrame(rows, columns=lead + raw)
    frame["xc_id"] = frame["xc_id"].astype("int64")
    frame["page"] = frame["page"].astype("int64")
    for column in frame.columns:
        if column not in ("xc_id", "page"):
            frame[column] = frame[column].astype("string")
    return frame


def _row(record: Mapping[str, Any], xc_id: int, sp: _Species, names: Mapping[str, str]) -> dict:
    also = record.get("also") or []
    if isinstance(also, str):
        also = [a for a in re.split(r"[,;]", also) if a.strip()]
    secondary: list[str] = []
    for name in also:
        label = _map_name(names, name)
        if label is not None and label != sp.label and label not in secondary:
            secondary.append(label)
    types = [t.strip() for t in str(record.get("type") or "").split(",") if t.strip()]
    return {
        "primary_label": sp.label,
        "secondary_labels": str(secondary),
        "type": str(types),
        "filename": f"{sp.label}/XC{xc_id}.ogg",
        "collection": "XC",
        "rating": RATINGS.get(str(record.get("q") or "").strip().upper(), 0.0),
        "url": _https(record.get("url"), "https://xeno-canto.org/")
        or f"https://xeno-canto.org/{xc_id}",
        "latitude": _float_or_nan(record.get("lat")),
        "longitude": _float_or_nan(record.get("lon", record.get("lng"))),
        "scientific_name": sp.scientific_name,
        "common_name": sp.common_name or str(record.get("en") or ""),
        "author": str(record.get("rec") or ""),
        "license": license_name(record.get("lic")),
    }


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
    """
    s = resolve_settings(settings)
    manifest = StageManifest("xc_scrape", tag, s, {}, [train_csv, taxonomy_csv])
    manifest.data["key_env"] = key_env
    cache_root = Path(cache_dir) if cache_dir is not None else Path(out_rows).parent / "cache"
    cache_root.mkdir(parents=True, exist_ok=True)
    audio_cache = _AudioCache(cache_root)
    out_audio = Path(out_audio)
    for stale in out_audio.parent.glob(f".{out_audio.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    crawl_file = cache_root / "crawl.json"
    if not crawl_file.is_file():
        write_json(crawl_file, {"started": now_iso()})
    crawl_started = read_json(crawl_file)["started"]

    # -- species to query
    species = _read_species(taxonomy_csv)
    names = _name_index(species)
    by_label = {sp.label: sp for sp in species}
    train = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    in_train = train_xc_ids(train)
    train_counts = (
        train["primary_label"].value_counts().to_dict() if "primary_label" in train else {}
    )
    chosen = species
    if s["species"] is not None:
        missing = sorted(set(s["species"]) - set(by_label))
        if missing:
            raise DataError(
                f"xeno_canto.species lists {missing}, which taxonomy.csv {taxonomy_csv} lacks"
            )
        wanted = set(s["species"])
        chosen = [sp for sp in species if sp.label in wanted]
    skipped_species: dict[str, list[str]] = {
        "enough_train_recordings": [],
        "not_a_species_name": [],
    }
    queried: list[_Species] = []
    for sp in chosen:
        if (
            s["only_species_below"] is not None
            and train_counts.get(sp.label, 0) >= s["only_species_below"]
        ):
            skipped_species["enough_train_recordings"].append(sp.label)
        elif not SPECIES_NAME.match(sp.scientific_name):
            skipped_species["not_a_species_name"].append(sp.label)
        else:
            queried.append(sp)
    if skipped_species["not_a_species_name"]:
        log.warning(
            "not queried (scientific_name is not 'Genus species'): %s",
            skipped_species["not_a_species_name"][:20],
        )

    key = os.environ.get(key_env) or None
    client = XenoCantoClient(
        s["base_url"],
        key,
        requests_per_second=s["requests_per_second"],
        timeout_seconds=s["timeout_seconds"],
        max_retries=s["max_retries"],
        backoff_seconds=s["backoff_seconds"],
        key_env=key_env,
    )
    pages = PageCache(cache_root / "pages", s["base_url"], s["snapshot"])
    try:
        crawls = _crawl_all(client, pages, queried, s, progress)
        result = _select_and_fetch(
            client, audio_cache, crawls, names, by_label, in_train, s, progress
        )
    finally:
        client.close()

    # -- outputs
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

    fetched = [t for c in crawls for t in c.fetched_at]
    audio_bytes = sum((out_audio / f).stat().st_size for f in rows["filename"])
    skipped = {reason: int(result["skipped"].get(reason, 0)) for reason in SKIP_REASONS}
    headline = {
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
        "requests": {
            "total": client.stats["requests"],
            "api": client.stats["api_requests"],
            "download": client.stats["download_requests"],
            "retries": client.stats["retries"],
            "timeouts": client.stats["timeouts"],
            "redirects": client.stats["redirects"],
            "by_status": dict(sorted(client.status_counts.items())),
            "requests_per_second_limit": s["requests_per_second"],
        },
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
    manifest.data["crawl_date"] = headline["crawl_date"]
    manifest.data["species"] = result["per_species"]
    manifest.data["skipped_species"] = skipped_species
    manifest.data["user_agent"] = client.user_agent
    manifest.headline.update(headline)
    manifest.write(out_manifest)
    for change in headline["count_changes"]:
        log.warning(
            "numRecordings of %s changed during the crawl: %s",
            change["primary_label"],
            change["totals"],
        )
    log.info(
        "xc_scrape: %d species, %d pages (%d fetched), %d records found, %d kept, skipped %s",
        len(queried),
        headline["pages"]["total"],
        headline["pages"]["fetched"],
        result["found"],
        len(rows),
        {k: v for k, v in skipped.items() if v},
    )
    return headline


def _progress(progress: bool, **kwargs: Any):
    """A tqdm bar on a terminal, log lines otherwise (birdclef.common.progress); silent when off."""
    return progress_bar(disable=not progress, mininterval=1.0, dynamic_ncols=True, **kwargs)


def _crawl_all(
    client: XenoCantoClient,
    pages: PageCache,
    queried: list[_Species],
    s: Mapping[str, Any],
    progress: bool,
) -> list[SpeciesCrawl]:
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

        for sp in queried:
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
) -> dict:
    quality = {str(q).strip().lower() for q in s["quality"]}
    seen: dict[int, dict] = {}
    entries: list[dict] = []
    skipped: Counter[str] = Counter()
    duplicates_pages = duplicates_species = 0
    mismatches = []
    per_species: dict[str, dict] = {}
    candidates: dict[str, list[dict]] = {}
    for crawl in crawls:
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
                duplicates_pages += 1
                continue
            ids_in_query.add(xc_id)
            if xc_id in seen:
                duplicates_species += 1
                continue
            entry = {
                "xc_id": xc_id,
                "query_label": crawl.label,
                "query": crawl.query,
                "page": page,
                "record": record,
                "status": None,
            }
            seen[xc_id] = entry
            entries.append(entry)
            name = " ".join(str(record.get(k) or "") for k in ("gen", "sp", "ssp")).strip()
            label = _map_name(names, name)
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
            entry["primary_label"] = label
            if reason is None:
                candidates.setdefault(label, []).append(entry)
            else:
                entry["status"] = reason
                skipped[reason] += 1
        if len(ids_in_query) != crawl.declared:
            mismatches.append(
                {
                    "primary_label": crawl.label,
                    "declared": crawl.declared,
                    "found": len(ids_in_query),
                }
            )
        per_species[crawl.label] = {
            "query": crawl.query,
            "pages": crawl.num_pages,
            "declared": crawl.declared,
            "totals_seen": sorted(set(crawl.totals)),
            "found": len(ids_in_query),
        }

    # -- per-species cap: best rating first, then oldest id
    to_fetch: list[dict] = []
    cap = s["max_records_per_species"]
    for label in sorted(candidates):
        ranked = sorted(
            candidates[label],
            key=lambda e: (-RATINGS.get(str(e["record"].get("q") or "").upper(), 0.0), e["xc_id"]),
        )
        for rank, entry in enumerate(ranked):
            if cap is not None and rank >= cap:
                entry["status"] = "species_cap"
                skipped["species_cap"] += 1
            else:
                to_fetch.append(entry)
    to_fetch.sort(key=lambda e: e["xc_id"])

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
                sp = by_label[entry["primary_label"]]
                row = _row(entry["record"], entry["xc_id"], sp, names)
                entry["status"] = "kept"
                entry["filename"] = row["filename"]
                rows.append(row)
            bar.set_postfix(mb=f"{client.stats['bytes_downloaded'] / 1e6:.1f}", refresh=False)
            bar.update(1)
    kept_per_label = Counter(row["primary_label"] for row in rows)
    for crawl in crawls:
        per_species[crawl.label]["kept"] = kept_per_label.get(crawl.label, 0)
    return {
        "rows": rows,
        "entries": entries,
        "skipped": skipped,
        "found": len(seen),
        "duplicates_pages": duplicates_pages,
        "duplicates_species": duplicates_species,
        "mismatches": mismatches,
        "per_species": per_species,
        "downloads": {
            k: int(downloads.get(k, 0)) for k in ("downloaded", "cached", "failed", "failed_cached")
        },
    }


__all__ = [
    "DEFAULT_SETTINGS",
    "DownloadFailedError",
    "PageCache",
    "RateLimiter",
    "SKIP_REASONS",
    "SpeciesCrawl",
    "USER_AGENT",
    "XenoCantoClient",
    "XenoCantoError",
    "build_query",
    "check_extra_query",
    "crawl_species",
    "license_excluded",
    "license_name",
    "parse_length",
    "parse_retry_after",
    "resolve_settings",
    "scrape_stage",
    "train_xc_ids",
    "xc_id_of",
]

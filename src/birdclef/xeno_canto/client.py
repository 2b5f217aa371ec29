"""The polite HTTP client of the xeno-canto API v3: sessions, redirects, retries, masked key."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urljoin

import requests

from birdclef import __version__
from birdclef.common.io import atomic_path
from birdclef.xeno_canto.limiter import RateLimiter
from birdclef.xeno_canto.parsers import parse_retry_after

log = logging.getLogger(__name__)

# Put the project's public URL here once it has one; the User-Agent names it.
PROJECT_URL = ""
USER_AGENT = (
    f"birdclef-pipeline/{__version__} "
    f"({'+' + PROJECT_URL + '; ' if PROJECT_URL else ''}BirdCLEF research scraper; "
    f"python-requests/{requests.__version__})"
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 10
MAX_WAIT_SECONDS = 900.0


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


# The failures `XenoCantoClient._send` retries.
_RETRIED = (
    _TransientError,
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


def _failure(kind: str, message: str) -> RuntimeError:
    """The error of a failed request: `DownloadFailedError` on downloads, else `XenoCantoError`."""
    if kind == "download":
        return DownloadFailedError(message)
    return XenoCantoError(message)


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
                response = self._get(url, params, kind)
                if response.is_redirect:
                    hops += 1
                    url, params = self._redirect(response, hops, what, kind)
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
            except _RETRIED as error:
                self._wait_to_retry(error, attempt, what, kind)
                attempt += 1
            except requests.RequestException as error:
                # Not worth retrying (invalid URL, too many redirects...); the key is masked.
                raise _failure(kind, f"{what}: {self.mask(error)}") from None

    def _get(self, url: str, params: Mapping[str, Any] | None, kind: str) -> requests.Response:
        """Send one GET (redirects not followed, body streamed), counting it and its status."""
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
        return response

    def _redirect(
        self, response: requests.Response, hops: int, what: str, kind: str
    ) -> tuple[str, None]:
        """The (url, params) of the next hop of a redirect; fails past `MAX_REDIRECTS` hops."""
        location = response.headers["location"]
        response.close()
        if hops > MAX_REDIRECTS:
            message = self.mask(
                f"{what}: more than {MAX_REDIRECTS} redirects (expected the "
                f"{'file' if kind == 'download' else 'JSON page'} by then; "
                f"{response.url} redirects to {location!r})"
            )
            raise _failure(kind, message)
        # Relative Locations are resolved against the URL that answered.
        url, params = urljoin(response.url, location), None
        self._count("redirects")
        return url, params

    def _wait_to_retry(self, error: Exception, attempt: int, what: str, kind: str) -> None:
        """Sleep before retry `attempt + 1` (backoff or Retry-After); fails when retries ran out."""
        if isinstance(error, requests.Timeout):
            self._count("timeouts")
        if attempt >= self.max_retries:
            message = f"{what}: gave up after {attempt + 1} tries ({self.mask(error)})"
            raise _failure(kind, message) from None
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

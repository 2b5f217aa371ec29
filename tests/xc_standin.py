"""A local stand-in for the xeno-canto API v3, for the tests, the workflow test and the benchmark.

Real HTTP on 127.0.0.1 (ephemeral port, `ThreadingHTTPServer` in a daemon
thread). It behaves like the real API where the scraper cares:

* `GET /api/3/recordings?query=...&key=...&per_page=...&page=...`: 401 with a
  JSON `{error, message}` without the right key, 400 for a missing or untagged
  query, an unknown tag or `per_page` outside 50..500; otherwise
  `{"numRecordings": "<str>", "numSpecies": "<str>", "page": int, "numPages":
  int, "recordings": [...]}` with the real field names (id, gen, sp, ssp, grp,
  en, rec, cnt, loc, lat, lon, alt, type, sex, stage, method, url, file,
  file-name, sono, osci, lic, q, length, time, date, uploaded, also, rmk,
  animal-seen, playback-used, temp, regnr, auto, dvc, mic, smp). Tags:
  sp ("genus species" or an epithet with gen), gen, ssp, grp, q, cnt, len. A query
  without sp (the scraper's query mode, e.g. `cnt:"Brazil" grp:birds`) answers
  every species' matching records, paged like any other.
* `GET /<id>/download`: the audio (MP3, FLAC or WAV bytes made with
  soundfile, 0.2-0.6 s, 22.05-48 kHz, mono or stereo); the "redirect" special answers 302
  to `/sounds/uploaded/<token>/<file-name>`; the "corrupt" special serves bytes
  that are no audio. A redirect carries a small HTML body, as real servers send.
* `redirect_all=True`: like the real site, EVERY download is a redirect plus a
  file: `/<id>/download` answers 302 with an absolute URL of the file, or, for
  ids divisible by 3, a chain of two hops: 302 to `/sounds/hop/<id>`, which
  answers 302 with a relative `Location` (`../uploaded/<token>/<file-name>`).

Specials (`specials=True`, in the `specials_species`, default the first): one
record each that is restricted (empty `file`), corrupt, redirecting, ND
licensed, quality E, too long (25 min), of a species outside any taxonomy
(`Ignotus ignotus`), plus `in_train` (a normal record the test lists in its
train.csv) and `duplicate` (also returned by the second species' query). Their
ids are in `server.special_ids`.

Faults: every `fail_503_every`-th API request answers 503; `retry_after`
makes the first request for page 2 of the first species answer 429 with
`Retry-After`; `slow_once` delays the first request for page 3 of the first
species by that many seconds (a client timeout); `grow` adds records to the
front of a species' list once its page 1 was served (the total changes during
the crawl); `stall_download_after=n` makes the download after the first n
complete ones send half its body and wait until `server.release()`.

Every request is logged with its arrival time (`time.monotonic()`, comparable
across processes on Linux) and the client's port (one per TCP connection) in
`server.requests`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soundfile as sf

DEFAULT_KEY = "standin-test-key-0123456789"
LICENSES = [
    "//creativecommons.org/licenses/by-nc-sa/4.0/",
    "//creativecommons.org/licenses/by/4.0/",
    "//creativecommons.org/licenses/by-nc/4.0/",
    "//creativecommons.org/licenses/by-sa/4.0/",
]
QUALITIES = ["A", "B", "C"]
# (soundfile format, extension, subtype) by id % 3; most real xeno-canto files are MP3.
AUDIO_FORMATS = [("MP3", "mp3", None), ("FLAC", "flac", "PCM_16"), ("WAV", "wav", "PCM_16")]
CONTENT_TYPES = {b"fLaC": "audio/flac", b"RIFF": "audio/x-wav"}
TYPES = ["song", "call", "call, song", "alarm call", "flight call"]
COUNTRIES = ["Colombia", "Brazil", "Peru", "Ecuador"]
KNOWN_TAGS = {"sp", "gen", "ssp", "grp", "q", "cnt", "len"}
TAG_TOKEN = re.compile(r'\s*([A-Za-z][\w-]*):("([^"]*)"|([^\s"]+))\s*')
SPECIAL_KINDS = (
    "restricted",
    "corrupt",
    "redirect",
    "nd_license",
    "low_quality",
    "too_long",
    "unknown_species",
    "in_train",
    "duplicate",
)


@dataclass
class RequestLog:
    """One request as the server saw it."""

    t: float
    kind: str  # api | download | redirect | other
    path: str
    params: dict[str, str]
    status: int = 0
    xc_id: int | None = None
    note: str = ""  # "slow": answered after a delay the client may not wait for
    user_agent: str = ""
    connection: int = 0  # the client's port: requests on one keep-alive connection share it


@dataclass
class StandinOptions:
    """How the stand-in behaves (see the module docstring)."""

    key: str = DEFAULT_KEY
    seed: int = 0
    first_id: int = 100001
    specials: bool = True
    specials_species: str | None = None
    groups: dict[str, str] = field(default_factory=dict)
    fail_503_every: int = 0
    retry_after: float | None = None
    slow_once: float = 0.0
    grow: dict[str, int] = field(default_factory=dict)
    stall_download_after: int | None = None
    redirect_all: bool = False
    audio_seconds: tuple[float, float] = (0.2, 0.6)


class StandinServer(ThreadingHTTPServer):
    """The server: generated records per species, the request log and the fault switches."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, species: dict[str, int], options: StandinOptions) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.options = options
        self.lock = threading.Lock()
        self.requests: list[RequestLog] = []
        self.api_count = 0
        self.downloads_done = 0
        self.stalled = threading.Event()
        self._release = threading.Event()
        self.stalled_id: int | None = None
        self._faults_done: set[str] = set()
        self._grown: set[str] = set()
        self._next_id = options.first_id
        self.species_names = list(species)
        self.records: dict[str, list[dict]] = {}
        self.by_id: dict[int, dict] = {}
        self.special_ids: dict[str, int] = {}
        self.corrupt_ids: set[int] = set()
        self.redirect_ids: set[int] = set()
        for name, count in species.items():
            self.records[name] = [self._make_record(name, i) for i in range(count)]
        if options.specials and self.species_names:
            self._add_specials()
        self.thread = threading.Thread(target=self.serve_forever, name="xc-standin", daemon=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up (timeouts, killed scrapers); report anything else."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    # -- addresses
    @property
    def root(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The API endpoint (what `xeno_canto.base_url` should be)."""
        return f"{self.root}/api/3/recordings"

    # -- records
    def _new_id(self) -> int:
        xc_id = self._next_id
        self._next_id += 1
        return xc_id

    def _make_record(self, name: str, index: int, xc_id: int | None = None) -> dict:
        xc_id = self._new_id() if xc_id is None else xc_id
        words = name.split()
        gen, sp = words[0], words[1].lower()
        ssp = words[2].lower() if len(words) > 2 else ""
        others = [n for n in self.species_names if n != name]
        also = []
        if index % 4 == 1 and others:
            also.append(others[index % len(others)])
        if index % 7 == 3:
            also.append("Nonexistens avis")
        root = self.root
        record = {
            "id": str(xc_id),
            "gen": gen,
            "sp": sp,
            "ssp": ssp,
            "grp": self.options.groups.get(name, "birds"),
            "en": f"{gen} {sp} (English)",
            "rec": f"Recordist {xc_id % 17}",
            "cnt": COUNTRIES[xc_id % len(COUNTRIES)],
            "loc": f"Site {xc_id % 31}",
            "lat": f"{-10 + (xc_id % 200) / 10:.4f}" if index % 10 != 9 else "",
            "lon": f"{-70 + (xc_id % 150) / 10:.4f}" if index % 10 != 9 else "",
            "alt": str(100 + xc_id % 2000),
            "type": TYPES[index % len(TYPES)],
            "sex": ["male", "female", "uncertain", ""][index % 4],
            "stage": "adult",
            "method": "field recording",
            "url": f"//xeno-canto.org/{xc_id}",
            "file": f"{root}/{xc_id}/download",
            "file-name": f"XC{xc_id}-{gen}-{sp}.{AUDIO_FORMATS[xc_id % 3][1]}",
            "sono": {
                size: f"//xeno-canto.org/sounds/uploaded/RECORDIST/ffts/XC{xc_id}-{size}.png"
                for size in ("small", "med", "large", "full")
            },
            "osci": {
                size: f"//xeno-canto.org/sounds/uploaded/RECORDIST/wave/XC{xc_id}-{size}.png"
                for size in ("small", "med", "large")
            },
            "lic": LICENSES[index % len(LICENSES)],
            "q": QUALITIES[index % len(QUALITIES)],
            "length": "0:01",
            "time": f"{5 + index % 12:02d}:{index % 60:02d}",
            "date": f"20{10 + index % 14}-0{1 + index % 9}-1{index % 10}",
            "uploaded": f"20{10 + index % 14}-0{1 + index % 9}-2{index % 9}",
            "also": also,
            "rmk": "" if index % 3 else "bird-seen:yes playback-used:no",
            "animal-seen": ["yes", "no", "unknown"][index % 3],
            "playback-used": ["no", "yes", "unknown"][index % 3],
            "temp": "",
            "regnr": "",
            "auto": "no",
            "dvc": "",
            "mic": "",
            "smp": str([22050, 44100, 48000, 32000][xc_id % 4]),
        }
        self.by_id[xc_id] = record
        return record

    def _add_specials(self) -> None:
        name = self.options.specials_species or self.species_names[0]
        records = self.records[name]
        if len(records) < 9:
            raise ValueError(
                f"the specials need a species with at least 9 records; {name} has {len(records)}"
            )
        special = dict(zip(SPECIAL_KINDS[:8], records[:8], strict=True))
        special["restricted"].update({"file": "", "file-name": ""})
        special["nd_license"]["lic"] = "//creativecommons.org/licenses/by-nc-nd/4.0/"
        special["low_quality"]["q"] = "E"
        special["too_long"]["length"] = "25:00"
        special["unknown_species"].update(
            {"gen": "Ignotus", "sp": "ignotus", "en": "Unknown Thing"}
        )
        for kind in ("corrupt", "redirect", "in_train"):
            special[kind]["q"] = "A"
        self.special_ids = {kind: int(r["id"]) for kind, r in special.items()}
        self.corrupt_ids.add(self.special_ids["corrupt"])
        self.redirect_ids.add(self.special_ids["redirect"])
        others = [n for n in self.species_names if n != name]
        duplicate = records[8]
        duplicate["q"] = "A"
        self.special_ids["duplicate"] = int(duplicate["id"])
        if others:
            self.records[others[0]].append(duplicate)

    # -- control
    def start(self) -> StandinServer:
        """Serve in a daemon thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (stalled downloads are released)."""
        self._release.set()
        self.shutdown()
        self.server_close()

    def release(self) -> None:
        """Let a stalled download finish (or fail on a closed socket)."""
        self._release.set()

    def log(self, kind: str | None = None, since: int = 0) -> list[RequestLog]:
        """The request log (optionally of one kind, from index `since`)."""
        with self.lock:
            entries = self.requests[since:]
        return [e for e in entries if kind is None or e.kind == kind]

    # -- API
    def answer_api(self, params: dict[str, str]) -> tuple[int, dict[str, str], Any, float]:
        """Status, headers, JSON body and a delay for one API request."""
        options = self.options
        with self.lock:
            self.api_count += 1
            count = self.api_count
        if params.get("key") != options.key:
            message = "Missing or invalid API key. Log in to xeno-canto to find your key on your account page."
            return 401, {}, {"error": "Unauthorized", "message": message}, 0.0
        query = params.get("query", "").strip()
        if not query:
            return 400, {}, {"error": "Bad Request", "message": "No query was specified."}, 0.0
        try:
            tags = _parse_query(query)
        except ValueError as error:
            return 400, {}, {"error": "Bad Request", "message": str(error)}, 0.0
        try:
            per_page = int(params.get("per_page", 100))
            page = int(params.get("page", 1))
        except ValueError:
            return (
                400,
                {},
                {"error": "Bad Request", "message": "per_page and page must be integers."},
                0.0,
            )
        if not 50 <= per_page <= 500:
            message = f"per_page must be between 50 and 500, got {per_page}."
            return 400, {}, {"error": "Bad Request", "message": message}, 0.0
        if page < 1:
            return 400, {}, {"error": "Bad Request", "message": "page must be at least 1."}, 0.0
        if options.fail_503_every and count % options.fail_503_every == 0:
            return 503, {}, None, 0.0
        first = self.species_names[0] if self.species_names else None
        is_first = first is not None and tags.get("sp", "").lower() == _binomial(first)
        delay = 0.0
        with self.lock:
            if (
                is_first
                and page == 2
                and options.retry_after is not None
                and "429" not in self._faults_done
            ):
                self._faults_done.add("429")
                return (
                    429,
                    {"Retry-After": f"{options.retry_after:g}"},
                    {
                        "error": "Too Many Requests",
                        "message": "Rate limit exceeded.",
                    },
                    0.0,
                )
            if is_first and page == 3 and options.slow_once and "slow" not in self._faults_done:
                self._faults_done.add("slow")
                delay = options.slow_once
        if "sp" in tags:
            # Like the real API's synonym handling: a species' query returns its list,
            # whatever names its records carry.
            words = tags["sp"].lower().split()
            lists = [
                self.records[name]
                for name in self.species_names
                if (len(words) >= 2 and _binomial(name) == " ".join(words[:2]))
                or (len(words) == 1 and _binomial(name).split()[1] == words[0])
            ]
        else:
            lists = [self.records[name] for name in self.species_names]
        matches = [r for records in lists for r in records if _matches(r, tags)]
        matches = list({r["id"]: r for r in matches}.values())
        total = len(matches)
        num_pages = max(1, math.ceil(total / per_page))
        body = {
            "numRecordings": str(total),
            "numSpecies": str(len({(r["gen"], r["sp"]) for r in matches})),
            "page": page,
            "numPages": num_pages,
            "recordings": matches[(page - 1) * per_page : page * per_page],
        }
        if page == 1:
            self._maybe_grow(tags)
        return 200, {}, body, delay

    def _maybe_grow(self, tags: dict[str, str]) -> None:
        for name, extra in self.options.grow.items():
            if tags.get("sp", "").lower() == _binomial(name) and name not in self._grown:
                with self.lock:
                    self._grown.add(name)
                    new = [self._make_record(name, 1000 + i) for i in range(extra)]
                    self.records[name] = new + self.records[name]

    # -- audio
    def audio_bytes(self, xc_id: int) -> bytes:
        """The file served for a recording (deterministic from the seed and id)."""
        rng = np.random.default_rng([self.options.seed, xc_id])
        if xc_id in self.corrupt_ids:
            return b"NOT AUDIO " + rng.bytes(4000)
        rate = [22050, 44100, 48000, 32000][xc_id % 4]
        low, high = self.options.audio_seconds
        n = int(rate * rng.uniform(low, high))
        t = np.arange(n) / rate
        tone = 0.3 * np.sin(2 * np.pi * (1500 + 40 * (xc_id % 50)) * t)
        wave = (tone + 0.02 * rng.standard_normal(n)).astype(np.float32)
        if xc_id % 5 == 0:
            wave = np.stack([wave, 0.8 * wave], axis=1)
        buffer = io.BytesIO()
        fmt, _, subtype = AUDIO_FORMATS[xc_id % 3]
        sf.write(buffer, wave, rate, format=fmt, subtype=subtype)
        return buffer.getvalue()


def _parse_query(query: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    position = 0
    while position < len(query):
        match = TAG_TOKEN.match(query, position)
        if not match:
            raise ValueError(
                'API v3 only supports tag-based searches, e.g. sp:"larus fuscus"; '
                f"could not parse {query[position:]!r}"
            )
        tag = match.group(1).lower()
        if tag not in KNOWN_TAGS:
            raise ValueError(f"Unknown search tag {tag!r}.")
        tags[tag] = (match.group(3) if match.group(3) is not None else match.group(4)).strip()
        position = match.end()
    if not ({"sp", "gen", "grp", "cnt"} & set(tags)):
        raise ValueError("A query needs at least one of sp, gen, grp or cnt.")
    return tags


def _binomial(name: str) -> str:
    return " ".join(name.lower().split()[:2])


def _matches(record: dict, tags: dict[str, str]) -> bool:
    """Whether a record passes the query's tags other than sp (handled by the species lists)."""
    if "gen" in tags and record["gen"].lower() != tags["gen"].lower():
        return False
    if "ssp" in tags and record["ssp"].lower() != tags["ssp"].lower():
        return False
    if "grp" in tags and record["grp"].lower() != tags["grp"].lower():
        return False
    if "q" in tags and record["q"] != tags["q"].upper():
        return False
    if "cnt" in tags and record["cnt"].lower() != tags["cnt"].lower():
        return False
    if "len" in tags:
        minutes, seconds = record["length"].split(":")
        length = int(minutes) * 60 + int(seconds)
        spec = tags["len"]
        if spec.startswith("<") and not length < float(spec[1:]):
            return False
        if spec.startswith(">") and not length > float(spec[1:]):
            return False
        if "-" in spec:
            low, high = (float(x) for x in spec.split("-"))
            if not low <= length <= high:
                return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: StandinServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        return

    def _record(self, kind: str, params: dict[str, str], xc_id: int | None = None) -> RequestLog:
        entry = RequestLog(
            self._arrival,
            kind,
            self.path.split("?")[0],
            params,
            0,
            xc_id,
            user_agent=self.headers.get("User-Agent", ""),
            connection=int(self.client_address[1]),
        )
        with self.server.lock:
            self.server.requests.append(entry)
        return entry

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        """Route one request: the API, a download, a redirect or 404."""
        self._arrival = time.monotonic()
        server = self.server
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if parts.path == "/api/3/recordings":
            logged = {k: v for k, v in params.items() if k != "key"}
            logged["key_ok"] = str(params.get("key") == server.options.key)
            entry = self._record("api", logged)
            status, headers, body, delay = server.answer_api(params)
            entry.status = status
            if delay:
                entry.note = "slow"
                time.sleep(delay)
            if body is None:
                payload = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
                self._send(status, payload, "text/html", headers)
            else:
                self._send(status, json.dumps(body).encode(), "application/json", headers)
            return
        match = re.fullmatch(r"/(\d+)/download", parts.path)
        hop = re.fullmatch(r"/sounds/hop/(\d+)", parts.path)
        uploaded = re.fullmatch(r"/sounds/uploaded/[^/]+/XC(\d+)-[^/]*", parts.path)
        if match or hop or uploaded:
            xc_id = int((match or hop or uploaded).group(1))
            if xc_id not in server.by_id:
                entry = self._record("download", params, xc_id)
                entry.status = 404
                self._send(404, b"not found", "text/plain")
                return
            location = self._redirect_location(xc_id, first=match is not None, hop=hop is not None)
            if location is not None:
                entry = self._record("redirect", params, xc_id)
                entry.status = 302
                body = f'<html><body><a href="{location}">Found</a></body></html>'.encode()
                self._send(302, body, "text/html", {"Location": location})
                return
            entry = self._record("download", params, xc_id)
            self._serve_audio(entry, xc_id)
            return
        entry = self._record("other", params)
        entry.status = 404
        self._send(404, b"not found", "text/plain")

    def _redirect_location(self, xc_id: int, first: bool, hop: bool) -> str | None:
        """Where a download or hop URL redirects (None: serve the file here)."""
        server = self.server
        name = server.by_id[xc_id]["file-name"]
        if hop:
            return f"../uploaded/ABCDEFGHIJ/{name}"
        if not first:
            return None
        if server.options.redirect_all:
            if xc_id % 3 == 0:
                return f"/sounds/hop/{xc_id}"
            return f"{server.root}/sounds/uploaded/ABCDEFGHIJ/{name}"
        if xc_id in server.redirect_ids:
            return f"/sounds/uploaded/ABCDEFGHIJ/{name}"
        return None

    def _serve_audio(self, entry: RequestLog, xc_id: int) -> None:
        server = self.server
        body = server.audio_bytes(xc_id)
        stall = False
        with server.lock:
            after = server.options.stall_download_after
            if after is not None and server.downloads_done >= after and not server.stalled.is_set():
                stall = True
                server.stalled_id = xc_id
        entry.status = 200
        content_type = CONTENT_TYPES.get(body[:4], "audio/mpeg")
        if not stall:
            self._send(200, body, content_type)
            with server.lock:
                server.downloads_done += 1
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        server.stalled.set()
        server._release.wait(timeout=60)
        with contextlib.suppress(OSError):
            self.wfile.write(body[half:])
        self.close_connection = True


def start_standin(species: dict[str, int], **options: Any) -> tuple[str, StandinServer]:
    """Start a stand-in with `species` (scientific name -> record count); returns (base_url, server).

    `options` are `StandinOptions` fields. Call `server.stop()` when done (or
    use `running_standin`).
    """
    server = StandinServer(dict(species), StandinOptions(**options)).start()
    return server.base_url, server


@contextlib.contextmanager
def running_standin(species: dict[str, int], **options: Any) -> Iterator[StandinServer]:
    """`start_standin` as a context manager that stops the server on exit."""
    _, server = start_standin(species, **options)
    try:
        yield server
    finally:
        server.stop()


def max_requests_in_window(times: list[float], window: float = 1.0) -> int:
    """The most request arrivals in any half-open interval [t, t + window)."""
    times = sorted(times)
    best = 0
    j = 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best

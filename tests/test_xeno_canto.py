"""Tests for the xeno-canto scraper stage (birdclef.xeno_canto) against a local stand-in API.

The stand-in (tests/xc_standin.py) is real HTTP on 127.0.0.1 with an ephemeral
port, started and stopped here. One module-scoped crawl (a species with 1,250
records = 3 pages of 500, intermittent 503s, a 429 with Retry-After, a read
timeout, the special records) feeds most assertions; the rate limit, a count
that changes mid-crawl and a kill mid-download each get their own small server.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pandas as pd
import pytest
import requests
import soundfile as sf

from birdclef import xeno_canto as xc
from birdclef.catalog import TRAIN_COLUMNS, load_train_table, read_taxonomy
from birdclef.common.labels import parse_label_list
from birdclef.xeno_canto import client as xc_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from xc_standin import max_requests_in_window, running_standin  # noqa: E402

# The stand-in server runs in the test's own process, so a request's logged arrival waits for
# the GIL and the CPU, shared with the client's workers (and on CI with another pytest worker
# training a model): CI once logged a request 80 ms late. The limiter's own spacing is checked
# exactly on a fake clock (test_rate_limiter_spaces_requests); the server-side checks allow
# 150 ms, still far too little for a client that skipped the limiter (a burst arrives within
# milliseconds) or ran it at twice the rate (a 0.85 s window would hold about twice the limit).
ARRIVAL_JITTER = 0.15

KEY = "s3cret/key+with=odd&chars"
KEY_ENV = "XC_TEST_API_KEY"
SPECIES = {"Turdus merula": 1250, "Erithacus rubecula": 12, "Rana arvalis": 3}
TAXONOMY = pd.DataFrame(
    {
        "primary_label": ["eurbla", "eurrob1", "23456", "blkcap", "67890"],
        "inat_taxon_id": [1, 2, 23456, 4, 67890],
        "scientific_name": [
            "Turdus merula",
            "Erithacus rubecula",
            "Rana arvalis",
            "Sylvia atricapilla",
            "Orthoptera sp.",
        ],
        "common_name": ["Eurasian Blackbird", "European Robin", "Moor Frog", "Blackcap", "Insect"],
        "class_name": ["Aves", "Aves", "Amphibia", "Aves", "Insecta"],
    }
)
FAST = {
    "requests_per_second": 1000.0,
    "timeout_seconds": 0.5,
    "backoff_seconds": 0.01,
    "max_retries": 4,
}


def write_inputs(folder: Path, train_rows: list[dict]) -> tuple[Path, Path]:
    """taxonomy.csv and train.csv (BirdCLEF 2025 columns) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    TAXONOMY.to_csv(folder / "taxonomy.csv", index=False)
    train = pd.DataFrame(train_rows)
    for column in TRAIN_COLUMNS:
        if column not in train.columns:
            train[column] = ""
    train[list(TRAIN_COLUMNS)].to_csv(folder / "train.csv", index=False)
    return folder / "train.csv", folder / "taxonomy.csv"


def outputs(folder: Path) -> dict[str, Path]:
    """The stage's declared outputs inside `folder` (as the rule lays them out)."""
    return {
        "out_rows": folder / "train_xc.csv",
        "out_metadata": folder / "metadata.parquet",
        "out_audio": folder / "audio",
        "out_manifest": folder / "manifest.json",
    }


def run_stage(folder: Path, inputs: tuple[Path, Path], settings: dict, **kwargs) -> dict:
    """scrape_stage with outputs in `folder`."""
    train_csv, taxonomy_csv = inputs
    return xc.scrape_stage(
        train_csv=train_csv,
        taxonomy_csv=taxonomy_csv,
        settings=settings,
        key_env=KEY_ENV,
        tag="test",
        progress=False,
        **outputs(folder),
        **kwargs,
    )


@pytest.fixture
def key_env(monkeypatch):
    """The API key in the environment variable the stage reads."""
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY_ENV


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """One crawl of SPECIES with every fault and special record, logs captured at DEBUG."""
    tmp = tmp_path_factory.mktemp("xc")
    with running_standin(
        SPECIES,
        key=KEY,
        specials_species="Erithacus rubecula",
        fail_503_every=4,
        retry_after=1.0,
        slow_once=1.5,
    ) as server:
        ids = server.special_ids
        inputs = write_inputs(
            tmp / "data",
            [
                {"primary_label": "eurbla", "filename": f"eurbla/XC{ids['in_train']}.ogg"},
                {
                    "primary_label": "eurrob1",
                    "filename": "eurrob1/iNat1234.ogg",
                    "url": "https://xeno-canto.org/5",
                },
            ],
        )
        settings = {**FAST, "base_url": server.base_url, "max_records_per_species": 20}
        capture = _Capture()
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(capture)
        root.setLevel(logging.DEBUG)
        old_env = os.environ.get(KEY_ENV)
        os.environ[KEY_ENV] = KEY
        try:
            start = time.monotonic()
            headline = run_stage(tmp / "stage", inputs, settings)
            seconds = time.monotonic() - start
        finally:
            root.removeHandler(capture)
            root.setLevel(old_level)
            if old_env is None:
                os.environ.pop(KEY_ENV, None)
            else:
                os.environ[KEY_ENV] = old_env
        yield {
            "server": server,
            "ids": ids,
            "inputs": inputs,
            "settings": settings,
            "folder": tmp / "stage",
            "headline": headline,
            "log": "\n".join(capture.lines),
            "seconds": seconds,
            "log_length": len(server.requests),
        }


# --------------------------------------------------------------------------- the stand-in


def test_standin_behaves_like_the_api():
    """401 JSON without a key, 400 untagged, per_page bounds, string counts, real fields."""
    with running_standin({"Turdus merula": 120}, key=KEY, specials=False) as server:
        url = server.base_url
        answer = requests.get(url, params={"query": 'sp:"turdus merula"'}, timeout=5)
        assert answer.status_code == 401 and "key" in answer.json()["message"].lower()
        answer = requests.get(
            url, params={"query": 'sp:"turdus merula"', "key": "wrong"}, timeout=5
        )
        assert answer.status_code == 401
        answer = requests.get(url, params={"query": "turdus merula", "key": KEY}, timeout=5)
        assert answer.status_code == 400 and "tag" in answer.json()["message"]
        answer = requests.get(
            url, params={"query": 'sp:"turdus merula"', "key": KEY, "per_page": 20}, timeout=5
        )
        assert answer.status_code == 400
        answer = requests.get(
            url,
            params={"query": 'sp:"turdus merula"', "key": KEY, "per_page": 50, "page": 3},
            timeout=5,
        )
        body = answer.json()
        assert body["numRecordings"] == "120" and body["numSpecies"] == "1"
        assert body["page"] == 3 and body["numPages"] == 3 and len(body["recordings"]) == 20
        fields = set(body["recordings"][0])
        assert {
            "id", "gen", "sp", "ssp", "grp", "en", "rec", "cnt", "loc", "lat", "lon", "alt", "type",
            "sex", "stage", "method", "url", "file", "file-name", "sono", "osci", "lic", "q",
            "length", "time", "date", "uploaded", "also", "rmk", "animal-seen", "playback-used",
            "temp", "regnr", "auto", "dvc", "mic", "smp",
        } <= fields  # fmt: skip
        audio = requests.get(body["recordings"][0]["file"], timeout=5)
        wave, rate = sf.read(io.BytesIO(audio.content))
        assert rate in (22050, 32000, 44100, 48000) and len(wave) > 0


# --------------------------------------------------------------------------- the client


def test_client_stops_with_the_api_message_on_401_and_400():
    """A bad key (401) and an untagged query (400) stop with the API's message; no key: no request."""
    with running_standin({"Turdus merula": 60}, key=KEY, specials=False) as server:
        bad = xc.XenoCantoClient(server.base_url, "bad-key", requests_per_second=None)
        with (
            bad,
            pytest.raises(
                xc.XenoCantoError, match="HTTP 401.*Missing or invalid API key.*XC_API_KEY"
            ),
        ):
            bad.get_page('sp:"turdus merula"', 1, 500)
        with xc.XenoCantoClient(server.base_url, KEY, requests_per_second=None) as client:
            with pytest.raises(xc.XenoCantoError, match="HTTP 400.*tag-based") as error:
                client.get_page("turdus merula", 1, 500)
            assert KEY not in str(error.value)
        before = len(server.requests)
        keyless = xc.XenoCantoClient(server.base_url, None, key_env="MY_XC_KEY")
        with keyless, pytest.raises(xc.XenoCantoError, match="MY_XC_KEY"):
            keyless.get_page('sp:"turdus merula"', 1, 500)
        assert len(server.requests) == before


def test_redirects_are_bounded_and_errors_name_the_urls(tmp_path, monkeypatch):
    """Past MAX_REDIRECTS hops a download fails naming the URL, the last hop and what was expected."""
    monkeypatch.setattr(xc_client, "MAX_REDIRECTS", 1)  # looked up by XenoCantoClient._redirect
    with (
        running_standin({"Turdus merula": 6}, key=KEY, specials=False, redirect_all=True) as server,
        xc.XenoCantoClient(server.base_url, KEY, requests_per_second=None) as client,
    ):
        assert client.download(f"{server.root}/100001/download", tmp_path / "a.wav") > 0
        url = f"{server.root}/100002/download"
        with pytest.raises(xc.DownloadFailedError) as error:
            client.download(url, tmp_path / "b.mp3")
    message = str(error.value)
    assert url in message and "more than 1 redirects" in message and "expected the file" in message
    assert f"{server.root}/sounds/hop/100002 redirects to '../uploaded/" in message
    assert not (tmp_path / "b.mp3").exists()


def test_stage_without_key_names_the_variable(tmp_path, monkeypatch):
    """scrape_stage with the variable unset fails naming it, before any request."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    with running_standin({"Turdus merula": 60}, key=KEY, specials=False) as server:
        inputs = write_inputs(
            tmp_path / "data", [{"primary_label": "eurbla", "filename": "eurbla/a.ogg"}]
        )
        with pytest.raises(xc.XenoCantoError, match=KEY_ENV):
            run_stage(tmp_path / "stage", inputs, {**FAST, "base_url": server.base_url})
        assert server.log("api") == []
        assert not (tmp_path / "stage" / "train_xc.csv").exists()


# --------------------------------------------------------------------------- one full crawl


def test_every_page_of_every_species_fetched_once(scraped):
    """Pages 1..3 of the 1,250-record species and page 1 of the others, each answered 200 once."""
    server = scraped["server"]
    ok = Counter(
        (e.params["query"], int(e.params["page"]))
        for e in server.log("api")
        if e.status == 200 and e.note != "slow"  # the client gave up on the slow answer
    )
    assert ok == {
        ('sp:"turdus merula"', 1): 1,
        ('sp:"turdus merula"', 2): 1,
        ('sp:"turdus merula"', 3): 1,
        ('sp:"erithacus rubecula"', 1): 1,
        ('sp:"rana arvalis"', 1): 1,
        ('sp:"sylvia atricapilla"', 1): 1,
    }
    assert {e.params["per_page"] for e in server.log("api")} == {"500"}
    assert {e.user_agent for e in server.log()} == {xc.USER_AGENT}
    assert xc.USER_AGENT.startswith("birdclef-pipeline/")
    headline = scraped["headline"]
    assert headline["pages"] == {"total": 6, "fetched": 6, "from_cache": 0}
    assert headline["species"]["skipped"]["not_a_species_name"] == 1  # "Orthoptera sp."
    served = {int(r["id"]) for records in server.records.values() for r in records}
    metadata = pd.read_parquet(scraped["folder"] / "metadata.parquet")
    assert set(metadata["xc_id"]) == served
    assert headline["records"]["found"] == len(served) == 1250 + 12 + 3
    assert headline["count_mismatches"] == [] and headline["count_changes"] == []


def test_no_duplicates_across_pages_and_species(scraped):
    """The record returned by two species' queries is kept once and counted as a duplicate."""
    folder = scraped["folder"]
    rows = pd.read_csv(folder / "train_xc.csv")
    metadata = pd.read_parquet(folder / "metadata.parquet")
    assert rows["filename"].is_unique and metadata["xc_id"].is_unique
    assert scraped["headline"]["records"]["duplicates_across_species"] == 1
    duplicate = metadata.set_index("xc_id").loc[scraped["ids"]["duplicate"]]
    assert duplicate["status"] == "kept" and duplicate["primary_label"] == "eurrob1"


def test_bad_records_are_skipped_with_their_reason(scraped):
    """Each special record ends with its reason; the redirecting download is kept."""
    folder = scraped["folder"]
    ids = scraped["ids"]
    status = pd.read_parquet(folder / "metadata.parquet").set_index("xc_id")["status"]
    expected = {
        "restricted": "restricted",
        "corrupt": "corrupt_audio",
        "nd_license": "license",
        "low_quality": "quality",
        "too_long": "too_long",
        "unknown_species": "unknown_species",
        "in_train": "in_train",
        "redirect": "kept",
    }
    assert {kind: status[ids[kind]] for kind in expected} == expected
    skipped = scraped["headline"]["records"]["skipped"]
    counts = status.value_counts().to_dict()
    assert skipped == {reason: counts.get(reason, 0) for reason in xc.SKIP_REASONS}
    # the duplicate is an Erithacus record: eurbla has 1,250 candidates, capped at 20
    assert skipped["species_cap"] == 1250 - 20
    # eurrob1: 12 records less 6 skipped on their metadata and the corrupt download
    assert scraped["headline"]["records"]["kept"] == counts["kept"] == 20 + (12 - 7) + 3
    # the restricted record was never downloaded; the redirect was followed
    server = scraped["server"]
    assert ids["restricted"] not in {e.xc_id for e in server.log("download")}
    assert [e.xc_id for e in server.log("redirect")] == [ids["redirect"]]
    assert ids["redirect"] in {e.xc_id for e in server.log("download")}
    files = {p.name for p in (folder / "audio").rglob("*.ogg")}
    assert f"XC{ids['redirect']}.ogg" in files and f"XC{ids['corrupt']}.ogg" not in files


def test_rows_follow_train_csv_and_audio_is_32k_mono_ogg(scraped):
    """Rows in train.csv's schema load with the catalog's reader; audio is 32 kHz mono Vorbis."""
    folder = scraped["folder"]
    rows = pd.read_csv(folder / "train_xc.csv")
    assert tuple(rows.columns) == TRAIN_COLUMNS
    assert set(rows["collection"]) == {"XC"}
    assert rows["filename"].str.fullmatch(r"[^/]+/XC\d+\.ogg").all()
    assert (
        rows["url"] == "https://xeno-canto.org/" + rows["filename"].str.extract(r"XC(\d+)")[0]
    ).all()
    assert set(rows["rating"]) <= {3.0, 4.0, 5.0}
    assert (
        not rows["license"].str.contains("nd").any() and rows["license"].str.startswith("cc-").all()
    )
    classes = read_taxonomy(scraped["inputs"][1])
    for value in rows["secondary_labels"]:
        labels = parse_label_list(value, "secondary_labels")
        assert set(labels) <= set(classes)
    assert any(parse_label_list(v, "x") for v in rows["secondary_labels"])
    assert rows["latitude"].isna().any() and rows["latitude"].notna().any()
    assert set(rows["primary_label"]) == {"eurbla", "eurrob1", "23456"}
    frame, stats = load_train_table(
        folder / "train_xc.csv", folder / "audio", classes, "xeno_canto"
    )
    assert len(frame) == len(rows) and stats["unknown_secondary_labels"] == 0
    for path in frame["path"][:10]:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (
            32000,
            1,
            "OGG",
            "VORBIS",
        )
    assert len(list((folder / "audio").rglob("*"))) == len(rows) + rows["primary_label"].nunique()


def test_retries_honour_retry_after_and_recover(scraped):
    """503s and a timeout are retried; after the 429 nothing is sent before Retry-After elapses."""
    server = scraped["server"]
    api = server.log("api")
    statuses = Counter(e.status for e in api)
    assert statuses[503] >= 1 and statuses[429] == 1
    index = next(i for i, e in enumerate(api) if e.status == 429)
    after = [e for e in server.log() if e.t > api[index].t]
    assert after and after[0].t - api[index].t >= 1.0 - 0.01
    assert api[index + 1].params["page"] == api[index].params["page"]
    requests_ = scraped["headline"]["requests"]
    assert requests_["timeouts"] == 1 and requests_["retries"] >= 3
    assert requests_["by_status"]["429"] == 1


def test_key_never_logged_nor_written(scraped):
    """The key (plain or URL-encoded) is in no log line and no file the stage wrote."""
    text = scraped["log"]
    assert "key=***" in text  # urllib3's DEBUG lines carry the URL, masked
    for form in (KEY, quote_plus(KEY)):
        assert form not in text
    stage = scraped["folder"]
    for path in stage.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and quote_plus(KEY).encode() not in data, path


def test_manifest_has_crawl_date_and_summary(scraped):
    """The manifest carries the crawl date, the settings, the per-species counts and the bytes."""
    manifest = json.loads((scraped["folder"] / "manifest.json").read_text())
    assert manifest["stage"] == "xc_scrape" and manifest["tag"] == "test"
    assert manifest["crawl_date"]["started"] <= manifest["crawl_date"]["last_page"]
    assert manifest["settings"]["per_page"] == 500 and manifest["key_env"] == KEY_ENV
    assert (
        manifest["species"]["eurbla"]["declared"] == 1251
        and manifest["species"]["eurbla"]["pages"] == 3
    )
    headline = manifest["headline"]
    assert headline["bytes"]["downloaded"] > headline["bytes"]["audio"] > 0
    assert headline["downloads"]["fetched"] == headline["records"]["kept"]


def test_rerun_asks_for_nothing_and_ends_with_the_same_table(scraped, key_env):
    """Outputs deleted (as Snakemake does) and the stage re-run: no request, same files."""
    server = scraped["server"]
    folder = scraped["folder"]
    before = (folder / "train_xc.csv").read_text()
    metadata = pd.read_parquet(folder / "metadata.parquet")
    for path in outputs(folder).values():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    count = len(server.requests)
    headline = run_stage(folder, scraped["inputs"], scraped["settings"])
    assert len(server.requests) == count
    assert (folder / "train_xc.csv").read_text() == before
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "metadata.parquet"), metadata)
    assert headline["pages"]["fetched"] == 0 and headline["downloads"]["fetched"] == 0
    assert headline["downloads"]["failed_cached"] == 1  # the corrupt file is remembered


# --------------------------------------------------------------------------- focused runs


def test_count_change_during_crawl_is_recorded(tmp_path, key_env):
    """Records added while paging: duplicates across pages dropped, the change and gap recorded."""
    with running_standin(
        {"Turdus merula": 120}, key=KEY, specials=False, grow={"Turdus merula": 3}
    ) as server:
        inputs = write_inputs(
            tmp_path / "data", [{"primary_label": "eurbla", "filename": "eurbla/a.ogg"}]
        )
        settings = {
            **FAST,
            "base_url": server.base_url,
            "per_page": 50,
            "species": ["eurbla"],
            "max_records_per_species": 1,
        }
        headline = run_stage(tmp_path / "stage", inputs, settings)
    assert headline["count_changes"] == [
        {"primary_label": "eurbla", "query": 'sp:"turdus merula"', "totals": [120, 123, 123]}
    ]
    assert headline["count_mismatches"] == [
        {"primary_label": "eurbla", "declared": 123, "found": 120}
    ]
    assert headline["records"]["duplicates_across_pages"] == 3
    metadata = pd.read_parquet(tmp_path / "stage" / "metadata.parquet")
    assert metadata["xc_id"].is_unique and len(metadata) == 120


def test_species_selection_filters_and_groups(tmp_path, key_env):
    """only_species_below, the species list, grp_by_class and extra_query shape the queries."""
    with running_standin(
        {"Turdus merula": 60, "Erithacus rubecula": 60, "Rana arvalis": 60},
        key=KEY,
        specials=False,
        groups={"Rana arvalis": "frogs"},
    ) as server:
        inputs = write_inputs(
            tmp_path / "data",
            [{"primary_label": "eurbla", "filename": f"eurbla/x{i}.ogg"} for i in range(3)]
            + [{"primary_label": "eurrob1", "filename": "eurrob1/y.ogg"}],
        )
        settings = {
            **FAST,
            "base_url": server.base_url,
            "only_species_below": 2,
            "species": ["eurbla", "eurrob1", "23456"],
            "grp_by_class": {"Amphibia": "frogs"},
            "extra_query": "cnt:brazil",
            "max_records_per_species": 2,
        }
        headline = run_stage(tmp_path / "stage", inputs, settings)
        queries = {e.params["query"] for e in server.log("api")}
    assert queries == {
        'sp:"erithacus rubecula" cnt:brazil',
        'sp:"rana arvalis" grp:frogs cnt:brazil',
    }
    assert headline["species"]["skipped"]["enough_train_recordings"] == 1
    rows = pd.read_csv(tmp_path / "stage" / "train_xc.csv")
    assert sorted(rows["primary_label"]) == ["23456", "23456", "eurrob1", "eurrob1"]


def test_rate_limit_holds_across_pages_and_downloads(tmp_path, key_env):
    """At 3 requests/s no 1 s window holds more than 3 requests (server arrival times)."""
    with running_standin({"Turdus merula": 150}, key=KEY, specials=False) as server:
        inputs = write_inputs(
            tmp_path / "data", [{"primary_label": "eurbla", "filename": "eurbla/a.ogg"}]
        )
        settings = {
            **FAST,
            "requests_per_second": 3.0,
            "base_url": server.base_url,
            "per_page": 50,
            "species": ["eurbla"],
            "max_records_per_species": 9,
            "download_workers": 3,
        }
        start = time.monotonic()
        run_stage(tmp_path / "stage", inputs, settings)
        seconds = time.monotonic() - start
        times = [e.t for e in server.log()]
    assert len(times) == 12
    assert max_requests_in_window(times, 1.0 - ARRIVAL_JITTER) <= 3
    gaps = np.diff(sorted(times))
    assert gaps.min() >= 1 / 3 - ARRIVAL_JITTER
    # the span of the 12 arrivals: 11 intervals of 1/3 s, less one request's jitter
    assert gaps.sum() >= 11 / 3 - ARRIVAL_JITTER
    assert seconds >= 11 / 3 - 0.05


def test_every_redirect_hop_passes_the_rate_limit(tmp_path, key_env):
    """Every download a redirect (some two hops): at 5 requests/s with 3 workers, no 1 s window
    of server arrivals (pages, hops, files) holds more than 5; the files arrive intact."""
    with running_standin(
        {"Turdus merula": 6}, key=KEY, specials=False, redirect_all=True
    ) as server:
        inputs = write_inputs(
            tmp_path / "data", [{"primary_label": "eurbla", "filename": "eurbla/a.ogg"}]
        )
        settings = {
            **FAST,
            "requests_per_second": 5.0,
            "base_url": server.base_url,
            "per_page": 50,
            "species": ["eurbla"],
            "download_workers": 3,
        }
        headline = run_stage(tmp_path / "stage", inputs, settings)
        entries = server.log()
        served = {i: server.audio_bytes(i) for i in server.by_id}
    ids = sorted(served)
    two_hops = [i for i in ids if i % 3 == 0]
    assert two_hops and len(two_hops) < len(ids)
    # every hop reached the server: 1 page + per file one or two redirects and the file
    by_id: dict[int, list[str]] = {}
    for entry in entries:
        if entry.xc_id is not None:
            by_id.setdefault(entry.xc_id, []).append(entry.kind)
    assert by_id == {
        i: ["redirect", "redirect", "download"] if i in two_hops else ["redirect", "download"]
        for i in ids
    }
    assert {e.path for e in entries if e.kind == "download"} == {
        f"/sounds/uploaded/ABCDEFGHIJ/{server.by_id[i]['file-name']}" for i in ids
    }
    assert len(entries) == 1 + 2 * len(ids) + len(two_hops)
    # the hops of a file share its worker's keep-alive connection (no new connection per hop)
    connections = {e.xc_id: set() for e in entries if e.xc_id is not None}
    for entry in entries:
        if entry.xc_id is not None:
            connections[entry.xc_id].add(entry.connection)
    assert all(len(ports) == 1 for ports in connections.values())
    requests_ = headline["requests"]
    assert requests_["total"] == len(entries) and requests_["redirects"] == len(ids) + len(two_hops)
    # the same method as test_rate_limit_holds_across_pages_and_downloads
    times = [e.t for e in entries]
    assert max_requests_in_window(times, 1.0 - ARRIVAL_JITTER) <= 5
    assert np.diff(sorted(times)).min() >= 1 / 5 - ARRIVAL_JITTER
    # intact: every byte the server sent was counted, and every file decodes
    assert headline["bytes"]["downloaded"] == sum(len(b) for b in served.values())
    rows = pd.read_csv(tmp_path / "stage" / "train_xc.csv")
    assert sorted(xc.xc_id_of(f) for f in rows["filename"]) == ids
    for i in ids:
        info = sf.info(tmp_path / "stage" / "audio" / "eurbla" / f"XC{i}.ogg")
        source = sf.info(io.BytesIO(served[i]))
        assert info.samplerate == 32000 and info.duration == pytest.approx(
            source.duration, abs=0.06
        )


def test_kill_mid_download_then_restart_downloads_nothing_twice(tmp_path):
    """SIGKILL while a download is half sent; the restart fetches only what was unfinished."""
    with running_standin(
        {"Turdus merula": 16}, key=KEY, specials=False, stall_download_after=5
    ) as server:
        inputs = write_inputs(
            tmp_path / "data", [{"primary_label": "eurbla", "filename": "eurbla/a.ogg"}]
        )
        settings = {**FAST, "base_url": server.base_url, "per_page": 50, "species": ["eurbla"]}
        folder = tmp_path / "stage"
        code = (
            "import json, sys\n"
            "from birdclef.xeno_canto import scrape_stage\n"
            "a = sys.argv[1:]\n"
            "scrape_stage(a[0], a[1], a[2], a[3], a[4], a[5], json.loads(a[6]), a[7], 'test', progress=False)\n"
        )
        args = [str(p) for p in (*inputs, *outputs(folder).values())]
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args, json.dumps(settings), KEY_ENV],
            env={**os.environ, KEY_ENV: KEY},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert server.stalled.wait(timeout=60), "the scraper never reached the stalled download"
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        stalled = server.stalled_id
        complete = [e.xc_id for e in server.log("download")][:-1]
        assert len(complete) == 5 and stalled not in complete
        cache = folder / "cache"
        finished = sorted(p.name for p in (cache / "audio").glob("XC*.ogg"))
        assert finished == sorted(f"XC{i}.ogg" for i in complete)
        for name in finished:
            assert sf.info(cache / "audio" / name).frames > 0
        # the half download exists only under a temporary name
        assert not list(cache.rglob(f"XC{stalled}.*"))
        assert not (folder / "audio").exists() and not (folder / "train_xc.csv").exists()

        server.options.stall_download_after = None
        server.release()
        os.environ[KEY_ENV] = KEY
        try:
            run_stage(folder, inputs, settings)
            downloads = Counter(e.xc_id for e in server.log("download"))
            pages = Counter(
                (e.params["query"], e.params["page"]) for e in server.log("api") if e.status == 200
            )
            reference_start = len(server.requests)
            run_stage(tmp_path / "reference", inputs, settings)
            reference = {e.xc_id for e in server.log("download", since=reference_start)}
        finally:
            os.environ.pop(KEY_ENV, None)
    assert all(downloads[i] == 1 for i in complete)
    assert downloads[stalled] == 2
    assert set(downloads.values()) <= {1, 2} and len(downloads) == 16
    assert set(pages.values()) == {1}
    assert not [p for p in cache.rglob("*") if ".tmp" in p.name]
    assert (folder / "train_xc.csv").read_text() == (
        tmp_path / "reference" / "train_xc.csv"
    ).read_text()
    assert reference == set(downloads)


# --------------------------------------------------------------------------- helpers


def test_parsers():
    """Lengths, licences, ids, Retry-After and queries."""
    assert xc.parse_length("0:33") == 33 and xc.parse_length("1:02:03") == 3723
    assert xc.parse_length("") is None and xc.parse_length(None) is None
    assert xc.license_name("//creativecommons.org/licenses/by-nc-sa/4.0/") == "cc-by-nc-sa 4.0"
    assert xc.license_name("https://creativecommons.org/publicdomain/zero/1.0/") == "cc0 1.0"
    assert xc.license_excluded("//creativecommons.org/licenses/by-nc-nd/2.5/", ["nd"])
    assert not xc.license_excluded("//creativecommons.org/licenses/by-nc-sa/4.0/", ["nd"])
    assert xc.license_excluded("//creativecommons.org/licenses/by-nc/4.0/", ["by-nc"])
    assert xc.xc_id_of("1139490/XC123456.ogg") == 123456
    assert xc.xc_id_of("https://xeno-canto.org/654321") == 654321
    assert xc.xc_id_of("https://static.inaturalist.org/sounds/1.wav") is None
    train = pd.DataFrame(
        {"filename": ["a/XC1.ogg", "b/iNat2.ogg"], "url": ["", "https://xeno-canto.org/3"]}
    )
    assert xc.train_xc_ids(train) == {1, 3}
    assert xc.parse_retry_after("7") == 7.0 and xc.parse_retry_after(None) is None
    assert xc.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(
        10
    )
    assert xc.build_query("Turdus merula") == 'sp:"turdus merula"'
    assert xc.build_query("Turdus merula merula", "birds", 'q:A len:"<120"') == (
        'sp:"turdus merula" ssp:"merula" grp:birds q:A len:"<120"'
    )
    assert (
        xc.build_query("Myotis myotis", "land mammals") == 'sp:"myotis myotis" grp:"land mammals"'
    )
    with pytest.raises(ValueError, match="tag:value"):
        xc.check_extra_query("brazil")
    with pytest.raises(ValueError, match="unknown xeno_canto setting"):
        xc.resolve_settings({"per_pages": 3})


def test_rate_limiter_spaces_requests():
    """The limiter reserves consecutive slots one interval apart; defer pushes them back."""
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    limiter = xc.RateLimiter(2.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    assert sleeps == pytest.approx([0.505, 0.505, 0.505])
    limiter.defer(5.0)
    limiter.wait()
    assert clock[0] == pytest.approx(1.515 + 5.0)
    assert xc.RateLimiter(None).wait() == 0.0


# --------------------------------------------------------------------------- query mode


def test_query_mode_crawls_every_page_of_each_query_and_labels_outside_species_by_name(tmp_path, key_env):
    """Query mode: one crawl per query (country and group instead of the taxonomy's species),
    every page past the 500-per-page cap, taxonomy species under their labels, others (with
    pretraining) under their scientific name; the per-species cap still applies."""
    species = {"Turdus merula": 1300, "Erithacus rubecula": 20, "Pica pica": 900, "Rana arvalis": 30}
    with running_standin(species, key=KEY, specials=False, groups={"Rana arvalis": "frogs"}) as server:
        inputs = write_inputs(tmp_path / "data", [{"primary_label": "eurbla", "filename": "eurbla/a.ogg"}])
        settings = {
            **FAST,
            "base_url": server.base_url,
            "query": [{"group": "birds"}, 'cnt:"Brazil" grp:frogs'],
            "max_records_per_species": 2,
            "keep_outside_taxonomy": True,
        }
        headline = run_stage(tmp_path / "stage", inputs, settings)
        api = server.log("api")
        brazil_frogs = sum(1 for r in server.records["Rana arvalis"] if r["cnt"] == "Brazil")
    pages = Counter(e.params["query"] for e in api)
    # 2,220 birds: 5 pages of 500; the frogs of Brazil: one page
    assert pages == {"grp:birds": 5, 'cnt:"Brazil" grp:frogs': 1}
    assert sorted(int(e.params["page"]) for e in api if e.params["query"] == "grp:birds") == [1, 2, 3, 4, 5]
    assert {e.params["per_page"] for e in api} == {"500"}
    assert headline["records"]["declared"] == 2220 + brazil_frogs
    assert headline["records"]["found"] == 2220 + brazil_frogs
    rows = pd.read_csv(tmp_path / "stage" / "train_xc.csv")
    assert sorted(rows["primary_label"]) == ["23456", "23456", "Pica pica", "Pica pica",
                                             "eurbla", "eurbla", "eurrob1", "eurrob1"]
    pica = rows[rows["primary_label"] == "Pica pica"]
    assert pica["filename"].str.startswith("Pica pica/XC").all()
    assert (pica["scientific_name"] == "Pica pica").all()
    manifest = json.loads((tmp_path / "stage" / "manifest.json").read_text())
    assert manifest["species"]["query0"]["query"] == "grp:birds"
    assert manifest["species"]["query0"]["kept"] == 6 and manifest["species"]["query1"]["kept"] == 2


def test_query_mode_without_pretraining_skips_outside_species(tmp_path, key_env):
    with running_standin({"Turdus merula": 60, "Pica pica": 60}, key=KEY, specials=False) as server:
        inputs = write_inputs(tmp_path / "data", [{"primary_label": "eurbla", "filename": "eurbla/a.ogg"}])
        settings = {**FAST, "base_url": server.base_url, "per_page": 50, "query": {"country": "Brazil"},
                    "max_records_per_species": 3}
        headline = run_stage(tmp_path / "stage", inputs, settings)
        queries = {e.params["query"] for e in server.log("api")}
        pica_brazil = sum(1 for r in server.records["Pica pica"] if r["cnt"] == "Brazil")
    assert queries == {"cnt:Brazil"}
    rows = pd.read_csv(tmp_path / "stage" / "train_xc.csv")
    assert set(rows["primary_label"]) == {"eurbla"} and len(rows) == 3
    assert headline["records"]["skipped"]["unknown_species"] == pica_brazil


def test_query_mode_keeps_the_rate_limit(tmp_path, key_env):
    """At 4 requests/s, pages and downloads of a query-mode crawl share the one limit."""
    with running_standin({"Turdus merula": 120, "Pica pica": 80}, key=KEY, specials=False) as server:
        inputs = write_inputs(tmp_path / "data", [{"primary_label": "eurbla", "filename": "eurbla/a.ogg"}])
        settings = {**FAST, "requests_per_second": 4.0, "base_url": server.base_url, "per_page": 50,
                    "query": "grp:birds", "max_records_per_species": 2, "download_workers": 3,
                    "keep_outside_taxonomy": True}
        run_stage(tmp_path / "stage", inputs, settings)
        times = [e.t for e in server.log()]
    assert len(times) == 4 + 4  # pages of 200 records at 50 a page, 2 downloads of each species
    assert max_requests_in_window(times, 1.0 - ARRIVAL_JITTER) <= 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([], "empty list"),
        ({"country": "Brazil", "planet": "Mars"}, r"unknown key\(s\) \['planet'\]"),
        ("Brazil birds", "tag:value tokens"),
    ],
)
def test_bad_queries_name_the_setting(query, message):
    with pytest.raises(ValueError, match=message):
        xc.resolve_settings({"query": query})
    with pytest.raises(ValueError, match="cannot be combined with xeno_canto.species"):
        xc.resolve_settings({"query": "grp:birds", "species": ["eurbla"]})

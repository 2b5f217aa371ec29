"""Benchmark of the xeno-canto scraper (birdclef.xeno_canto) against the local stand-in API.

Three measurements, printed as one markdown table for bench/README.md:

1. crawl, limit lifted: every page of `--species` species with `--records`
   records each (per_page 500) through the client and the page cache:
   pages/s and records/s;
2. whole stage, limit lifted: `scrape_stage` with at most `--per-species`
   kept recordings per species (download, decode, resample to 32 kHz, Ogg
   Vorbis): recordings/s end to end;
3. whole stage at 1 request/s over a bounded run (`--limited-requests`
   requests, pages and downloads): the request rate measured from the server's
   arrival times (most requests in any 1 s window, mean rate, smallest gap).

Usage: .venv/bin/python bench/bench_xc_scrape.py [--species 20] [--records 1500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from xc_standin import max_requests_in_window, running_standin  # noqa: E402

from birdclef import xeno_canto as xc  # noqa: E402

KEY_ENV = "XC_BENCH_API_KEY"
KEY = "bench-key"
EPITHETS = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon",
    "phi", "chi", "psi", "omega",
]  # fmt: skip


def species_names(count: int) -> list[str]:
    """`count` synthetic 'Genus species' names."""
    return [f"Benchia {EPITHETS[i % len(EPITHETS)]}{'' if i < len(EPITHETS) else 'x' * (i // len(EPITHETS))}"
            for i in range(count)]  # fmt: skip


def write_inputs(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """taxonomy.csv for `names` and a one-row train.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    taxonomy = pd.DataFrame(
        {
            "primary_label": [f"sp{i:03d}" for i in range(len(names))],
            "inat_taxon_id": range(len(names)),
            "scientific_name": names,
            "common_name": names,
            "class_name": "Aves",
        }
    )
    taxonomy.to_csv(folder / "taxonomy.csv", index=False)
    pd.DataFrame(
        {"primary_label": ["sp000"], "secondary_labels": ["[]"], "filename": ["sp000/x.ogg"]}
    ).to_csv(folder / "train.csv", index=False)
    return folder / "train.csv", folder / "taxonomy.csv"


def run_stage(folder: Path, inputs: tuple[Path, Path], settings: dict) -> dict:
    """scrape_stage with its outputs in `folder`."""
    return xc.scrape_stage(
        *inputs,
        out_rows=folder / "train_xc.csv",
        out_metadata=folder / "metadata.parquet",
        out_audio=folder / "audio",
        out_manifest=folder / "manifest.json",
        settings=settings,
        key_env=KEY_ENV,
        tag="bench",
        progress=False,
    )


def machine() -> str:
    """CPU model and core count."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    """Run the three measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--species", type=int, default=20)
    parser.add_argument("--records", type=int, default=1500)
    parser.add_argument(
        "--per-species", type=int, default=50, help="kept per species in the end-to-end run"
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="download_workers of the end-to-end run"
    )
    parser.add_argument("--limited-requests", type=int, default=25)
    args = parser.parse_args()
    os.environ[KEY_ENV] = KEY
    names = species_names(args.species)
    unlimited = {
        "requests_per_second": None,
        "per_page": 500,
        "timeout_seconds": 30,
        "backoff_seconds": 0.1,
    }

    with tempfile.TemporaryDirectory(prefix="bench_xc_") as tmp_name:
        tmp = Path(tmp_name)
        inputs = write_inputs(tmp / "data", names)
        with running_standin(dict.fromkeys(names, args.records), key=KEY, specials=False) as server:
            # 1. crawl only
            cache = xc.PageCache(tmp / "crawl" / "pages", server.base_url)
            start = time.perf_counter()
            with xc.XenoCantoClient(server.base_url, KEY, requests_per_second=None) as client:
                crawls = [
                    xc.crawl_species(client, cache, name, name, xc.build_query(name), 500)
                    for name in names
                ]
            crawl_s = time.perf_counter() - start
            pages = sum(c.pages_fetched for c in crawls)
            records = sum(len(c.records) for c in crawls)

            # 2. whole stage, limit lifted
            settings = {**unlimited, "base_url": server.base_url, "max_records_per_species": args.per_species,
                        "download_workers": args.workers}  # fmt: skip
            start = time.perf_counter()
            headline = run_stage(tmp / "stage", inputs, settings)
            stage_s = time.perf_counter() - start
            kept = headline["records"]["kept"]

        # 3. limit 1 request/s, bounded: 2 species x 600 records = 4 pages, the rest downloads
        downloads_per_species = max(1, (args.limited_requests - 4) // 2)
        limited_names = names[:2]
        limited_inputs = write_inputs(tmp / "data_limited", limited_names)
        with running_standin(dict.fromkeys(limited_names, 600), key=KEY, specials=False) as server:
            settings = {**unlimited, "requests_per_second": 1.0, "base_url": server.base_url,
                        "max_records_per_species": downloads_per_species, "download_workers": 2}  # fmt: skip
            start = time.perf_counter()
            run_stage(tmp / "limited", limited_inputs, settings)
            limited_s = time.perf_counter() - start
            times = sorted(e.t for e in server.log())
    gaps = np.diff(times)
    rows = [
        ("machine", machine()),
        ("date", dt.date.today().isoformat()),
        (f"crawl, no limit: {args.species} species x {args.records} records", f"{pages} pages, {records} records in {crawl_s:.2f} s"),
        ("pages/s (no limit)", f"{pages / crawl_s:.1f}"),
        ("records/s (no limit)", f"{records / crawl_s:.0f}"),
        (f"whole stage, no limit ({kept} recordings downloaded + converted, {args.workers} workers)", f"{stage_s:.1f} s"),
        ("recordings/s end to end (no limit)", f"{kept / stage_s:.1f}"),
        ("limit 1 req/s: requests in bounded run", f"{len(times)} in {limited_s:.1f} s"),
        ("limit 1 req/s: most requests in any 1 s window", f"{max_requests_in_window(times, 1.0)}"),
        ("limit 1 req/s: mean rate (req/s)", f"{(len(times) - 1) / (times[-1] - times[0]):.3f}"),
        ("limit 1 req/s: smallest gap between requests (s)", f"{gaps.min():.3f}"),
    ]  # fmt: skip
    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()

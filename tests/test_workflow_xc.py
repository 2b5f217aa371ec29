"""The whole pipeline with the xeno-canto stage on, against the local stand-in API."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from workflow_utils import copy_workflow, load_config, snakemake, write_config
from xc_standin import DEFAULT_KEY, running_standin

from birdclef.demo import demo_species

pytestmark = pytest.mark.workflow

N_SPECIES = 10


def test_scraped_recordings_flow_through_the_whole_pipeline(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    names = [s.scientific_name for s in demo_species(N_SPECIES)]
    species = {names[0]: 14, names[1]: 6, names[2]: 5}
    with running_standin(species) as server:
        config = load_config(workdir)
        config["data"]["demo"].update(
            {"n_species": N_SPECIES, "recordings_per_species": 4, "n_train_soundscapes": 1, "n_test_soundscapes": 1}
        )
        config["xeno_canto"] = {
            "enabled": True,
            "base_url": server.base_url,
            "key_env": "XC_WORKFLOW_TEST_KEY",
            "requests_per_second": 200,
            "per_page": 50,
            "backoff_seconds": 0.01,
        }
        config["train"].update({"epochs": 1, "samples_per_epoch": 64})
        config["pseudo"]["rounds"] = []
        config["export"].update({"calibration_size": 16, "on_gate_fail": "warn"})
        path = write_config(workdir, "xc.yaml", config)
        snakemake(
            workdir, "--cores", "2", "submission", "--configfile", str(path),
            env_extra={"XC_WORKFLOW_TEST_KEY": DEFAULT_KEY},
        )
        assert len(server.requests) > 0
    for log in (workdir / "results/logs").rglob("*.log"):
        assert DEFAULT_KEY not in log.read_text(), f"API key leaked into {log}"

    xc_dir = next((workdir / "results/xc_scrape").iterdir())
    headline = json.loads((xc_dir / "manifest.json").read_text())["headline"]
    rows = pd.read_csv(xc_dir / "train_xc.csv")
    assert len(rows) > 0 and (rows["collection"] == "XC").all()
    assert headline["records"]["kept"] == len(rows)
    skipped = headline["records"]["skipped"]
    assert skipped.get("restricted") == 1 and skipped.get("corrupt_audio") == 1, skipped

    catalog_headline = json.loads(next((workdir / "results/catalog").glob("*/manifest.json")).read_text())["headline"]
    assert catalog_headline["extra_rows"] == len(rows)
    index = pd.read_parquet(next((workdir / "results/mels").glob("*/index.parquet")))
    assert set(rows["filename"]) <= set(index["filename"])
    assert (workdir / "results/submission.csv").is_file()

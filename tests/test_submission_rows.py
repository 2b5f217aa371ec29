"""The submission's rows come from the test audio, not from sample_submission.csv.

A Kaggle-like competition folder is built in tmp_path: a 3-row
sample_submission.csv (Kaggle hides the test soundscapes until the rerun, so
its sample lists only a few rows) and test soundscapes of different lengths
(60 s, 20 s, 62 s, 3 s), one stem with underscores, one corrupt file and a
stray non-audio file. A tiny two-member OpenVINO bundle (exported as
test_inference.py exports its bundles) predicts them through
`birdclef.runtime.submission.predict_submission`, the one code path of the submission
stage and of the Kaggle bundle's predict.py (`birdclef.runtime.predict`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from test_export import CLASSES, MEL
from test_inference import calibration_windows, calls, tiny_ensemble, with_postprocess

from birdclef.catalog import DataError
from birdclef.export import export_ensemble
from birdclef.export.kaggle import default_data_dir
from birdclef.export.kaggle import main as kaggle_main
from birdclef.runtime import predict
from birdclef.runtime.audio import write_ogg
from birdclef.runtime.inference import load_bundle
from birdclef.runtime.submission import (
    KAGGLE_DATA_DIR,
    check_sample_columns,
    list_test_audio,
    predict_submission,
)
from birdclef.submission_stage import submission_stage

UNDERSCORED = "BC2026_Test_0001_S05_20250227_010002"
# (file name, seconds, windows): sorted by file name is the submission's file order
FILES = [
    (f"{UNDERSCORED}.ogg", 60.0, 12),
    ("b_twenty.flac", 20.0, 4),
    ("c_long.ogg", 62.0, 13),
    ("d_corrupt.ogg", None, 12),  # garbage: no readable header, so a one-minute file's rows
    ("e_short.WAV", 3.0, 1),
]
SAMPLE_ROWS = [f"BC2026_Test_0000_S01_20250101_000000_{end}" for end in (5, 10, 15)]


def expected_row_ids() -> list[str]:
    return [f"{Path(name).stem}_{5 * (k + 1)}" for name, _, windows in FILES for k in range(windows)]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """Two tiny members on one mel group, exported to f32 (no gate)."""
    root = tmp_path_factory.mktemp("submission_bundle")
    calibration = calibration_windows(MEL)
    ensemble = tiny_ensemble(root, (0.7, 0.3), calibration, first_seed=20)
    export_ensemble(ensemble, root / "f32", calibration, precision="f32")
    return root / "f32"


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return load_bundle(bundle_dir, threads=2)


def write_sample(path: Path, columns: list[str] = CLASSES) -> pd.DataFrame:
    sample = pd.DataFrame({"row_id": SAMPLE_ROWS})
    for k, label in enumerate(columns):
        sample[label] = [0.1 * (k + 1), 0.2, 0.3]
    sample.to_csv(path, index=False)
    return sample


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> Path:
    """A Kaggle-like data folder: 3-row sample_submission.csv and test_soundscapes/."""
    root = tmp_path_factory.mktemp("competition")
    test_dir = root / "test_soundscapes"
    test_dir.mkdir()
    for seed, (name, seconds, _) in enumerate(FILES):
        path = test_dir / name
        if seconds is None:
            path.write_bytes(np.random.default_rng(3).bytes(4000))
        elif path.suffix == ".ogg":
            write_ogg(path, calls(seconds, 32000, seed), 32000)
        else:
            sf.write(path, calls(seconds, 32000, seed), 32000)
    (test_dir / "notes.txt").write_text("not audio")
    write_sample(root / "sample_submission.csv")
    return root


def test_rows_come_from_every_test_file(competition, bundle, caplog):
    assert [p.name for p in list_test_audio(competition / "test_soundscapes")] == [name for name, _, _ in FILES]
    with caplog.at_level(logging.WARNING):
        frame, stats = predict_submission(
            competition / "test_soundscapes", competition / "sample_submission.csv", bundle, progress=False
        )
    sample = pd.read_csv(competition / "sample_submission.csv")
    assert list(frame.columns) == list(sample.columns)
    assert frame["row_id"].tolist() == expected_row_ids()
    assert len(frame) == 12 + 4 + 13 + 12 + 1
    assert f"{UNDERSCORED}_5" in frame["row_id"].tolist() and f"{UNDERSCORED}_60" in frame["row_id"].tolist()
    assert stats["soundscapes"] == 5 and stats["rows"] == 42 and stats["rows_from_sample"] == 0
    assert stats["undecodable_files"] == 1 and stats["undecodable"] == ["d_corrupt.ogg"]
    values = frame[CLASSES].to_numpy()
    corrupt = frame["row_id"].str.startswith("d_corrupt_").to_numpy()
    assert corrupt.sum() == 12 and (values[corrupt] == 0.0).all()
    assert (values[~corrupt] > 0).all() and (values <= 1).all()
    assert "d_corrupt.ogg" in caplog.text and "written as 0" in caplog.text


def test_rank_combine_zeroes_the_undecodable_rows(competition, bundle_dir, tmp_path):
    ranked = with_postprocess(bundle_dir, tmp_path / "ranked", {"smoothing": 0.2}, combine="rank")
    frame, stats = predict_submission(
        competition / "test_soundscapes", competition / "sample_submission.csv",
        load_bundle(ranked, threads=2), progress=False,
    )
    assert frame["row_id"].tolist() == expected_row_ids() and stats["undecodable_files"] == 1
    corrupt = frame["row_id"].str.startswith("d_corrupt_").to_numpy()
    values = frame[CLASSES].to_numpy()
    assert (values[corrupt] == 0.0).all() and (values[~corrupt] > 0).all()


@pytest.mark.parametrize("state", ["empty", "missing"])
def test_no_test_audio_writes_the_sample_rows(state, bundle, bundle_dir, tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    sample = write_sample(data / "sample_submission.csv")
    if state == "empty":
        (data / "test_soundscapes").mkdir()
        (data / "test_soundscapes" / "README.txt").write_text("hidden until the rerun")
    with caplog.at_level(logging.WARNING, logger="birdclef.runtime.submission"):
        frame, stats = predict_submission(data / "test_soundscapes", data / "sample_submission.csv", bundle)
    assert "no audio files" in caplog.text and "hidden until the notebook is rerun" in caplog.text
    pd.testing.assert_frame_equal(frame, sample)
    assert stats["rows_from_sample"] == 3 and stats["soundscapes"] == 0 and stats["undecodable_files"] == 0

    out = tmp_path / "submission.csv"
    argv = ["--data", str(data), "--bundle", str(bundle_dir), "--out", str(out), "--threads", "1"]
    assert predict.main(argv) == 0
    written = pd.read_csv(out)
    assert written["row_id"].tolist() == SAMPLE_ROWS
    np.testing.assert_allclose(written[CLASSES].to_numpy(), sample[CLASSES].to_numpy())


def test_sample_columns_must_be_the_bundle_classes_in_order(competition, bundle, tmp_path):
    assert check_sample_columns(pd.read_csv(competition / "sample_submission.csv"), CLASSES) == CLASSES
    swapped = [CLASSES[0], CLASSES[2], CLASSES[1], *CLASSES[3:]]
    write_sample(tmp_path / "sample_submission.csv", swapped)
    with pytest.raises(DataError) as error:
        predict_submission(competition / "test_soundscapes", tmp_path / "sample_submission.csv", bundle)
    message = str(error.value)
    assert str(tmp_path / "sample_submission.csv") in message
    assert f"class column 2 (after row_id) is {CLASSES[2]!r}" in message
    assert f"class 2 (taxonomy.csv order) is {CLASSES[1]!r}" in message
    assert "the taxonomy.csv order must match the sample's columns" in message

    sample = pd.read_csv(competition / "sample_submission.csv")
    with pytest.raises(DataError, match=r"columns the models do not predict: \['zzz9'\].*classes without a "
                       rf"column: \[{CLASSES[-1]!r}\]"):
        check_sample_columns(sample.rename(columns={CLASSES[-1]: "zzz9"}), CLASSES)
    with pytest.raises(DataError, match=r"classes without a column: \[" + repr(CLASSES[0])):
        check_sample_columns(sample.drop(columns=[CLASSES[0]]), CLASSES)
    with pytest.raises(DataError, match="sample_submission.csv has no row_id column"):
        check_sample_columns(sample.drop(columns=["row_id"]), CLASSES)


def test_stage_and_predict_py_write_the_same_csv(competition, bundle_dir, tmp_path):
    out = tmp_path / "stage"
    headline = submission_stage(
        bundle_path=str(bundle_dir / "bundle.json"),
        sample_submission_csv=str(competition / "sample_submission.csv"),
        soundscape_dir=str(competition / "test_soundscapes"),
        ground_truth_csv=None,
        out_submission=str(out / "submission.csv"),
        out_manifest=str(out / "manifest.json"),
        settings={"precision_hint": "f32"},
        tag="t1",
        upstream={"export": "e1"},
        threads=2,
        kaggle_data_dir="/kaggle/input/competitions/birdclef-2099",
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["headline"] == headline
    assert manifest["settings"] == {"precision_hint": "f32"}
    assert headline["kaggle_data_dir"] == "/kaggle/input/competitions/birdclef-2099"
    assert headline["rows"] == 42 and headline["soundscapes"] == 5 and headline["rows_from_sample"] == 0
    assert headline["undecodable_files"] == 1 and headline["undecodable"] == ["d_corrupt.ogg"]

    kaggle_out = tmp_path / "kaggle" / "submission.csv"
    kaggle_out.parent.mkdir()
    argv = ["--data", str(competition), "--bundle", str(bundle_dir), "--out", str(kaggle_out), "--threads", "2"]
    assert predict.main(argv) == 0
    assert kaggle_out.read_bytes() == (out / "submission.csv").read_bytes()
    written = pd.read_csv(kaggle_out)
    assert written["row_id"].tolist() == expected_row_ids()

    # a stage without test audio: the sample's rows, counted
    headline = submission_stage(
        str(bundle_dir / "bundle.json"), str(competition / "sample_submission.csv"),
        str(tmp_path / "absent"), None, str(out / "empty.csv"), str(out / "empty.json"),
        {"precision_hint": "f32"}, "t2", {"export": "e1"}, threads=1,
    )
    assert headline["rows_from_sample"] == 3 and headline["rows"] == 3 and headline["kaggle_data_dir"] is None
    assert pd.read_csv(out / "empty.csv")["row_id"].tolist() == SAMPLE_ROWS


def test_kaggle_data_dir_follows_the_submission_manifest(bundle_dir, tmp_path):
    results = tmp_path / "results"
    assert default_data_dir(None, results) == KAGGLE_DATA_DIR  # no submission yet
    export = results / "export" / "e1"
    export.parent.mkdir(parents=True)
    export.symlink_to(bundle_dir, target_is_directory=True)
    folder = results / "submission" / "s1"
    folder.mkdir(parents=True)
    (folder / "submission.csv").write_text("row_id,a\nx_5,0.5\n")
    (results / "submission.csv").write_text("row_id,a\nx_5,0.5\n")
    chosen = "/kaggle/input/competitions/birdclef-2025"
    (folder / "manifest.json").write_text(
        json.dumps({"upstream": {"export": "e1"}, "headline": {"kaggle_data_dir": chosen}})
    )
    assert default_data_dir(None, results) == chosen
    assert default_data_dir(export, results) == chosen
    assert default_data_dir(tmp_path / "other", results) == KAGGLE_DATA_DIR

    out = tmp_path / "kaggle_bundle"
    summary = kaggle_main(["--results", str(results), "--out", str(out)])
    assert summary["data_dir"] == chosen
    assert f"DATA_DIR = {chosen!r}" in (out / "predict.py").read_text()
    assert f"`{chosen}`" in (out / "README.md").read_text()
    summary = kaggle_main(["--results", str(results), "--out", str(out), "--data-dir", "/data/x"])
    assert summary["data_dir"] == "/data/x" and "DATA_DIR = '/data/x'" in (out / "predict.py").read_text()

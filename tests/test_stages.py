"""Catalog, mel cache, folds, pseudo-labels, ensemble and submission logic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdclef import catalog, ensemble, folds, mels, pseudo
from birdclef.common import metrics
from birdclef.runtime import features, submission
from birdclef.runtime.audio import BadAudioError

MEL = {
    "sample_rate": 32000,
    "n_fft": 1024,
    "hop_length": 512,
    "n_mels": 32,
    "fmin": 50,
    "fmax": 14000,
    "top_db": 80,
    "window_seconds": 1.0,
    "max_seconds": 3.0,
}


def build(root, **kwargs):
    return catalog.build_catalog(root / "train.csv", root / "taxonomy.csv", root / "train_audio", **kwargs)


def test_catalog_reads_birdclef_layout(mini_dataset):
    table, stats = build(mini_dataset)
    assert len(table) == 12 and stats["bad_audio"] == 0
    assert list(table.columns[:13]) == list(catalog.TRAIN_COLUMNS)
    first = table[table["filename"] == "aaa1/XC00.ogg"].iloc[0]
    assert first["secondary_labels"] == ["bbb1"]
    assert first["duration_s"] == pytest.approx(2.0, abs=0.01)


def test_catalog_missing_column_names_it(mini_dataset):
    frame = pd.read_csv(mini_dataset / "train.csv").drop(columns=["filename"])
    frame.to_csv(mini_dataset / "train.csv", index=False)
    with pytest.raises(catalog.DataError, match=r"missing required column\(s\) \['filename'\]"):
        build(mini_dataset)


def test_catalog_missing_file_names_row_and_file(mini_dataset):
    frame = pd.read_csv(mini_dataset / "train.csv")
    frame.loc[5, "filename"] = "bbb1/missing.ogg"
    frame.to_csv(mini_dataset / "train.csv", index=False)
    with pytest.raises(catalog.DataError, match=r"row 7: 'bbb1/missing.ogg'"):
        build(mini_dataset)


def test_catalog_unknown_label_names_row(mini_dataset):
    frame = pd.read_csv(mini_dataset / "train.csv")
    frame.loc[2, "primary_label"] = "zzz9"
    frame.to_csv(mini_dataset / "train.csv", index=False)
    with pytest.raises(catalog.DataError, match=r"row 4: primary_label 'zzz9'"):
        build(mini_dataset)


def test_catalog_corrupt_audio_skipped_or_fails(mini_dataset):
    (mini_dataset / "train_audio" / "ccc1" / "XC20.ogg").write_bytes(b"OggS not really" * 50)
    table, stats = build(mini_dataset, on_bad_audio="skip")
    assert len(table) == 11 and stats["bad_audio"] == 1
    assert stats["bad_audio_files"][0]["filename"] == "ccc1/XC20.ogg"
    with pytest.raises(BadAudioError, match="XC20.ogg"):
        build(mini_dataset, on_bad_audio="fail")


def test_mel_cache_matches_direct_computation(mini_dataset, tmp_path):
    table, _ = build(mini_dataset)
    table["audio_path"] = table["path"]
    settings = {**MEL, "on_bad_audio": "skip"}
    stats = mels.build_mel_cache(table, tmp_path / "m.npy", tmp_path / "i.parquet", settings, threads=2, progress=False)
    cache = np.load(tmp_path / "m.npy", mmap_mode="r")
    index = pd.read_parquet(tmp_path / "i.parquet")
    assert cache.dtype == np.float16 and cache.shape == (stats["frames"], 32)
    assert index["offset"].iloc[1] == index["frames"].iloc[0]
    from birdclef.runtime.audio import read_audio

    row = index.iloc[3]
    wave = read_audio(table.set_index("filename").loc[row["filename"], "path"], 32000, max_seconds=3.0)
    direct = features.log_mel(wave, features.mel_filterbank(MEL), 1024, 512, 80).T
    cached = np.asarray(cache[row["offset"] : row["offset"] + row["frames"]], dtype=np.float32)
    assert cached.shape == direct.shape
    assert np.abs(cached - direct).max() < 0.05  # float16 rounding of dB values
    # the first 3 s only, and no bytes left behind besides the two outputs
    assert index["seconds"].max() <= 3.0 + 512 / 32000
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == ["i.parquet", "m.npy"]


def test_soundscape_cache_windows_and_row_ids(tmp_path):
    import soundfile as sf
    from conftest import tone

    folder = tmp_path / "sc"
    folder.mkdir()
    sf.write(folder / "s1.ogg", tone(3.0, 2000), 32000, format="OGG", subtype="VORBIS")
    sf.write(folder / "s2.ogg", tone(1.5, 3000), 32000, format="OGG", subtype="VORBIS")
    (folder / "bad.ogg").write_bytes(b"junk")
    paths = sorted(str(p) for p in folder.iterdir())
    stats = mels.build_soundscape_cache(paths, tmp_path / "m.npy", tmp_path / "i.parquet", {**MEL}, progress=False)
    array = np.load(tmp_path / "m.npy")
    index = pd.read_parquet(tmp_path / "i.parquet")
    assert list(index["row_id"]) == ["s1_1", "s1_2", "s1_3", "s2_1", "s2_2"]
    assert array.shape == (5, 32, features.window_frames(MEL))
    assert stats["bad_audio"] == 1


def test_folds_group_and_keep_rare_classes_in_training():
    index = pd.DataFrame(
        {
            "filename": [f"r{i}" for i in range(22)],
            "primary_label": ["a"] * 10 + ["b"] * 10 + ["rare"] * 2,
            "author": [f"p{i // 2}" for i in range(22)],
        }
    )
    table = folds.make_folds(index, n_folds=5, seed=0, group_column="author")
    assert set(table.loc[table["primary_label"] == "rare", "fold"]) == {folds.ALWAYS_TRAIN}
    for _, group in table.groupby("group"):
        assert group["fold"].nunique() == 1
    assert sorted(table.loc[table["primary_label"] == "a", "fold"].unique()) == [0, 1, 2, 3, 4]
    again = folds.make_folds(index, n_folds=5, seed=0, group_column="author")
    assert table.equals(again)
    with pytest.raises(ValueError, match="folds.group_column"):
        folds.make_folds(index, 5, 0, group_column="nope")


def test_power_scaling():
    probs = np.array([[0.6, 0.3, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    identity = pseudo.power_scale(probs, 1.0)
    np.testing.assert_allclose(identity[0], probs[0] / probs[0].sum(), rtol=1e-6)
    sharp = pseudo.power_scale(probs, 3.0)
    np.testing.assert_allclose(sharp[[0, 2]].sum(axis=1), 1.0, rtol=1e-6)
    assert sharp[0, 0] > identity[0, 0] and sharp[0, 2] < identity[0, 2]
    assert sharp[0, 3] == 0.0 and not sharp[1].any()
    np.testing.assert_allclose(sharp[2], 0.25)
    with pytest.raises(ValueError):
        pseudo.power_scale(probs, 0.0)


def test_threshold_rule_keeps_and_zeroes():
    probs = np.array([[0.7, 0.05, 0.2], [0.4, 0.3, 0.3]])
    keep, labels = pseudo.threshold_labels(probs, keep_threshold=0.5, zero_threshold=0.1)
    assert keep.tolist() == [True, False]
    assert labels[0].tolist() == pytest.approx([0.7, 0.0, 0.2])


def test_make_pseudo_labels_averages_models():
    base = pd.DataFrame({"row_id": ["s_5", "s_10"], "soundscape": ["s", "s"], "end_s": [5, 10]})
    a = base.assign(x=[0.8, 0.2], y=[0.2, 0.2])
    b = base.assign(x=[0.6, 0.0], y=[0.4, 0.2])
    labels, stats = pseudo.make_pseudo_labels([a, b], ["x", "y"], {"method": "power", "power": 1.0})
    np.testing.assert_allclose(labels[["x", "y"]].to_numpy(), [[0.7, 0.3], [1 / 3, 2 / 3]], rtol=1e-6)
    assert stats["models"] == 2
    with pytest.raises(ValueError, match="method"):
        pseudo.make_pseudo_labels([a], ["x", "y"], {"method": "magic"})


def test_ensemble_scores_members_and_mean():
    index = pd.DataFrame(
        {"filename": ["r1", "r2", "r3", "r4"], "primary_label": ["x", "y", "x", "y"], "secondary_labels": [[]] * 4}
    )
    good = pd.DataFrame({"filename": ["r1", "r2", "r3", "r4"], "fold": 0, "x": [0.9, 0.1, 0.8, 0.3], "y": [0.1, 0.9, 0.3, 0.7]})
    bad = good.assign(x=1 - good["x"], y=1 - good["y"])
    members = [
        {"name": "m1/fold0", "backbone": "m1", "fold": 0, "checkpoint": "a.pt"},
        {"name": "m2/fold0", "backbone": "m2", "fold": 0, "checkpoint": "b.pt"},
    ]
    definition = ensemble.build_ensemble(
        members, {"m1/fold0": good, "m2/fold0": bad}, index, ["x", "y"], {"weights": {"m1": 3.0, "m2": 1.0}}
    )
    scores = [m["oof_auc"] for m in definition["members"]]
    assert scores == [1.0, 0.0]
    assert [m["weight"] for m in definition["members"]] == [0.75, 0.25]
    assert definition["oof_auc"] == 1.0


def test_submission_scored_and_written(tmp_path):
    sub = pd.DataFrame({"row_id": ["a_5", "a_10", "b_5"], "x": [0.9, 0.2, 0.8], "y": [0.1, 0.9, 0.3]})
    truth = pd.DataFrame({"row_id": ["a_10", "a_5", "b_5"], "x": [0, 1, 1], "y": [1, 0, 0]})
    assert metrics.score_submission(sub, truth, ["x", "y"]) == pytest.approx(1.0)
    with pytest.raises(catalog.DataError, match="ground truth lacks rows"):
        metrics.score_submission(sub.assign(row_id=["a_5", "a_10", "c_5"]), truth, ["x", "y"])
    with pytest.raises(catalog.DataError, match="ground truth lacks classes"):
        metrics.score_submission(sub.assign(z=0.5), truth, ["x", "y", "z"])
    submission.write_submission(sub, tmp_path / "s.csv")
    assert pd.read_csv(tmp_path / "s.csv")["row_id"].tolist() == ["a_5", "a_10", "b_5"]

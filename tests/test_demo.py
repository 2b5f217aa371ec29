"""Tests for the synthetic BirdCLEF 2025 demo data generator (`birdclef.demo`)."""

from __future__ import annotations

import ast
import importlib.resources
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef import demo
from birdclef.audio import read_audio

SMALL = {
    "n_species": 10,
    "recordings_per_species": 4,
    "recording_seconds": (6.0, 9.0),
    "n_train_soundscapes": 1,
    "n_test_soundscapes": 2,
    "soundscape_seconds": 20.0,
    "speech_fraction": 0.25,
}
TRAIN_COLUMNS = [
    "primary_label",
    "secondary_labels",
    "type",
    "filename",
    "collection",
    "rating",
    "url",
    "latitude",
    "longitude",
    "scientific_name",
    "common_name",
    "author",
    "license",
]
TAXONOMY_COLUMNS = [
    "primary_label",
    "inat_taxon_id",
    "scientific_name",
    "common_name",
    "class_name",
]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    """One small demo folder (seed 0) shared by the read-only tests."""
    root = tmp_path_factory.mktemp("demo") / "birdclef-2025"
    summary = demo.generate_demo(root, seed=0, **SMALL)
    return root, summary


def _train(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "train.csv", dtype={"primary_label": str})


def _labels(root: Path) -> list[str]:
    return pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})[
        "primary_label"
    ].tolist()


def _info(root: Path) -> dict:
    return json.loads((root / "demo_info.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_and_column_names(small):
    root, summary = small
    assert sorted(p.name for p in root.iterdir()) == [
        "demo_info.json",
        "sample_submission.csv",
        "taxonomy.csv",
        "test_ground_truth.csv",
        "test_soundscapes",
        "train.csv",
        "train_audio",
        "train_soundscapes",
    ]
    train = _train(root)
    assert list(train.columns) == TRAIN_COLUMNS
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})
    assert list(taxonomy.columns) == TAXONOMY_COLUMNS
    labels = taxonomy["primary_label"].tolist()
    assert len(labels) == len(set(labels)) == SMALL["n_species"]
    assert labels == sorted(labels)
    for name in ("sample_submission.csv", "test_ground_truth.csv"):
        assert list(pd.read_csv(root / name).columns) == ["row_id", *labels]

    on_disk = {str(p.relative_to(root / "train_audio")) for p in root.glob("train_audio/*/*")}
    assert on_disk == set(train["filename"])
    assert len(train) == SMALL["n_species"] * SMALL["recordings_per_species"]
    assert len(list(root.glob("train_soundscapes/*.ogg"))) == SMALL["n_train_soundscapes"]
    assert len(list(root.glob("test_soundscapes/*.ogg"))) == SMALL["n_test_soundscapes"]

    assert summary["species"] == SMALL["n_species"]
    assert summary["recordings"] == len(train)
    assert summary["speech_recordings"] == len(_info(root)["speech"])
    assert summary["bytes"] == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_audio_is_32k_mono_ogg_vorbis(small):
    root, _ = small
    low, high = SMALL["recording_seconds"]
    for path in root.glob("train_audio/*/*.ogg"):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels) == (32000, 1)
        assert (info.format, info.subtype) == ("OGG", "VORBIS")
        assert low - 0.01 <= info.duration <= high + 0.01
    for path in [*root.glob("train_soundscapes/*.ogg"), *root.glob("test_soundscapes/*.ogg")]:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format) == (32000, 1, "OGG")
        assert info.duration == pytest.approx(SMALL["soundscape_seconds"], abs=0.01)
        assert re.fullmatch(r"H\d\d_\d{8}_\d{6}", path.stem)
    wave = read_audio(next(root.glob("test_soundscapes/*.ogg")), 32000)
    assert wave.dtype == np.float32 and 0.05 < np.abs(wave).max() <= 1.0


def test_train_metadata_is_consistent(small):
    root, _ = small
    train = _train(root)
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})
    labels = set(taxonomy["primary_label"])
    names = taxonomy.set_index("primary_label")
    assert set(train["primary_label"]) == labels
    assert set(taxonomy["class_name"]) >= {"Aves", "Amphibia", "Insecta"}

    with_secondary = 0
    for row in train.itertuples():
        secondary = ast.literal_eval(row.secondary_labels)
        assert isinstance(secondary, list)
        assert set(secondary) <= labels
        assert row.primary_label not in secondary
        assert len(secondary) == len(set(secondary))
        with_secondary += bool(secondary)
        assert isinstance(ast.literal_eval(row.type), list)
        label, stem = row.filename.split("/")
        assert label == row.primary_label and stem.endswith(".ogg")
        assert stem.startswith(row.collection) and row.collection in {"XC", "iNat"}
        assert row.url.startswith("https://")
        assert 0.0 <= row.rating <= 5.0 and (2 * row.rating).is_integer()
        assert -90 <= row.latitude <= 90 and -180 <= row.longitude <= 180
        assert row.scientific_name == names.loc[row.primary_label, "scientific_name"]
        assert row.common_name == names.loc[row.primary_label, "common_name"]
        assert row.author and row.license.startswith("cc")
    assert 0 < with_secondary < len(train)
    assert train["rating"].nunique() >= 4
    assert train["collection"].nunique() == 2
    assert train["filename"].is_unique


def test_ground_truth_matches_submission_and_calls(small):
    root, _ = small
    labels = _labels(root)
    truth = pd.read_csv(root / "test_ground_truth.csv")
    submission = pd.read_csv(root / "sample_submission.csv")
    assert truth["row_id"].tolist() == submission["row_id"].tolist()
    np.testing.assert_allclose(submission[labels].sum(axis=1), 1.0)

    info = _info(root)
    n_windows = int(SMALL["soundscape_seconds"] // 5)
    expected_rows = []
    for scape in info["test_soundscapes"]:
        stem = scape["filename"].removesuffix(".ogg")
        assert (root / "test_soundscapes" / scape["filename"]).exists()
        for w in range(n_windows):
            expected_rows.append(f"{stem}_{5 * (w + 1)}")
            # The documented rule, re-implemented: overlap >= min(0.5 s, half the call).
            present = {
                label
                for label, start, end in scape["calls"]
                if min(end, 5 * (w + 1)) - max(start, 5 * w) >= min(0.5, (end - start) / 2)
            }
            row = truth.loc[truth["row_id"] == f"{stem}_{5 * (w + 1)}", labels].iloc[0]
            assert {label for label in labels if row[label] == 1} == present
    assert truth["row_id"].tolist() == expected_rows
    values = truth[labels].to_numpy()
    assert set(np.unique(values)) <= {0, 1} and values.sum() > 0


def test_same_seed_is_byte_identical_and_other_seed_differs(small, tmp_path):
    root, summary = small
    again = demo.generate_demo(tmp_path / "again", seed=0, **SMALL)
    assert {k: v for k, v in again.items() if k != "out_root"} == {
        k: v for k, v in summary.items() if k != "out_root"
    }
    assert _files(tmp_path / "again") == _files(root)

    demo.generate_demo(tmp_path / "other", seed=1, **SMALL)
    other = tmp_path / "other"
    assert (other / "train.csv").read_bytes() != (root / "train.csv").read_bytes()
    assert _labels(other) == _labels(root)  # species do not depend on the seed
    first = sorted(root.glob("test_soundscapes/*.ogg"))[0]
    other_first = sorted(other.glob("test_soundscapes/*.ogg"))[0]
    assert not np.array_equal(read_audio(first, 32000), read_audio(other_first, 32000))


def test_speech_is_where_demo_info_says(small):
    root, _ = small
    info = _info(root)
    train = _train(root)
    n_recordings = len(train)
    speech = info["speech"]
    assert len(speech) == round(SMALL["speech_fraction"] * n_recordings)
    assert len({s["filename"] for s in speech}) == len(speech)
    shipped = {
        p.name for p in importlib.resources.files("birdclef").joinpath("data/speech").iterdir()
    }
    for entry in speech:
        assert entry["filename"] in set(train["filename"])
        assert entry["clip"] in shipped
        assert 0.0 <= entry["snr_db"] <= 15.0
        wave, rate = sf.read(root / "train_audio" / entry["filename"])
        start, end = int(entry["start_s"] * rate), int(entry["end_s"] * rate)
        assert 0 <= start < end <= len(wave) and end - start > 2 * rate
        inside = np.mean(wave[start:end] ** 2)
        outside = np.mean(np.concatenate([wave[:start], wave[end:]]) ** 2)
        # Speech is added at >= 0 dB relative to the recording: at least ~3 dB more power.
        assert 10 * np.log10(inside / outside) > 2.0, entry


def _band_log_power(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frame times, log power in 250 Hz bands from 500 Hz to 16 kHz) of a file."""
    wave, rate = sf.read(path)
    n_fft, hop = 1024, 512
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)[:, 16:512]) ** 2
    bands = power.reshape(len(power), 62, 8).sum(axis=2)
    times = (np.arange(len(bands)) * hop + n_fft / 2) / rate
    return times, np.log10(bands + 1e-12)


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest-centroid accuracy of unit-normalised `features`."""
    features = features / np.linalg.norm(features, axis=1, keepdims=True)
    correct = 0
    for i in range(len(labels)):
        rest = np.arange(len(labels)) != i
        classes = sorted(set(labels[rest]))
        centroids = np.stack([features[rest & (labels == c)].mean(axis=0) for c in classes])
        guess = classes[int(np.argmin(((centroids - features[i]) ** 2).sum(axis=1)))]
        correct += guess == labels[i]
    return correct / len(labels)


def test_species_are_distinguishable(small):
    root, _ = small
    info = _info(root)
    speech = {entry["filename"] for entry in info["speech"]}
    call_features, whole_features, labels, clean = [], [], [], []
    for recording in info["recordings"]:
        label = recording["filename"].split("/")[0]
        times, logp = _band_log_power(root / "train_audio" / recording["filename"])
        in_call = np.zeros(len(times), dtype=bool)
        for call_label, start, end in recording["calls"]:
            if call_label == label:
                in_call |= (times >= start) & (times <= end)
        assert in_call.any() and (~in_call).sum() > 10
        floor = np.percentile(logp[~in_call], 20, axis=0)
        call_features.append(logp[in_call].mean(axis=0) - floor)
        power = 10**logp
        whole_features.append(np.log10(power.mean(axis=0)) - np.median(logp, axis=0))
        labels.append(label)
        clean.append(recording["filename"] not in speech)
    labels_arr, clean_arr = np.array(labels), np.array(clean)
    chance = 1 / SMALL["n_species"]
    # The primary species' calls: their spectra alone identify the species.
    assert _nearest_centroid_accuracy(np.array(call_features), labels_arr) >= 0.85
    # Whole recordings (noise, secondary species and all), without speech.
    whole = np.array(whole_features)[clean_arr]
    assert _nearest_centroid_accuracy(whole, labels_arr[clean_arr]) >= 5 * chance


def test_demo_species_table():
    species = demo.demo_species(12)
    assert len({s.label for s in species}) == 12
    assert len({s.kind for s in species}) == 12  # one call archetype each
    centres = sorted(s.centre_hz for s in species)
    assert centres[0] == pytest.approx(1000) and centres[-1] == pytest.approx(9500)
    assert min(b / a for a, b in zip(centres, centres[1:], strict=False)) > 1.2
    for s in species:
        assert s.label.isdigit() == (s.class_name != "Aves")
        if s.label.isdigit():
            assert int(s.label) == s.inat_taxon_id
    assert [s.label for s in demo.demo_species(10)] == [s.label for s in demo.demo_species(10)]
    with pytest.raises(ValueError):
        demo.demo_species(1)


def test_window_labels_rule():
    labels = ["a", "b"]
    calls = [
        ["a", 4.0, 5.3],  # 1.0 s in window 1, 0.3 s (< 0.5 s) in window 2
        ["b", 9.8, 10.2],  # short call: half of it (0.2 s) in each of windows 2 and 3
    ]
    matrix = demo.window_labels(calls, 15.0, labels)
    assert matrix.tolist() == [[1, 0], [0, 1], [0, 1]]


def test_failed_run_leaves_previous_folder_untouched(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    (root / "keep.txt").write_text("old")

    def broken(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(demo, "_render_soundscape", broken)
    with pytest.raises(RuntimeError, match="killed"):
        demo.generate_demo(root, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folder left
    assert [p.name for p in root.iterdir()] == ["keep.txt"]


def test_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="multiple of 5"):
        demo.generate_demo(tmp_path / "x", soundscape_seconds=12.0)
    with pytest.raises(ValueError, match="speech_fraction"):
        demo.generate_demo(tmp_path / "x", speech_fraction=1.5)
    with pytest.raises(ValueError, match="n_species"):
        demo.generate_demo(tmp_path / "x", n_species=1)
    assert not (tmp_path / "x").exists()


def test_set_ogg_serial_keeps_audio_and_checksums(tmp_path):
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 32000).astype(np.float32)
    path = tmp_path / "a.ogg"
    sf.write(path, wave, 32000, format="OGG", subtype="VORBIS")
    data = path.read_bytes()
    # Rewriting the existing serial must reproduce libsndfile's page checksums exactly.
    assert demo.set_ogg_serial(data, int.from_bytes(data[14:18], "little")) == data
    changed = tmp_path / "b.ogg"
    changed.write_bytes(demo.set_ogg_serial(data, 1234))
    assert changed.read_bytes()[14:18] == (1234).to_bytes(4, "little")
    np.testing.assert_array_equal(sf.read(changed)[0], sf.read(path)[0])
    with pytest.raises(ValueError):
        demo.set_ogg_serial(b"not an ogg file at all, no", 1)


def test_speech_clips_are_package_data():
    folder = importlib.resources.files("birdclef").joinpath("data/speech")
    names = sorted(p.name for p in folder.iterdir())
    assert "README.md" in names
    clips = [n for n in names if n.endswith(".ogg")]
    assert len(clips) >= 3
    for name in clips:
        with importlib.resources.as_file(folder.joinpath(name)) as path:
            info = sf.info(str(path))
            assert (info.samplerate, info.channels) == (32000, 1)
            assert 2.0 <= info.duration <= 5.0


def test_demo_stage_passes_config_settings(tmp_path):
    settings = {**SMALL, "seed": 3, "recording_seconds": [4.0, 5.0], "speech_fraction": 0.0}
    summary = demo.demo_stage(tmp_path / "demo", settings)
    assert summary["recordings"] == 40 and summary["speech_recordings"] == 0
    assert _info(tmp_path / "demo")["seed"] == 3
    with pytest.raises(ValueError, match="unknown demo settings"):
        demo.demo_stage(tmp_path / "bad", {"seed": 0, "n_speceis": 10})

"""Tests for the synthetic BirdCLEF+ 2026 demo data generator (`birdclef.demo`)."""

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

from birdclef import catalog, demo
from birdclef.demo import generate as demo_generate
from birdclef.demo.soundscapes import _labelled_soundscapes, _soundscape_sites, _soundscape_stems
from birdclef.demo.tables import _hhmmss
from birdclef.runtime.audio import read_audio

SMALL = {
    "n_species": 10,
    "recordings_per_species": 4,
    "recording_seconds": (6.0, 9.0),
    "n_train_soundscapes": 4,
    "n_test_soundscapes": 2,
    "soundscape_seconds": 20.0,
    "speech_fraction": 0.25,
}
# train.csv in the 2026 order: the 2025 columns reordered, plus class_name and inat_taxon_id.
TRAIN_COLUMNS = [
    "primary_label",
    "secondary_labels",
    "type",
    "latitude",
    "longitude",
    "scientific_name",
    "common_name",
    "class_name",
    "inat_taxon_id",
    "author",
    "license",
    "rating",
    "url",
    "filename",
    "collection",
]
LABEL_FILE_COLUMNS = ["filename", "start", "end", "primary_label"]
SOUNDSCAPE_NAME = re.compile(r"BC2026_(Train|Test)_(\d{4})_(S\d+)_(\d{8})_(\d{6})")
HHMMSS = re.compile(r"\d\d:[0-5]\d:[0-5]\d")
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
    root = tmp_path_factory.mktemp("demo") / "birdclef-2026"
    summary = demo.generate_demo(root, seed=0, **SMALL)
    return root, summary


def _train(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "train.csv", dtype={"primary_label": str})


def _labels(root: Path) -> list[str]:
    return pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})[
        "primary_label"
    ].tolist()


def _scape_labels(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "train_soundscapes_labels.csv", dtype=str, keep_default_na=False)


def _seconds(hhmmss: str) -> int:
    hours, minutes, seconds = (int(x) for x in hhmmss.split(":"))
    return 3600 * hours + 60 * minutes + seconds


def _present(calls: list, w: int) -> set[str]:
    """The documented rule, re-implemented: overlap >= min(0.5 s, half the call)."""
    return {
        label
        for label, start, end in calls
        if min(end, 5 * (w + 1)) - max(start, 5 * w) >= min(0.5, (end - start) / 2)
    }


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
        "train_soundscapes_labels.csv",
    ]
    train = _train(root)
    assert list(train.columns) == TRAIN_COLUMNS == demo.TRAIN_COLUMNS_2026
    assert set(catalog.TRAIN_COLUMNS) <= set(train.columns)  # every 2025 column is there
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})
    assert list(taxonomy.columns) == TAXONOMY_COLUMNS
    labels = taxonomy["primary_label"].tolist()
    assert len(labels) == len(set(labels)) == SMALL["n_species"]
    assert labels == sorted(labels)
    for name in ("sample_submission.csv", "test_ground_truth.csv"):
        assert list(pd.read_csv(root / name).columns) == ["row_id", *labels]

    on_disk = {str(p.relative_to(root / "train_audio")) for p in root.glob("train_audio/*/*")}
    assert on_disk == set(train["filename"])
    assert len(train) == (SMALL["n_species"] - 1) * SMALL["recordings_per_species"]
    assert len(list(root.glob("train_soundscapes/*.ogg"))) == SMALL["n_train_soundscapes"]
    assert len(list(root.glob("test_soundscapes/*.ogg"))) == SMALL["n_test_soundscapes"]

    info = _info(root)
    scape_labels = _scape_labels(root)
    assert summary["species"] == SMALL["n_species"]
    assert summary["classes_without_train_audio"] == 1
    assert summary["recordings"] == len(train)
    assert summary["train_soundscapes"] == SMALL["n_train_soundscapes"]
    assert summary["labelled_train_soundscapes"] == scape_labels["filename"].nunique() == 2
    assert summary["labelled_windows"] == len(scape_labels.drop_duplicates())
    assert summary["soundscape_label_rows"] == len(scape_labels)
    assert summary["test_windows"] == len(pd.read_csv(root / "test_ground_truth.csv"))
    assert summary["sample_submission_rows"] == demo.SAMPLE_SUBMISSION_ROWS == 3
    assert 3 <= summary["sites"] <= demo.N_SITES
    assert summary["speech_recordings"] == len(info["speech"])
    assert info["summary"] == {k: v for k, v in summary.items() if k not in ("bytes", "out_root")}
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
    wave = read_audio(next(root.glob("test_soundscapes/*.ogg")), 32000)
    assert wave.dtype == np.float32 and 0.05 < np.abs(wave).max() <= 1.0


def test_soundscape_names_are_2026_style(small):
    root, _ = small
    info = _info(root)
    for split, folder in (("Train", "train_soundscapes"), ("Test", "test_soundscapes")):
        stems = sorted(p.stem for p in (root / folder).glob("*.ogg"))
        matches = [SOUNDSCAPE_NAME.fullmatch(stem) for stem in stems]
        assert all(matches), stems
        assert [m[1] for m in matches] == [split] * len(stems)
        # A running number from 0001, in file-name order.
        assert [m[2] for m in matches] == [f"{i:04d}" for i in range(1, len(stems) + 1)]
        assert [s["filename"] for s in info[f"{folder}"]] == [f"{stem}.ogg" for stem in stems]
        for m in matches:
            day = pd.Timestamp(m[4])
            assert day.year == 2025
            clock = int(m[5][:2]) * 60 + int(m[5][2:4])
            assert 4 * 60 + 30 <= clock < 10 * 60 and int(m[5][4:]) < 60  # dawn to morning
    train_sites = [SOUNDSCAPE_NAME.fullmatch(p.stem)[3] for p in root.glob("train_soundscapes/*")]
    test_sites = [SOUNDSCAPE_NAME.fullmatch(p.stem)[3] for p in root.glob("test_soundscapes/*")]
    assert len(set(train_sites)) >= 3
    assert len(set(train_sites) | set(test_sites)) <= demo.N_SITES
    assert all(re.fullmatch(r"S\d\d", site) for site in train_sites + test_sites)


def test_default_demo_names_and_sites():
    """The default config's 8 train soundscapes: >= 3 sites, the labelled half >= 2."""
    labelled = _labelled_soundscapes(8)
    assert labelled == [0, 2, 4, 6]
    for seed in range(20):
        rng = np.random.default_rng([seed, 0])
        sites = _soundscape_sites(rng)
        assert len(sites) == demo.N_SITES == len(set(sites))
        taken: set = set()
        stems = _soundscape_stems(rng, "Train", 8, sites, taken)
        tests = _soundscape_stems(rng, "Test", 10, sites, taken)
        assert len(set(stems + tests)) == 18 and len(taken) == 18
        assert len({SOUNDSCAPE_NAME.fullmatch(stem)[3] for stem in stems}) >= 3
        assert len({SOUNDSCAPE_NAME.fullmatch(stems[i])[3] for i in labelled}) >= 2
    assert _labelled_soundscapes(2) == [0, 1] and _labelled_soundscapes(3) == [0, 2]


def test_train_metadata_is_consistent(small):
    root, _ = small
    train = _train(root)
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})
    labels = set(taxonomy["primary_label"])
    names = taxonomy.set_index("primary_label")
    no_audio = set(_info(root)["classes_without_train_audio"])
    assert set(train["primary_label"]) == labels - no_audio
    assert set(taxonomy["class_name"]) >= {"Aves", "Amphibia", "Insecta"}
    assert set(taxonomy["class_name"]) <= {"Aves", "Amphibia", "Insecta", "Mammalia", "Reptilia"}
    assert (taxonomy["class_name"] == "Aves").mean() > 0.5

    with_secondary = 0
    for row in train.itertuples():
        secondary = ast.literal_eval(row.secondary_labels)
        assert isinstance(secondary, list)
        assert set(secondary) <= labels - no_audio
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
        assert row.class_name == names.loc[row.primary_label, "class_name"]
        assert row.inat_taxon_id == names.loc[row.primary_label, "inat_taxon_id"]
        assert row.author and row.license.startswith("cc")
    assert 0 < with_secondary < len(train)
    assert train["rating"].nunique() >= 4
    assert train["collection"].nunique() == 2
    assert train["filename"].is_unique


def test_sample_submission_lists_a_few_rows(small):
    root, _ = small
    labels = _labels(root)
    submission = pd.read_csv(root / "sample_submission.csv", dtype={"row_id": str})
    assert list(submission.columns) == ["row_id", *labels]
    first = sorted(p.stem for p in root.glob("test_soundscapes/*.ogg"))[0]
    assert submission["row_id"].tolist() == [f"{first}_5", f"{first}_10", f"{first}_15"]
    np.testing.assert_allclose(submission[labels].to_numpy(), 1.0 / len(labels))


def test_ground_truth_lists_every_test_window(small):
    root, _ = small
    labels = _labels(root)
    truth = pd.read_csv(root / "test_ground_truth.csv", dtype={"row_id": str})
    assert list(truth.columns) == ["row_id", *labels]
    submission = pd.read_csv(root / "sample_submission.csv", dtype={"row_id": str})
    assert set(submission["row_id"]) < set(truth["row_id"])

    info = _info(root)
    n_windows = int(SMALL["soundscape_seconds"] // 5)
    expected_rows = []
    for scape in info["test_soundscapes"]:
        stem = scape["filename"].removesuffix(".ogg")
        assert (root / "test_soundscapes" / scape["filename"]).exists()
        for w in range(n_windows):
            expected_rows.append(f"{stem}_{5 * (w + 1)}")
            row = truth.loc[truth["row_id"] == f"{stem}_{5 * (w + 1)}", labels].iloc[0]
            assert {label for label in labels if row[label] == 1} == _present(scape["calls"], w)
    assert truth["row_id"].tolist() == expected_rows
    assert len(expected_rows) == SMALL["n_test_soundscapes"] * n_windows
    values = truth[labels].to_numpy()
    assert set(np.unique(values)) <= {0, 1} and values.sum() > 0


def test_train_soundscape_labels_2026_format(small):
    root, _ = small
    labels = _labels(root)
    raw = (root / "train_soundscapes_labels.csv").read_text().splitlines()
    assert raw[0] == "filename,start,end,primary_label"
    scape_labels = _scape_labels(root)
    assert list(scape_labels.columns) == LABEL_FILE_COLUMNS
    # Every row is listed twice, as in the file Kaggle shipped in 2026.
    counts = scape_labels.value_counts()
    assert len(scape_labels) == 2 * len(counts) and set(counts) == {2}
    assert all(HHMMSS.fullmatch(t) for t in [*scape_labels["start"], *scape_labels["end"]])
    assert (scape_labels["start"].map(_seconds) % 5 == 0).all()
    assert (scape_labels["end"].map(_seconds) - scape_labels["start"].map(_seconds) == 5).all()
    assert scape_labels["end"].map(_seconds).max() <= SMALL["soundscape_seconds"]
    assert [_hhmmss(x) for x in (0, 5, 55, 60, 3605)] == [
        "00:00:00",
        "00:00:05",
        "00:00:55",
        "00:01:00",
        "01:00:05",
    ]

    info = _info(root)
    by_file = {s["filename"]: s for s in info["train_soundscapes"]}
    labelled = sorted(name for name, s in by_file.items() if s["labelled"])
    assert sorted(set(scape_labels["filename"])) == labelled  # with the .ogg suffix
    assert len(labelled) == SMALL["n_train_soundscapes"] // 2
    assert len({SOUNDSCAPE_NAME.fullmatch(Path(n).stem)[3] for n in labelled}) >= 2
    unique = scape_labels.drop_duplicates()
    for name in labelled:
        assert (root / "train_soundscapes" / name).exists()
        rows = unique[unique["filename"] == name]
        listed = {_seconds(r.start) // 5: r.primary_label for r in rows.itertuples()}
        assert len(listed) == len(rows)
        for w in range(int(SMALL["soundscape_seconds"] // 5)):
            present = _present(by_file[name]["calls"], w)
            if not present:  # windows without a call are left out
                assert w not in listed
                continue
            cell = listed[w].split(";")
            assert set(cell) == present and cell == [x for x in labels if x in present]


def test_class_without_training_audio(small):
    root, _ = small
    info = _info(root)
    (no_audio,) = info["classes_without_train_audio"]
    assert no_audio == demo.classes_without_train_audio(demo.demo_species(SMALL["n_species"]))[0]
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype=str)
    assert no_audio in set(taxonomy["primary_label"])
    for name in ("sample_submission.csv", "test_ground_truth.csv"):
        assert no_audio in pd.read_csv(root / name, nrows=0).columns
    train = pd.read_csv(root / "train.csv", dtype=str)
    assert no_audio not in set(train["primary_label"])
    assert not any(no_audio in ast.literal_eval(x) for x in train["secondary_labels"])
    assert not (root / "train_audio" / no_audio).exists()
    assert not any(r["filename"].startswith(f"{no_audio}/") for r in info["recordings"])
    assert not any(label == no_audio for r in info["recordings"] for label, _, _ in r["calls"])
    assert [s["train_audio"] for s in info["species"]] == [
        s["primary_label"] != no_audio for s in info["species"]
    ]
    # It calls in the soundscapes: the labels of train and test soundscapes have it.
    scape_labels = _scape_labels(root)
    assert scape_labels["primary_label"].str.split(";").map(lambda x: no_audio in x).any()
    truth = pd.read_csv(root / "test_ground_truth.csv")
    assert truth[no_audio].sum() > 0


def test_labels_are_strings_that_look_like_other_things(small):
    root, _ = small
    labels = _labels(root)
    numeric = [x for x in labels if x.isdigit()]
    sonotypes = [x for x in labels if re.fullmatch(r"\d+son\d+", x)]
    assert numeric == ["1139490"] and sonotypes == ["47158son01"]
    assert (root / "train_audio" / "1139490").is_dir()
    assert (root / "train_audio" / "47158son01").is_dir()
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype=str)
    ids = taxonomy.set_index("primary_label")["inat_taxon_id"]
    assert ids["1139490"] == "1139490" and ids["47158son01"] == "47158"
    train = pd.read_csv(root / "train.csv", dtype=str)
    assert {"1139490", "47158son01"} <= set(train["primary_label"])
    assert set(train["filename"].str.split("/").str[0]) == set(train["primary_label"])
    for name in ("sample_submission.csv", "test_ground_truth.csv"):
        assert list(pd.read_csv(root / name, dtype=str, nrows=0).columns)[1:] == labels
    cells = _scape_labels(root)["primary_label"].str.split(";").explode()
    assert set(cells) <= set(labels)


def test_same_seed_is_byte_identical_and_other_seed_differs(small, tmp_path):
    root, summary = small
    again = demo.generate_demo(tmp_path / "again", seed=0, **SMALL)
    assert {k: v for k, v in again.items() if k != "out_root"} == {
        k: v for k, v in summary.items() if k != "out_root"
    }
    assert _files(tmp_path / "again") == _files(root)
    assert (tmp_path / "again" / "train_soundscapes_labels.csv").read_bytes() == (
        root / "train_soundscapes_labels.csv"
    ).read_bytes()

    demo.generate_demo(tmp_path / "other", seed=1, **SMALL)
    other = tmp_path / "other"
    assert (other / "train.csv").read_bytes() != (root / "train.csv").read_bytes()
    assert sorted(p.name for p in other.glob("test_soundscapes/*")) != sorted(
        p.name for p in root.glob("test_soundscapes/*")
    )
    assert _labels(other) == _labels(root)  # species do not depend on the seed
    assert _info(other)["classes_without_train_audio"] == _info(root)["classes_without_train_audio"]
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
        sonotype = re.fullmatch(r"(\d+)son\d+", s.label)
        assert (s.label.isdigit() or bool(sonotype)) == (s.class_name != "Aves")
        if s.label.isdigit():
            assert int(s.label) == s.inat_taxon_id
        if sonotype:
            assert int(sonotype[1]) == s.inat_taxon_id == 47158 and s.class_name == "Insecta"
    assert len(demo.classes_without_train_audio(species)) == 1
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

    # generate_demo looks _render_soundscape up in birdclef.demo.generate
    monkeypatch.setattr(demo_generate, "_render_soundscape", broken)
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
    assert summary["recordings"] == 36 and summary["speech_recordings"] == 0
    assert summary["classes_without_train_audio"] == 1
    assert summary["labelled_train_soundscapes"] == 2 and summary["labelled_windows"] > 0
    assert summary["sample_submission_rows"] == 3
    assert _info(tmp_path / "demo")["seed"] == 3
    with pytest.raises(ValueError, match="unknown demo settings"):
        demo.demo_stage(tmp_path / "bad", {"seed": 0, "n_speceis": 10})

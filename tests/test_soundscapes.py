"""Tests of birdclef.soundscapes: 2026 file names, train_soundscapes_labels.csv, the site split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdclef.catalog import DataError, read_taxonomy
from birdclef.soundscapes import (
    label_windows,
    parse_soundscape_name,
    parse_time,
    read_soundscape_labels,
    site_split,
    soundscape_labels_stage,
    soundscape_metadata,
    soundscape_score,
)

CLASSES = ["1139490", "47158son01", "grekis", "rutjac1"]
STEMS = [
    "BC2026_Train_0001_S05_20250227_010002",
    "BC2026_Train_0002_S05_20250228_053000",
    "BC2026_Train_0003_S08_20250301_064500",
    "BC2026_Train_0004_S13_20250302_230000",
]


def labels_csv(path, rows):
    """A labels file in the 2026 format, every row twice as Kaggle shipped it."""
    frame = pd.DataFrame(rows, columns=["filename", "start", "end", "primary_label"])
    pd.concat([frame, frame]).to_csv(path, index=False)
    return path


def index_of(stems, windows=12):
    return pd.DataFrame(
        [{"row_id": f"{s}_{5 * (k + 1)}", "soundscape": s, "end_s": 5 * (k + 1)}
         for s in stems for k in range(windows)]
    )


def test_file_names_give_site_date_and_hour():
    assert parse_soundscape_name("BC2026_Test_0001_S05_20250227_010002") == {
        "site": "S05", "date": "2025-02-27", "hour": 1}
    assert parse_soundscape_name("BC2026_Train_0412_S13_20240915_235959")["hour"] == 23
    # 2025 names are anonymous; other names carry nothing.
    for stem in ("H02_20230420_074000", "DV0001", "soundscape_1", "BC2026_Train_1_S5_2025022_0100"):
        assert parse_soundscape_name(stem) is None
    meta = soundscape_metadata(["BC2026_Train_0001_S05_20250227_010002", "DU0001"])
    assert meta["site"].tolist()[0] == "S05" and pd.isna(meta["site"].iloc[1])
    assert meta["hour"].iloc[0] == 1 and pd.isna(meta["hour"].iloc[1])


def test_times():
    assert parse_time("00:00:05", "x") == 5.0
    assert parse_time("00:01:00", "x") == 60.0
    assert parse_time("12.5", "x") == 12.5
    for bad in ("00:00:75", "five", "-1", "1:2:3:4"):
        with pytest.raises(DataError, match="x: cannot read time"):
            parse_time(bad, "x")


def test_labels_are_deduplicated_with_the_union_of_labels(tmp_path):
    path = labels_csv(tmp_path / "labels.csv", [
        [f"{STEMS[0]}.ogg", "00:00:00", "00:00:05", "1139490;47158son01"],
        [f"{STEMS[0]}.ogg", "00:00:00", "00:00:05", "grekis"],  # same window again, another label
        [f"{STEMS[0]}.ogg", "00:00:55", "00:01:00", "rutjac1"],
        [f"{STEMS[2]}.ogg", "00:00:10", "00:00:15", "1139490"],
    ])
    labels, stats = read_soundscape_labels(path, CLASSES, STEMS)
    assert stats == {"rows": 8, "windows": 3, "duplicate_rows": 5, "soundscapes": 2}
    first = labels.set_index("row_id").loc[f"{STEMS[0]}_5"]
    assert list(first["labels"]) == ["1139490", "47158son01", "grekis"]
    assert f"{STEMS[0]}_60" in set(labels["row_id"]) and f"{STEMS[2]}_15" in set(labels["row_id"])
    # Numeric-looking labels stay strings.
    assert all(isinstance(x, str) for names in labels["labels"] for x in names)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([f"{STEMS[0]}.ogg", "00:00:00", "00:00:05", "grekis;nosuch"], r"row 2: label 'nosuch' is not in taxonomy"),
        (["BC2026_Train_0099_S01_20250101_000000.ogg", "00:00:00", "00:00:05", "grekis"],
         r"row 2: file 'BC2026_Train_0099_S01_20250101_000000.ogg' is not in train_soundscapes"),
        ([f"{STEMS[0]}.ogg", "00:00:10", "00:00:05", "grekis"], r"row 2: end '00:00:05' is not after start"),
        ([f"{STEMS[0]}.ogg", "0:0:x", "00:00:05", "grekis"], r"row 2 column start: cannot read time"),
    ],
)
def test_bad_labels_name_the_file_and_row(tmp_path, row, message):
    path = labels_csv(tmp_path / "train_soundscapes_labels.csv", [row])
    with pytest.raises(DataError, match=message) as error:
        read_soundscape_labels(path, CLASSES, STEMS)
    assert "train_soundscapes_labels.csv" in str(error.value)


def test_missing_file_or_column(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_soundscape_labels(tmp_path / "nope.csv", CLASSES, STEMS)
    (tmp_path / "cols.csv").write_text("filename,start,end\nx.ogg,00:00:00,00:00:05\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['primary_label'\]"):
        read_soundscape_labels(tmp_path / "cols.csv", CLASSES, STEMS)


def test_site_split_holds_out_whole_sites():
    split = site_split(STEMS, 0.5, seed=0)
    by_site = {}
    for stem, side in split.items():
        by_site.setdefault(parse_soundscape_name(stem)["site"], set()).add(side)
    assert all(len(sides) == 1 for sides in by_site.values())  # a site never straddles the split
    assert set(split.values()) == {"train", "validation"}
    assert site_split(STEMS, 0.5, seed=0) == split  # deterministic
    explicit = site_split(STEMS, 0.5, validation_sites=["S08"])
    assert [s for s, v in explicit.items() if v == "validation"] == [STEMS[2]]
    # Names without a site are their own group; share 1 holds out everything, 0 nothing.
    anonymous = ["DU0000", "DU0001", "DU0002"]
    assert sum(v == "validation" for v in site_split(anonymous, 0.34).values()) == 1
    assert set(site_split(anonymous, 1.0).values()) == {"validation"}
    assert set(site_split(anonymous, 0.0).values()) == {"train"}
    with pytest.raises(ValueError, match=r"validation_sites names \['S99'\]"):
        site_split(STEMS, 0.5, validation_sites=["S99"])


def test_every_window_of_a_labelled_soundscape_is_labelled(tmp_path):
    path = labels_csv(tmp_path / "labels.csv", [
        [f"{STEMS[0]}.ogg", "00:00:00", "00:00:05", "grekis;rutjac1"],
        [f"{STEMS[2]}.ogg", "00:00:10", "00:00:15", "1139490"],
    ])
    labels, _ = read_soundscape_labels(path, CLASSES, STEMS)
    split = {STEMS[0]: "train", STEMS[2]: "validation"}
    table = label_windows(labels, index_of(STEMS), CLASSES, split)
    assert len(table) == 24  # 12 windows of each labelled soundscape; the unlabelled ones are absent
    assert set(table["soundscape"]) == {STEMS[0], STEMS[2]}
    positive = table.set_index("row_id")[CLASSES]
    assert positive.loc[f"{STEMS[0]}_5"].tolist() == [0, 0, 1, 1]
    assert positive.loc[f"{STEMS[2]}_15"].tolist() == [1, 0, 0, 0]
    assert positive.to_numpy().sum() == 3  # the other windows: no call
    assert table.set_index("row_id").loc[f"{STEMS[2]}_15", "split"] == "validation"
    assert table["site"].tolist()[0] == "S05"
    # A window past the file's end is an error naming the soundscape.
    short = index_of(STEMS, windows=2)
    with pytest.raises(DataError, match="lies outside the soundscape's audio"):
        label_windows(labels, short, CLASSES, split)


def test_soundscape_score_uses_held_out_windows_only():
    table = pd.DataFrame({"row_id": ["a", "b", "c", "d"], "split": ["validation"] * 3 + ["train"],
                          "x": [1.0, 0.0, 0.0, 1.0], "y": [0.0, 1.0, 0.0, 0.0]})
    predictions = pd.DataFrame({"row_id": ["a", "b", "c", "d"], "x": [0.9, 0.1, 0.2, 0.0],
                                "y": [0.1, 0.8, 0.3, 0.9]})
    score, scored = soundscape_score(predictions, table, ["x", "y"])
    assert (score, scored) == (1.0, 3)
    assert soundscape_score(predictions, None, ["x", "y"]) == (None, 0)


def test_stage_writes_windows_and_manifest(tmp_path):
    pd.DataFrame({"primary_label": CLASSES, "scientific_name": list("abcd")}).to_csv(
        tmp_path / "taxonomy.csv", index=False)
    assert read_taxonomy(tmp_path / "taxonomy.csv") == CLASSES  # numeric ids read as strings
    path = labels_csv(tmp_path / "labels.csv", [
        [f"{STEMS[0]}.ogg", "00:00:00", "00:00:05", "grekis"],
        [f"{STEMS[2]}.ogg", "00:00:05", "00:00:10", "1139490"],
        [f"{STEMS[3]}.ogg", "00:00:05", "00:00:10", "rutjac1"],
    ])
    index_of(STEMS).to_parquet(tmp_path / "index.parquet")
    stats = soundscape_labels_stage(
        str(path), str(tmp_path / "taxonomy.csv"), str(tmp_path / "index.parquet"),
        str(tmp_path / "out" / "labels.parquet"), str(tmp_path / "out" / "manifest.json"),
        {"validation_share": 0.34, "validation_sites": None, "seed": 0}, "tag", {})
    table = pd.read_parquet(tmp_path / "out" / "labels.parquet")
    assert stats["labelled_windows"] == len(table) == 36
    assert stats["validation_windows"] == 12 and stats["train_windows"] == 24
    assert stats["duplicate_rows"] == 3 and stats["windows_without_call"] == 33
    assert np.isin(table["split"], ["train", "validation"]).all()


def test_window_positions_follow_the_cache_and_name_a_missing_window():
    from birdclef.soundscapes import window_positions

    index = index_of(STEMS[:2], windows=3)
    rows = window_positions(index, [f"{STEMS[1]}_5", f"{STEMS[0]}_15"], "cache.parquet")
    assert rows.tolist() == [3, 2]
    with pytest.raises(ValueError, match=r"cache.parquet: 1 soundscape windows are not in this cache, e.g. 'x_5'"):
        window_positions(index, ["x_5"], "cache.parquet")

"""The teacher stage: class mapping, 5 s windows from the teacher's own input length, shards and gather."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from teacher_standin import build_perch_standin, write_perch_labels

from birdclef.pseudo import label_source, make_pseudo_labels, teacher_probabilities
from birdclef.runtime.audio import write_ogg
from birdclef.runtime.teacher.load import load_teacher
from birdclef.runtime.teacher.mapping import binomial, map_taxonomy, mapped_logits, mapping_counts
from birdclef.runtime.teacher.windows import (
    crop_offsets,
    file_windows,
    teacher_crops,
    window_outputs,
)
from birdclef.teacher.stage import teacher_shard_stage, teacher_stage

TAXONOMY = pd.DataFrame(
    {
        "primary_label": ["turmer", "1139490", "47158son01", "parmaj"],
        "scientific_name": ["Turdus merula", "Hyla minuta", "Insecta sp.", "Parus major"],
    }
)
TEACHER_NAMES = ["Turdus merula merula", "Turdus philomelos", "Parus major", "Turdus merula", "Hyla faber"]


def test_names_map_by_binomial_with_optional_genus_fallback():
    assert binomial("Turdus merula merula") == "turdus merula" and binomial("Insecta") == ""
    mapping = map_taxonomy(TAXONOMY, TEACHER_NAMES, genus_fallback=False)
    assert mapping["status"].tolist() == ["matched", "unmatched", "unmatched", "matched"]
    assert mapping["teacher_indices"].map(list).tolist() == [[0, 3], [], [], [2]]
    assert mapping_counts(mapping) == {"matched": 2, "genus": 0, "unmatched": 2}
    fallback = map_taxonomy(TAXONOMY, TEACHER_NAMES, genus_fallback=True)
    # Hyla minuta is missing, its genus is not; "Insecta sp." has no genus the teacher knows
    assert fallback["status"].tolist() == ["matched", "genus", "unmatched", "matched"]
    assert list(fallback["teacher_names"][1]) == ["Hyla faber"]
    logits = np.array([[1.0, 5.0, 2.0, 3.0, -1.0]], dtype=np.float32)
    mapped = mapped_logits(logits, fallback)
    np.testing.assert_array_equal(mapped[:, [0, 1, 3]], [[3.0, -1.0, 2.0]])  # max over merula's two
    assert np.isnan(mapped[0, 2])


def test_five_second_windows_read_as_crops_of_the_teachers_length():
    assert crop_offsets(240_000, 144_000) == [0, 96_000]  # BirdNET: 0-3 s and 2-5 s at 48 kHz
    assert crop_offsets(160_000, 160_000) == [0]  # Perch: the window itself
    assert crop_offsets(100, 160) == [0]
    windows = np.arange(2 * 10, dtype=np.float32).reshape(2, 10)
    crops = teacher_crops(windows, 6)
    np.testing.assert_array_equal(crops[1], windows[0, 4:10])
    np.testing.assert_array_equal(crops[2], windows[1, 0:6])
    padded = teacher_crops(windows, 12)
    np.testing.assert_array_equal(padded[0], [*windows[0], 0, 0])

    class Sums:  # a stand-in teacher: embedding = [sum, first sample], logits = [sum, -sum]
        window_samples = 6

        def infer(self, waves):
            total = waves.sum(axis=1, keepdims=True)
            return np.hstack([total, waves[:, :1]]), np.hstack([total, -total])

    embeddings, logits = window_outputs(Sums(), windows)
    first, second = windows[0, :6].sum(), windows[0, 4:].sum()
    np.testing.assert_allclose(embeddings[0], [(first + second) / 2, (windows[0, 0] + windows[0, 4]) / 2])
    np.testing.assert_allclose(logits[0], [max(first, second), max(-first, -second)])


@pytest.fixture(scope="module")
def perch(tmp_path_factory):
    """A Perch-shaped stand-in model whose labels include three of the taxonomy's species."""
    root = tmp_path_factory.mktemp("perch")
    names = [f"Genus{k} species{k}" for k in range(14_795)]
    names[7], names[11], names[13] = "Turdus merula", "Parus major", "Hyla faber"
    build_perch_standin(root / "perch.onnx")
    write_perch_labels(root / "labels.csv", names)
    return {"model": "perch", "model_path": str(root / "perch.onnx"), "labels_path": str(root / "labels.csv"),
            "runtime": "openvino", "precision_hint": "f32", "genus_fallback": False, "batch_windows": 4}


def write_inputs(root, tmp_seconds=(12.0, 3.0, 40.0)):
    """A VAD-style catalog of three recordings (one undecodable), two soundscapes and a taxonomy."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    rows = []
    for k, seconds in enumerate(tmp_seconds):
        path = root / "audio" / f"r{k}.ogg"
        write_ogg(path, 0.1 * rng.standard_normal(int(seconds * 32000)).astype(np.float32), 32000)
        rows.append({"filename": f"turmer/r{k}.ogg", "primary_label": "turmer", "audio_path": str(path),
                     "vad_dropped": False})
    (root / "audio" / "bad.ogg").write_bytes(b"not audio")
    rows.append({"filename": "parmaj/bad.ogg", "primary_label": "parmaj",
                 "audio_path": str(root / "audio" / "bad.ogg"), "vad_dropped": False})
    rows.append({"filename": "parmaj/dropped.ogg", "primary_label": "parmaj",
                 "audio_path": str(root / "missing.ogg"), "vad_dropped": True})
    pd.DataFrame(rows).to_parquet(root / "catalog.parquet")
    (root / "soundscapes").mkdir()
    for name in ("S_b", "S_a"):
        write_ogg(root / "soundscapes" / f"{name}.ogg",
                  0.1 * rng.standard_normal(60 * 32000).astype(np.float32), 32000)
    TAXONOMY.to_csv(root / "taxonomy.csv", index=False)


WINDOWS = {"window_seconds": 5.0, "max_seconds": 30.0, "rare_threshold": 0, "rare_max_seconds": None}


def test_shards_gather_to_one_artifact_whatever_the_shard_count(perch, tmp_path, caplog):
    write_inputs(tmp_path)
    args = dict(catalog_path=str(tmp_path / "catalog.parquet"), soundscape_dir=str(tmp_path / "soundscapes"),
                taxonomy_csv=str(tmp_path / "taxonomy.csv"), settings=perch, mel_settings=WINDOWS, threads=1)
    results = {}
    for shards in (1, 3):
        dirs = [str(tmp_path / f"n{shards}" / f"shard{i}") for i in range(shards)]
        for i, folder in enumerate(dirs):
            stats = teacher_shard_stage(out_dir=folder, shard=i, shards=shards, **args)
            assert stats["shard"] == i and stats["runtime"] == "openvino"
        out = {key: str(tmp_path / f"n{shards}" / name) for key, name in (
            ("embeddings", "embeddings.npy"), ("logits", "logits.npy"), ("index", "index.parquet"),
            ("mapping", "mapping.parquet"), ("manifest", "manifest.json"))}
        with caplog.at_level(logging.INFO):
            headline = teacher_stage(dirs, out, {**perch, **WINDOWS}, "tag", {"vad": "v"})
        results[shards] = out
        # 12 s -> 3 windows, 3 s -> 1, 40 s cut at max_seconds 30 -> 6; two 60 s soundscapes -> 24
        assert headline["recording_windows"] == 10 and headline["soundscape_windows"] == 24
        assert headline["bad_audio"] == 1 and "bad.ogg" in headline["bad_audio_files"][0]["path"]
        assert headline["classes"] == {"matched": 2, "genus": 0, "unmatched": 2}
        assert headline["embedding_dim"] == 1536 and headline["shards"] == shards
    index = pd.read_parquet(results[1]["index"])
    assert index["row_id"].tolist()[:4] == ["turmer/r0.ogg_5", "turmer/r0.ogg_10", "turmer/r0.ogg_15",
                                           "turmer/r1.ogg_5"]
    assert index["row_id"].tolist()[10:12] == ["S_a_5", "S_a_10"] and index["row_id"].iloc[-1] == "S_b_60"
    assert index.equals(pd.read_parquet(results[3]["index"]))
    for key in ("embeddings", "logits"):
        np.testing.assert_array_equal(np.load(results[1][key]), np.load(results[3][key]))
    logits = np.load(results[1]["logits"])
    assert logits.shape == (34, 4) and np.isnan(logits[:, [1, 2]]).all() and np.isfinite(logits[:, [0, 3]]).all()
    # the cached values are the teacher's own, window for window
    teacher = load_teacher(perch, threads=1)
    waves = file_windows(tmp_path / "soundscapes" / "S_a.ogg", 32000, 5.0)
    embedding, raw = window_outputs(teacher, waves[:2])
    np.testing.assert_allclose(np.load(results[1]["embeddings"])[10:12], embedding, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(logits[10:12, 0], raw[:, 7], rtol=1e-5)
    manifest = json.loads((tmp_path / "n1" / "manifest.json").read_text())
    assert {m["status"] for m in manifest["mapping"]} == {"matched", "unmatched"}
    assert manifest["headline"]["logit_distillation_possible"] is True


def test_no_mapped_class_warns_and_still_caches_embeddings(perch, tmp_path, caplog):
    write_inputs(tmp_path, tmp_seconds=(6.0,))
    TAXONOMY.assign(scientific_name=["Aa bb", "Cc dd", "Ee ff", "Gg hh"]).to_csv(tmp_path / "taxonomy.csv",
                                                                               index=False)
    out_dir = tmp_path / "shard0"
    with caplog.at_level(logging.WARNING):
        teacher_shard_stage(str(tmp_path / "catalog.parquet"), str(tmp_path / "soundscapes"),
                            str(tmp_path / "taxonomy.csv"), str(out_dir), perch, WINDOWS, 0, 1)
    assert "no taxonomy class maps onto the teacher's classes" in caplog.text
    assert np.isnan(np.load(out_dir / "logits.npy")).all()
    assert np.isfinite(np.load(out_dir / "embeddings.npy").astype(np.float32)).all()


def test_a_failed_shard_leaves_nothing_behind(perch, tmp_path):
    write_inputs(tmp_path)
    out_dir = tmp_path / "shard0"
    with pytest.raises(Exception, match="bad.ogg"):
        teacher_shard_stage(str(tmp_path / "catalog.parquet"), str(tmp_path / "soundscapes"),
                            str(tmp_path / "taxonomy.csv"), str(out_dir), perch, WINDOWS, 0, 1,
                            on_bad_audio="fail")
    assert not out_dir.exists() and not list(tmp_path.glob(".shard0*"))
    with pytest.raises(ValueError, match="teacher shard 2 is not in 0..1"):
        teacher_shard_stage(str(tmp_path / "catalog.parquet"), str(tmp_path / "soundscapes"),
                            str(tmp_path / "taxonomy.csv"), str(out_dir), perch, WINDOWS, 2, 2)


def test_a_teacher_pseudo_round_counts_the_classes_the_teacher_labels(caplog):
    """The round's stats count the classes the teacher labels; with none (no class maps onto the
    teacher) it warns, and the students label every window, as a students round would."""
    students = pd.DataFrame({"row_id": ["S_5", "S_10"], "soundscape": ["S", "S"], "end_s": [5, 10],
                             "x": [0.9, 0.2], "y": [0.3, 0.6], "seen_in_training": [False, False]})
    index = pd.DataFrame({"source": ["soundscape", "soundscape"], "row_id": ["S_5", "S_10"]})
    settings = {"method": "power", "power": 1.0, "source": "teacher"}
    one = np.array([[4.0, np.nan], [-4.0, np.nan]], dtype=np.float32)
    _, stats = make_pseudo_labels([students], ["x", "y"], settings, teacher=(one, index))
    assert stats["source"] == "teacher" and stats["teacher_classes"] == 1
    none = np.full((2, 2), np.nan, dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="birdclef.pseudo"):
        labels, stats = make_pseudo_labels([students], ["x", "y"], settings, teacher=(none, index))
    assert stats["teacher_classes"] == 0
    assert "the teacher knows none of the 2 classes" in caplog.text
    by_students, plain = make_pseudo_labels([students], ["x", "y"], {**settings, "source": "students"})
    pd.testing.assert_frame_equal(labels, by_students)
    assert plain["teacher_classes"] is None


def test_pseudo_rounds_label_from_the_teacher_or_a_blend():
    students = np.array([[0.2, 0.9], [0.6, 0.1], [0.4, 0.5]], dtype=np.float32)
    teacher = np.array([[0.8, np.nan], [0.0, np.nan], [1.0, np.nan]], dtype=np.float32)
    assert label_source(students, teacher, {"source": "students"}) is students
    np.testing.assert_allclose(label_source(students, teacher, {"source": "teacher"}),
                               [[0.8, 0.9], [0.0, 0.1], [1.0, 0.5]])  # unknown class: the students'
    np.testing.assert_allclose(label_source(students, teacher, {"source": "blend", "teacher_weight": 0.25}),
                               [[0.35, 0.9], [0.45, 0.1], [0.55, 0.5]])
    ranked = label_source(students, teacher, {"source": "blend", "teacher_weight": 0.5, "blend": "rank"})
    # class 0: student ranks 1/3, 1, 2/3 and teacher ranks 2/3, 1/3, 1, averaged; class 1 keeps the students'
    np.testing.assert_allclose(ranked[:, 0], [0.5, 2 / 3, 5 / 6], rtol=1e-6)
    np.testing.assert_allclose(ranked[:, 1], [1.0, 1 / 3, 2 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="no teacher predictions were given"):
        label_source(students, None, {"source": "teacher"})
    with pytest.raises(ValueError, match="source must be one of"):
        label_source(students, teacher, {"source": "oracle"})
    index = pd.DataFrame({"source": ["recording", "soundscape", "soundscape"], "row_id": ["r_5", "S_5", "S_10"]})
    logits = np.array([[9.0, 9.0], [0.0, np.nan], [2.0, np.nan]], dtype=np.float32)
    probs = teacher_probabilities(logits, index, ["S_10", "S_5"])
    np.testing.assert_allclose(probs[:, 0], [1 / (1 + np.exp(-2.0)), 0.5], rtol=1e-6)
    assert np.isnan(probs[:, 1]).all()
    with pytest.raises(ValueError, match="has no window"):
        teacher_probabilities(logits, index, ["S_15"])

"""Longer windows (``train.backbones[].context_seconds``): a model that sees 10 or 20 s and predicts 5 s rows.

The model joins each run of m consecutive row windows and spreads its frame-wise output back to
the rows (`SEDModel.forward_rows`); training crops m windows and joins soundscape windows with
their neighbours on the same grid (`context_chunks`); every caller that predicts rows pads a
file's windows to whole runs (`chunk_positions`): validation, the export's calibration, gate and
soundscape windows, and Kaggle inference, where the padding rows are dropped.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_export import CLASSES, MEL
from test_inference import calibration_windows, calls
from test_plan import load_config

from birdclef.common.plan import make_plan
from birdclef.common.plan_rounds import context_windows
from birdclef.export import export_ensemble
from birdclef.export.windows import calibration_windows as export_calibration
from birdclef.export.windows import gate_windows
from birdclef.runtime.audio import write_ogg
from birdclef.runtime.features import chunk_positions
from birdclef.runtime.inference import load_bundle, predict_soundscapes, soundscape_windows
from birdclef.train.data import TrainWindows, context_chunks
from birdclef.train.model import (
    InferenceWrapper,
    SEDModel,
    build_model,
    join_rows,
    load_model,
    save_checkpoint,
)
from birdclef.train.settings import TrainSettings
from birdclef.train.validation import ValidationWindows, predict_windows


def test_chunk_positions_pad_each_run_from_its_own_start():
    names = np.array(["a", "a", "a", "b", "b", "c", "c", "c", "c", "c"])
    positions, keep = chunk_positions(names, 2)
    assert positions.tolist() == [0, 1, 2, 0, 3, 4, 5, 6, 7, 8, 9, 5]
    assert keep.tolist() == [True] * 3 + [False] + [True] * 2 + [True] * 5 + [False]
    assert (names[positions][keep] == names).all()
    positions, keep = chunk_positions(names, 4)
    assert len(positions) == 4 + 4 + 8 and keep.sum() == len(names)
    assert positions[:4].tolist() == [0, 1, 2, 0] and positions[4:8].tolist() == [3, 4, 3, 4]
    one, every = chunk_positions(names, 1)
    assert one.tolist() == list(range(10)) and every.all()
    empty, none = chunk_positions(np.array([], dtype=str), 2)
    assert len(empty) == 0 and len(none) == 0


def test_context_chunks_follow_the_inference_grid():
    # soundscape s1 has windows 0..4 (listed out of order), s2 windows 0..1 and 3 (2 missing)
    names = np.array(["s1", "s1", "s1", "s1", "s1", "s2", "s2", "s2"])
    positions = np.array([1, 0, 2, 3, 4, 0, 1, 3])
    chunks = context_chunks(names, positions, 2)
    assert chunks.tolist() == [[1, 0], [1, 0], [2, 3], [2, 3], [4, 4], [5, 6], [5, 6], [7, 7]]
    # window 3 of s2: its chunk partner (window 2) is absent, so it is repeated
    four = context_chunks(names, positions, 4)
    assert four[0].tolist() == [1, 0, 2, 3] and four[4].tolist() == [4, 4, 4, 4]
    assert four[7].tolist() == [5, 6, 7, 7]


@pytest.mark.parametrize("m", [2, 4])
def test_forward_rows_spreads_a_joined_chunk_back_to_its_rows(m):
    torch.manual_seed(0)
    model = SEDModel("test_efficientnet", 3, context_windows=m).eval()
    rows = torch.randn(2 * m, 1, 32, 313)
    with torch.no_grad():
        out = model.forward_rows(rows)
        assert out.shape == (2 * m, 3)
        for chunk in range(2):
            joined = torch.cat(list(rows[chunk * m:(chunk + 1) * m]), dim=-1)[None]
            assert joined.shape == (1, 1, 32, m * 313)
            features = model._features(joined)
            segments = model.head.forward_segments(features, m)[0]
            torch.testing.assert_close(out[chunk * m:(chunk + 1) * m], segments)
            # one segment is the clip output the model trains on
            torch.testing.assert_close(model.head.forward_segments(features, 1)[:, 0], model(joined)[0])
        # a row's prediction depends on its neighbours in the chunk (that is the context)
        changed = rows.clone()
        changed[1] += 10 * torch.randn_like(changed[1])
        assert not torch.allclose(model.forward_rows(changed)[0], out[0])
        torch.testing.assert_close(model.forward_rows(changed)[m:], out[m:])
    with pytest.raises(RuntimeError):
        model.forward_rows(rows[: m + 1])


def test_one_window_models_are_unchanged():
    torch.manual_seed(1)
    model = SEDModel("test_efficientnet", 3).eval()
    assert model.context_windows == 1
    rows = torch.randn(3, 1, 32, 313)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_rows(rows), model(rows)[0])
    with pytest.raises(ValueError, match="context_windows is 3"):
        SEDModel("test_efficientnet", 3, context_windows=3)


def test_context_seconds_is_checked_when_the_plan_is_made():
    assert context_windows({"name": "x"}, 5.0) == 1
    assert context_windows({"name": "x", "context_seconds": 10}, 5.0) == 2
    assert context_windows({"name": "x", "context_seconds": 20.0}, 5.0) == 4
    config = load_config({"train": {"backbones": [{"name": "test_efficientnet", "context_seconds": 15}]}})
    with pytest.raises(ValueError, match=r"'test_efficientnet' has context_seconds 15; expected one of \[5, 10, 20\]"):
        make_plan(config, file_exists=lambda path: True, dir_exists=lambda path: True)
    # the key is hashed into the train tags only when it is set
    plain = make_plan(load_config(), file_exists=lambda path: True, dir_exists=lambda path: True)
    config = load_config()
    config["train"]["backbones"] = [{**b, "context_seconds": 10} for b in config["train"]["backbones"]]
    longer = make_plan(config, file_exists=lambda path: True, dir_exists=lambda path: True)
    assert plain.mels_tag == longer.mels_tag and plain.ensemble_tag != longer.ensemble_tag


def test_training_examples_span_the_context():
    rng = np.random.default_rng(0)
    n_mels, window = 8, 10
    mels = rng.normal(size=(100, n_mels)).astype(np.float16)
    targets = np.eye(2, dtype=np.float32)[[0, 1]]
    # labelled windows: soundscape s (windows 0..3), listed in order
    labelled = rng.normal(size=(4, n_mels, window)).astype(np.float32)
    labels = np.zeros((4, 2), np.float32)
    labels[1, 1] = 1.0
    labels[2, 0] = 0.5
    chunks = context_chunks(np.array(["s"] * 4), np.arange(4), 2)
    settings = TrainSettings(spec_augment=False, labelled_ratio=0.5)
    dataset = TrainWindows(mels, np.array([0, 50]), np.array([50, 15]), targets, window, 50, settings,
                           labelled_mels=labelled, labelled_targets=labels, context_windows=2,
                           labelled_chunks=chunks)
    mel, target, _ = dataset[(0, 0, 3)]
    assert mel.shape == (1, n_mels, 2 * window) and target.tolist() == [1.0, 0.0]
    mel, _, _ = dataset[(0, 1, 3)]  # 15 frames: tiled to 20
    np.testing.assert_array_equal(mel[0, :, 15:].numpy(), mels[50:55].astype(np.float32).T)
    mel, target, weight = dataset[(2, 1, 7)]  # window 1 -> chunk (0, 1)
    np.testing.assert_array_equal(mel[0].numpy(), np.concatenate([labelled[0], labelled[1]], axis=1))
    assert target.tolist() == [0.0, 1.0]
    mel, target, _ = dataset[(2, 2, 7)]  # window 2 -> chunk (2, 3)
    np.testing.assert_array_equal(mel[0].numpy(), np.concatenate([labelled[2], labelled[3]], axis=1))
    assert target.tolist() == [0.5, 0.0]
    with pytest.raises(ValueError, match="needs the chunks"):
        TrainWindows(mels, np.array([0]), np.array([50]), targets[:1], window, 50, settings,
                     labelled_mels=labelled, labelled_targets=labels, context_windows=2)


def test_validation_windows_come_in_whole_runs():
    mels = np.zeros((200, 8), np.float16)
    windows = ValidationWindows(mels, np.array([0, 100]), np.array([100, 25]), 10, 100, context_windows=4)
    assert np.bincount(windows.recording).tolist() == [12, 4]  # 10 -> 12, 3 -> 4
    model = SEDModel("test_efficientnet", 2, context_windows=4).eval()
    with pytest.raises(ValueError, match="expected a multiple"):
        predict_windows(model, lambda idx: np.zeros((len(idx), 8, 10), np.float32), 6, 8, torch.device("cpu"))


def test_export_draws_whole_runs_for_calibration_and_the_gate():
    index = pd.DataFrame({"filename": ["a.ogg", "b.ogg"], "primary_label": "sp01",
                          "secondary_labels": [[], []], "offset": [0, 1000], "frames": [1000, 400]})
    mels = np.random.default_rng(0).normal(size=(1400, 32)).astype(np.float16)
    (plain,) = export_calibration([mels], [index], [313], 8, np.random.default_rng(1))
    assert plain.shape == (8, 1, 32, 313)
    long = pd.DataFrame({"filename": ["a.ogg"], "offset": [0], "frames": [1400]})
    (runs,) = export_calibration([mels], [long], [313], 3, np.random.default_rng(1), block=4)
    assert runs.shape == (4, 1, 32, 313)  # 3 windows -> one whole run of 4
    # window j of a run starts j windows after the run: consecutive windows of one recording
    first = [s for s in range(1400 - 313) if np.array_equal(runs[0, 0], mels[s:s + 313].T.astype(np.float32))]
    assert len(first) == 1
    for j in range(4):
        np.testing.assert_array_equal(runs[j, 0], mels[first[0] + 313 * j:first[0] + 313 * (j + 1)].T)
    folds = pd.DataFrame({"filename": ["a.ogg", "b.ogg"], "fold": [0, 1]})
    rows, starts = gate_windows([index], folds, [MEL], 5.0)
    assert np.bincount(rows[0]).tolist() == [3, 1]
    rows, starts = gate_windows([index], folds, [MEL], 5.0, multiple=2)
    assert np.bincount(rows[0]).tolist() == [4, 2] and starts[0].tolist() == [0, 313, 625, 938, 0, 313]
    rows, starts = gate_windows([index], folds, [MEL], 5.0, max_windows=4, multiple=2)
    assert rows[0].tolist() == [0, 0, 1, 1] and starts[0].tolist() == [0, 313, 0, 313]


def member(path, seed: int, context: int, calibration: np.ndarray) -> None:
    """A tiny checkpoint joining `context` windows, BN statistics from `calibration`."""
    torch.manual_seed(seed)
    spec = {"backbone": "test_efficientnet", "n_classes": len(CLASSES), "pretrained": False,
            "context_windows": context}
    model = build_model(spec)
    model.train()
    with torch.no_grad():
        model(join_rows(torch.from_numpy(calibration), context))
        model.head.cla.weight.mul_(20.0)
    model.eval()
    save_checkpoint(path, model, spec, classes=CLASSES)


def test_a_context_member_is_exported_and_predicts_every_row(tmp_path):
    calibration = calibration_windows(MEL)
    members = []
    for index, (context, weight) in enumerate([(1, 0.5), (2, 0.5)]):
        path = tmp_path / "train" / f"m{index}" / "best.pt"
        member(path, index, context, calibration)
        members.append({"name": f"m{index}", "checkpoint": str(path), "weight": weight, "mel_group": 0})
    ensemble = {"classes": CLASSES, "window_seconds": 5.0, "mel_groups": [{"tag": "mels-a", **MEL}],
                "members": members}
    report = export_ensemble(ensemble, tmp_path / "f32", calibration, precision="f32",
                             eval_mels=calibration, eval_targets=np.eye(4, dtype=np.float32)[np.arange(16) % 4])
    assert [m["context_windows"] for m in report["members"]] == [1, 2]
    export_ensemble(ensemble, tmp_path / "int8", calibration, precision="int8", calibration_size=16)
    bundle_json = json.loads((tmp_path / "int8" / "bundle.json").read_text())
    assert [m["context_windows"] for m in bundle_json["members"]] == [1, 2]

    odd, whole = tmp_path / "odd.ogg", tmp_path / "whole.ogg"
    write_ogg(odd, calls(63.0, 32000, 1), 32000)
    write_ogg(whole, calls(60.0, 32000, 2), 32000)
    bundle = load_bundle(tmp_path / "f32", threads=2)
    assert bundle.row_multiple == 2
    item = soundscape_windows(odd, bundle)
    assert len(item.row_ids) == 13 and item.mels[0].shape[0] == 14  # padded to whole runs
    frame = predict_soundscapes([odd, whole], bundle, progress=False)
    assert len(frame) == 25 and frame["row_id"].iloc[12] == "odd_65"
    expected = []
    for path in (odd, whole):
        windows = soundscape_windows(path, bundle)
        probs = 0.0
        for entry in members:
            model, _ = load_model(entry["checkpoint"])
            with torch.no_grad():
                probs = probs + 0.5 * InferenceWrapper(model).eval()(torch.from_numpy(windows.mels[0])).numpy()
        expected.append(probs[: len(windows.row_ids)])
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), np.concatenate(expected), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="join runs of 2"):
        bundle.predict(item.mels[0][:13])
    int8 = predict_soundscapes([odd, whole], load_bundle(tmp_path / "int8", threads=2), progress=False)
    assert int8["row_id"].tolist() == frame["row_id"].tolist()
    assert np.isfinite(int8[CLASSES].to_numpy()).all()
